"""Decoding chunks of raw records into documents (runs in the cleaning workers).

`decode_chunk(chunk, cfg, counters)` applies the encoding policy line by line (``strict``
raises `DataError` naming file:line, ``replace`` counts every replaced byte, ``skip`` drops
and counts the line) and parses records — lines, blank-line blocks, whole files, JSONL rows,
CSV/TSV rows (quoted fields may span lines) — into ``(text, ref)`` pairs, where ``ref`` is
``file:line`` or ``archive!member:line``. Malformed rows follow `ReadConfig.bad_rows`.
"""

from __future__ import annotations

import codecs
import csv
import json
from typing import Iterator

from lmlab.corpus.read import Chunk, Counters, Item, ReadConfig, _counting_handler, _field_text
from lmlab.errors import DataError


def _decode_lines(item: Item, cfg: ReadConfig, counters: Counters) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line of a bytes Item, with the encoding policy applied."""
    data = item.data
    assert isinstance(data, bytes)
    try:
        text = data.decode(item.encoding)
        for i, line in enumerate(text.split("\n")):
            yield item.first_line + i, line
        return
    except UnicodeDecodeError:
        pass
    for i, raw in enumerate(data.split(b"\n")):
        lineno = item.first_line + i
        try:
            yield lineno, raw.decode(item.encoding)
        except UnicodeDecodeError as e:
            ref = f"{item.source}:{lineno}"
            if cfg.errors == "strict":
                raise DataError(f"{ref}: invalid {item.encoding} at byte {e.start} of the line ({e.reason}); "
                                "fix the file, set --read.encoding, or use --read.errors=replace|skip") from None
            if cfg.errors == "skip":
                counters.add("skipped_lines_bad_encoding", ref)
                continue
            codecs.register_error("lmlab-count", _counting_handler(counters, ref))
            yield lineno, raw.decode(item.encoding, errors="lmlab-count")


def _row_error(cfg: ReadConfig, counters: Counters, ref: str, what: str) -> None:
    if cfg.bad_rows == "fail":
        raise DataError(f"{ref}: {what}; fix the row or use --read.bad_rows=skip")
    counters.add("bad_rows", ref)


def decode_chunk(chunk: Chunk, cfg: ReadConfig, counters: Counters) -> Iterator[tuple[str, str]]:
    """(text, ref) for every document in the chunk."""
    for item in chunk.items:
        if item.mode == "strings":
            yield from item.data  # type: ignore[misc]
        elif item.mode == "file":
            text = "\n".join(line for _, line in _decode_lines(item, cfg, counters))
            yield text.lstrip("\ufeff"), item.source
        elif item.mode == "line":
            for lineno, line in _decode_lines(item, cfg, counters):
                if line.strip():
                    yield line, f"{item.source}:{lineno}"
        elif item.mode == "block":
            start, lines = None, []
            for lineno, line in _decode_lines(item, cfg, counters):
                if line.strip():
                    start = lineno if start is None else start
                    lines.append(line)
                elif lines:
                    yield "\n".join(lines), f"{item.source}:{start}"
                    start, lines = None, []
            if lines:
                yield "\n".join(lines), f"{item.source}:{start}"
        elif item.mode == "jsonl":
            for lineno, line in _decode_lines(item, cfg, counters):
                if not line.strip():
                    continue
                ref = f"{item.source}:{lineno}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    _row_error(cfg, counters, ref, f"not valid JSON ({e.msg} at column {e.colno})")
                    continue
                text = _field_text(row.get(cfg.field) if isinstance(row, dict) else None, cfg)
                if text is None:
                    _row_error(cfg, counters, ref, f"no string field {cfg.field!r}")
                    continue
                yield text, ref
        else:  # csv / tsv
            yield from _decode_table(item, cfg, counters)


def _column_index(item: Item, cfg: ReadConfig) -> int:
    if item.header is not None and cfg.field in item.header:
        return item.header.index(cfg.field)
    if cfg.field.isdigit():
        return int(cfg.field)
    where = f"columns: {', '.join(item.header)}" if item.header else "the file has no header row"
    raise DataError(f"{item.source}: no column {cfg.field!r} ({where}); set --read.field")


def _decode_table(item: Item, cfg: ReadConfig, counters: Counters) -> Iterator[tuple[str, str]]:
    col = _column_index(item, cfg)
    lines = _decode_lines(item, cfg, counters)
    numbered = ((n, line + "\n") for n, line in lines)
    current = [item.first_line]

    def feed() -> Iterator[str]:
        for n, line in numbered:
            current[0] = n
            yield line

    csv.field_size_limit(max(cfg.max_record_bytes, 1 << 20))
    if item.mode == "tsv":  # TSV: no quoting, tabs separate fields
        reader = csv.reader(feed(), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(feed())
    start = item.first_line
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:  # e.g. a NUL byte; the reader resumes at the next line
            _row_error(cfg, counters, f"{item.source}:{current[0]}", f"malformed {item.mode.upper()} ({e})")
            start = current[0] + 1
            continue
        ref, start = f"{item.source}:{start}", current[0] + 1  # a quoted field may span lines
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if col >= len(row):
            _row_error(cfg, counters, ref, f"has {len(row)} columns, column {cfg.field!r} is number {col + 1}")
            continue
        yield row[col], ref
