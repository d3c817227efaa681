"""Sequence-to-sequence data: DialogSum and CSL (summarisation), Tatoeba zh-en and Multi30k en-de (translation)."""

from __future__ import annotations

import ast
import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from lmlab.datasets.root import dataset_path
from lmlab.datasets.text import _check
from lmlab.errors import DataError


@dataclass
class Dialogue:
    fname: str
    dialogue: str
    summary: str
    topic: str


def dialogsum(split: str = "train", data_root: str | Path | None = None) -> list[Dialogue]:
    """DialogSum. The train file writes each row as a Python dict literal (single quotes): it is
    parsed with `ast.literal_eval`, which accepts literals only and never runs code."""
    path = dataset_path("dialogsum", f"dialogsum.{_check(split, ('train', 'dev'))}.jsonl", data_root)
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                try:
                    row = ast.literal_eval(line.strip())
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    raise DataError(f"{path}:{lineno}: neither JSON nor a Python dict literal") from None
            if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("dialogue", "summary")):
                raise DataError(f"{path}:{lineno}: expected an object with string 'dialogue' and 'summary'")
            rows.append(Dialogue(str(row.get("fname", "")), row["dialogue"], row["summary"], str(row.get("topic", ""))))
    return rows


@dataclass
class TitledAbstract:
    abstract: str
    title: str


def csl_ts(split: str = "dev", data_root: str | Path | None = None) -> list[TitledAbstract]:
    """CSL title summarisation: TSV without header, ``to title<TAB>abstract<TAB>title``."""
    path = dataset_path("csl-ts", f"{_check(split, ('dev',))}.tsv", data_root)
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 3:
            raise DataError(f"{path}:{lineno}: {len(cols)} fields, expected 3 (prefix, abstract, title)")
        rows.append(TitledAbstract(cols[1], cols[2]))
    return rows


@dataclass
class TranslationPair:
    src: str
    tgt: str


def tatoeba(split: str = "train", data_root: str | Path | None = None) -> list[TranslationPair]:
    """Tatoeba English → Chinese pairs (src English, tgt Chinese); attribution column dropped."""
    path = dataset_path("tatoeba-cmn-eng", f"{_check(split, ('train', 'dev'))}.tsv", data_root)
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 2:
            raise DataError(f"{path}:{lineno}: expected english<TAB>chinese[<TAB>attribution]")
        rows.append(TranslationPair(cols[0], cols[1]))
    return rows


def multi30k(split: str = "train", data_root: str | Path | None = None) -> list[TranslationPair]:
    """Multi30k English → German, line-aligned gzip files; a line-count mismatch is an error."""
    split = _check(split, ("train", "val"))
    en_path = dataset_path("multi30k", f"{split}.en.gz", data_root)
    de_path = dataset_path("multi30k", f"{split}.de.gz", data_root)
    en = gzip.decompress(en_path.read_bytes()).decode("utf-8").rstrip("\n").split("\n")
    de = gzip.decompress(de_path.read_bytes()).decode("utf-8").rstrip("\n").split("\n")
    if len(en) != len(de):
        raise DataError(f"{en_path} has {len(en)} lines but {de_path} has {len(de)}; the files must be line-aligned")
    return [TranslationPair(a.strip(), b.strip()) for a, b in zip(en, de)]
