"""Chinese word-vector benchmarks: CA8 analogies and the 240-pair word similarity set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmlab.datasets.root import dataset_path
from lmlab.errors import DataError


@dataclass
class Analogy:
    section: str
    a: str
    b: str
    c: str
    d: str  # a : b :: c : d


def ca8(data_root: str | Path | None = None) -> list[Analogy]:
    """CA8 in word2vec's questions-words format (``: section`` lines, then ``a b c d``)."""
    path = dataset_path("ca8", "ca_translated.txt", data_root)
    section, rows = "", []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith(":"):
            section = line[1:].strip()
            continue
        words = line.split()
        if len(words) != 4:
            raise DataError(f"{path}:{lineno}: expected 4 words, got {len(words)}")
        rows.append(Analogy(section, *words))
    return rows


@dataclass
class WordPair:
    w1: str
    w2: str
    score: float


def zh_wordsim(data_root: str | Path | None = None) -> list[WordPair]:
    path = dataset_path("zh-wordsim", "240.txt", data_root)
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        try:
            rows.append(WordPair(cols[0].strip(), cols[1].strip(), float(cols[2])))
        except (IndexError, ValueError):
            raise DataError(f"{path}:{lineno}: expected word<TAB>word<TAB>score") from None
    return rows
