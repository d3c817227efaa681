"""Pretraining text: tinyshakespeare, IMDB unlabeled reviews, WikiText-2, chinese-poetry, 四大名著."""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lmlab.datasets.root import dataset_path
from lmlab.errors import DataError


def tinyshakespeare(split: str = "train", data_root: str | Path | None = None) -> str:
    """The text; by convention the first 90 % (by characters) is train, the rest valid ("all": whole)."""
    text = dataset_path("tinyshakespeare", "input.txt", data_root).read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    return {"train": text[:cut], "valid": text[cut:], "all": text}[_check(split, ("train", "valid", "all"))]


def imdb_unsup(data_root: str | Path | None = None) -> Iterator[str]:
    """The 50,000 unlabeled reviews, streamed from the tar.gz (raw: ``<br />`` tags still inside)."""
    path = dataset_path("imdb", "aclImdb_unsup.tar.gz", data_root)
    with tarfile.open(path, "r|gz") as tf:
        for member in tf:
            if member.isfile() and "/unsup/" in member.name and member.name.endswith(".txt"):  # not urls_unsup.txt
                f = tf.extractfile(member)
                if f is not None:
                    yield f.read().decode("utf-8", errors="replace")


def wikitext2(split: str = "valid", data_root: str | Path | None = None) -> str:
    """Raw WikiText-2 (only the validation split is shipped)."""
    return dataset_path("wikitext-2", f"{_check(split, ('valid',))}.txt", data_root).read_text(encoding="utf-8")


@dataclass
class Poem:
    title: str
    author: str
    paragraphs: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.paragraphs)


def chinese_poetry(collection: str = "quantangshi", data_root: str | Path | None = None) -> Iterator[Poem]:
    """Poems of one collection folder (quantangshi: traditional characters; songci: simplified)."""
    folder = dataset_path("chinese-poetry", collection, data_root)
    for f in sorted(folder.glob("*.json")):
        if f.name.startswith("author"):
            continue
        try:
            items = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{f}: not valid JSON ({e})") from None
        for i, item in enumerate(items if isinstance(items, list) else [items]):
            paragraphs = item.get("paragraphs") or item.get("content") or []
            if isinstance(paragraphs, str):
                paragraphs = [paragraphs]
            if not isinstance(paragraphs, list) or not paragraphs:
                continue
            yield Poem(title=str(item.get("title") or item.get("rhythmic") or item.get("chapter") or ""),
                       author=str(item.get("author") or ""), paragraphs=[str(p) for p in paragraphs])


@dataclass
class Novel:
    title: str
    text: str  # CRLF normalised to LF


def sidamingzhu(data_root: str | Path | None = None) -> list[Novel]:
    folder = dataset_path("sidamingzhu", "", data_root)
    novels = [Novel(f.stem, f.read_text(encoding="utf-8-sig").replace("\r\n", "\n"))
              for f in sorted(folder.glob("*.txt"))]
    if not novels:
        raise DataError(f"{folder}: holds no .txt novels")
    return novels


def _check(split: str, allowed: tuple[str, ...]) -> str:
    if split not in allowed:
        raise DataError(f"split {split!r}: this dataset has {', '.join(allowed)}")
    return split
