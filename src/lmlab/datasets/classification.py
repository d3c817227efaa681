"""Sentiment classification: SST-2 (English) and ChnSentiCorp (Chinese), as typed rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmlab.datasets.root import dataset_path
from lmlab.datasets.text import _check
from lmlab.errors import DataError


@dataclass
class LabeledText:
    text: str
    label: int


def _read_tsv(path: Path, text_col: str, label_col: str) -> list[LabeledText]:
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        if text_col not in header or label_col not in header:
            raise DataError(f"{path}:1: header {header} lacks {text_col!r} or {label_col!r}")
        ti, li = header.index(text_col), header.index(label_col)
        for lineno, line in enumerate(f, 2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            cols = line.split("\t")
            if len(cols) != len(header):
                raise DataError(f"{path}:{lineno}: {len(cols)} tab-separated fields, expected {len(header)}")
            try:
                label = int(cols[li])
            except ValueError:
                raise DataError(f"{path}:{lineno}: label {cols[li]!r} is not an integer") from None
            rows.append(LabeledText(cols[ti].strip(), label))
    return rows


def sst2(split: str = "train", data_root: str | Path | None = None) -> list[LabeledText]:
    """SST-2 sentences (PTB-tokenised; the trailing space before the tab is stripped), label 0/1."""
    return _read_tsv(dataset_path("sst2", f"{_check(split, ('train', 'dev'))}.tsv", data_root), "sentence", "label")


def chnsenticorp(split: str = "train", data_root: str | Path | None = None) -> list[LabeledText]:
    """ChnSentiCorp reviews, label 0/1. Note: ~338 dev texts also occur in train."""
    return _read_tsv(dataset_path("chnsenticorp", f"{_check(split, ('train', 'dev'))}.tsv", data_root),
                     "text_a", "label")
