"""Rows of a task's data file: CSV, TSV or JSON lines, with columns found by name.

    read_records("reviews.csv")                       # list[dict[str, str]], header from line 1
    pick_column(rows, path, "", TEXT_COLUMNS, "text") # the first of `sentence text text_a …` present

A file is read by its suffix (``.csv``, ``.tsv``/``.txt`` = tab-separated, ``.jsonl``/``.json``
= one JSON object per line). Columns are found by the common names used by GLUE, CLUE and the
Hugging Face hub, or named explicitly (``--task.text_column=review_body``). Every problem names
the file and line; an empty file is an error, never an empty training run.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

from lmlab.errors import DataError

TEXT_COLUMNS = ("sentence", "text", "text_a", "content", "review", "document", "sentence1")
LABEL_COLUMNS = ("label", "labels", "sentiment", "polarity", "class", "category")


def read_records(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (give a CSV/TSV/JSONL file or a dataset such as sst2:train)")
    suffix = path.suffix.lower()
    rows: list[dict[str, str]] = []
    if suffix in (".jsonl", ".json"):
        with open(path, encoding="utf-8-sig") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno}: not a JSON object ({e.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object per line")
                rows.append({str(k): v for k, v in row.items()})
    elif suffix in (".csv", ".tsv", ".txt"):
        delimiter = "," if suffix == ".csv" else "\t"
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: empty file")
            header = [h.strip() for h in header]
            for row in reader:
                if not row or not any(c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise DataError(f"{path}:{reader.line_num}: {len(row)} fields, the header has {len(header)} "
                                    f"({header}); quote fields that contain the delimiter")
                rows.append(dict(zip(header, row)))
    else:
        raise DataError(f"{path}: unknown file type {suffix!r}; use .csv, .tsv or .jsonl")
    if not rows:
        raise DataError(f"{path}: holds no rows")
    return rows


def pick_column(rows: list[dict], path: str | Path, given: str, candidates: Sequence[str], role: str) -> str:
    """The column for `role`: `given` if set (must exist), else the first candidate present."""
    columns = list(rows[0])
    if given:
        if given not in columns:
            raise DataError(f"{path}: no column {given!r} for the {role}; columns are {columns}")
        return given
    lower = {c.lower(): c for c in columns}
    for name in candidates:
        if name in lower:
            return lower[name]
    raise DataError(f"{path}: cannot tell which column holds the {role} (looked for {', '.join(candidates)}); "
                    f"columns are {columns}; name it with --task.{role}_column=NAME")


def cell(row: dict, column: str, path: str | Path, index: int) -> str:
    value = row.get(column)
    if value is None:
        raise DataError(f"{path}: row {index + 1} has no {column!r}")
    return str(value).strip()


def dataset_spec(spec: str) -> tuple[str, str] | None:
    """``"sst2:train"`` → ("sst2", "train"); a path → None."""
    if ":" in spec and not Path(spec).exists():
        name, _, split = spec.partition(":")
        if name.replace("-", "").replace("_", "").isalnum() and "/" not in name:
            return name, split
    return None
