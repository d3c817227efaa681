"""Reading raw inputs into bounded chunks of records, and decoding those chunks into documents.

Two halves, so that the cleaning pipeline can run the cheap, sequential part in one process
and the expensive part in N workers:

* `iter_chunks(inputs, cfg, counters)` (main process) expands files, globs and directories;
  opens gzip/bz2/xz/zstd streams (detected by magic bytes) and tar/zip archives; detects the
  encoding; and cuts the byte stream into `Chunk`s of about `chunk_bytes` at record
  boundaries (a newline, a blank line, a quote-balanced CSV newline), never holding more than
  one chunk plus one over-long record's worth of bytes (`max_record_bytes`; longer records are
  skipped and counted, so a single 512 MiB line costs no memory). UTF-16 is transcoded to
  UTF-8 here, since its newlines are not single bytes. JSON arrays and Parquet are parsed here
  (JSON whole, up to `max_json_bytes`; Parquet one row group at a time).
* `lmlab.corpus.decode.decode_chunk(chunk, cfg, counters)` (any process) decodes bytes with the encoding policy
  and parses records (lines, blank-line blocks, whole files, JSONL rows, CSV/TSV rows) into
  ``(text, ref)`` pairs, where ``ref`` is ``file:line`` or ``archive!member:line``.

Encoding policy (`ReadConfig.errors`): ``strict`` raises `DataError` at the first bad byte
naming file:line; ``replace`` substitutes U+FFFD and counts every replaced byte; ``skip``
drops the line and counts it. The first `examples` occurrences of each event keep their
file:line in the stats.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import glob
import gzip
import io
import json
import lzma
import os
import re
import tarfile
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator, Literal

from lmlab.config import check
from lmlab.errors import ConfigError, DataError

Format = Literal["auto", "text", "jsonl", "json", "csv", "tsv", "parquet"]


@dataclass
class ReadConfig:
    format: Format = "auto"  # auto: from the extension (.jsonl .json .csv .tsv .parquet, else text)
    doc_per: Literal["line", "block", "file"] = "line"  # text: a document per line / blank-line block / file
    # JSONL/JSON/Parquet key, or CSV/TSV column name (or 0-based index); in a JSON file also a
    # dotted path where * walks a list and A-B a part of one: data.*.paragraphs.*.context (the
    # contexts of a SQuAD-format file), data.0-29.paragraphs.*.context (those of articles 0-29)
    field: str = "text"
    join_lists: str = "\n"  # joins a field holding a list of strings (chinese-poetry "paragraphs")
    header: bool = True  # CSV/TSV: the first row names the columns
    encoding: Literal["auto", "utf-8", "gb18030", "utf-16"] = "auto"  # auto: BOM, then UTF-8, then GB18030
    errors: Literal["strict", "replace", "skip"] = "replace"  # undecodable bytes
    bad_rows: Literal["fail", "skip"] = "skip"  # malformed JSONL/CSV rows, missing fields
    chunk_bytes: int = 4 << 20  # bytes handed to a worker at a time
    max_record_bytes: int = 32 << 20  # longer lines/blocks/files are skipped and counted
    max_json_bytes: int = 512 << 20  # JSON arrays are parsed whole
    examples: int = 5  # file:line examples kept per event

    def __post_init__(self) -> None:
        check(self.chunk_bytes >= 1024, "read.chunk_bytes", "must be at least 1024")
        check(self.max_record_bytes >= 1024, "read.max_record_bytes", "must be at least 1024")
        check(self.examples >= 0, "read.examples", "must be >= 0")


class Counters:
    """Event counts with the first few file:line references of each; mergeable across workers."""

    def __init__(self, examples: int = 5):
        self.examples = examples
        self.counts: dict[str, int] = {}
        self.where: dict[str, list[str]] = {}

    def add(self, event: str, ref: str | None = None, n: int = 1) -> None:
        self.counts[event] = self.counts.get(event, 0) + n
        if ref is not None:
            seen = self.where.setdefault(event, [])
            if len(seen) < self.examples and (not seen or seen[-1] != ref):
                seen.append(ref)

    def merge(self, other: "Counters") -> None:
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        for k, refs in other.where.items():
            seen = self.where.setdefault(k, [])
            seen.extend(refs[: max(0, self.examples - len(seen))])

    def to_dict(self) -> dict[str, Any]:
        return {"counts": dict(sorted(self.counts.items())),
                "first": {k: v for k, v in sorted(self.where.items())}}


@dataclass
class Item:
    """A run of whole records from one source. `data` is UTF-8/GB18030 bytes or parsed strings."""

    source: str  # "path" or "archive!member"
    first_line: int  # 1-based line number of data's first byte
    mode: str  # line | block | file | jsonl | csv | tsv | strings
    encoding: str  # python codec of `data` (bytes only)
    data: bytes | list[tuple[str, str]]  # bytes, or [(text, ref)] for "strings"
    header: list[str] | None = None  # CSV/TSV column names, repeated for each chunk


@dataclass
class Chunk:
    index: int
    items: list[Item] = field(default_factory=list)
    nbytes: int = 0


# --------------------------------------------------------------------------- inputs

_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zstd")
_TAR = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst")


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files, globs and directories (recursively) → a sorted, de-duplicated file list."""
    out: list[Path] = []
    for spec in inputs:
        spec = str(spec)
        if any(c in spec for c in "*?["):
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                raise DataError(f"{spec}: the pattern matches no file")
            out.extend(Path(m) for m in matches if Path(m).is_file())
        elif Path(spec).is_dir():
            files = sorted(p for p in Path(spec).rglob("*") if p.is_file() and not p.name.startswith("."))
            if not files:
                raise DataError(f"{spec}: the directory holds no files")
            out.extend(files)
        elif Path(spec).is_file():
            out.append(Path(spec))
        else:
            raise DataError(f"{spec}: no such file or directory")
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]  # keep order, drop repeats


def _open_decompressed(raw: IO[bytes], name: str) -> IO[bytes]:
    """Wrap `raw` in a decompressor chosen by magic bytes (falling back to the extension)."""
    head = raw.peek(6)[:6] if hasattr(raw, "peek") else b""
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    if head[:3] == b"BZh":
        return bz2.BZ2File(raw)  # type: ignore[return-value]
    if head[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(raw)  # type: ignore[return-value]
    if head[:4] == b"\x28\xb5\x2f\xfd" or name.endswith((".zst", ".zstd")):
        try:
            import zstandard
        except ImportError:
            raise DataError(f"{name}: zstd-compressed; install `zstandard` to read it") from None
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw))  # type: ignore[arg-type]
    return raw


def _strip_compression(name: str) -> str:
    low = name.lower()
    for suf in _COMPRESSED:
        if low.endswith(suf):
            return name[: -len(suf)]
    return name


def _format_of(name: str, cfg: ReadConfig) -> str:
    if cfg.format != "auto":
        return cfg.format
    base = _strip_compression(name).lower()
    for ext, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"), (".csv", "csv"),
                     (".tsv", "tsv"), (".parquet", "parquet")):
        if base.endswith(ext):
            return fmt
    return "text"


def detect_encoding(sample: bytes, cfg: ReadConfig) -> str:
    """BOM first; then UTF-8 if the sample decodes or has only a few bad bytes (< 5 % of its non-ASCII
    bytes); else GB18030 if that decodes the sample with fewer errors; else UTF-8 (repaired)."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if cfg.encoding == "utf-16":
        return "utf-16"
    if cfg.encoding != "auto":
        return cfg.encoding
    bad_utf8 = _decode_errors(sample, "utf-8")
    if bad_utf8 == 0:
        return "utf-8"
    non_ascii = sum(1 for b in sample if b >= 0x80)
    if bad_utf8 * 20 < non_ascii:  # UTF-8 text with a few corrupt bytes
        return "utf-8"
    return "gb18030" if _decode_errors(sample, "gb18030") < bad_utf8 else "utf-8"


def _decode_errors(sample: bytes, encoding: str) -> int:
    """Invalid sequences when decoding `sample` (an incomplete character at its end is not one)."""
    errors = 0

    def count(e: UnicodeDecodeError) -> tuple[str, int]:
        nonlocal errors
        errors += 1
        return "", e.end

    codecs.register_error("lmlab-sniff", count)
    codecs.getincrementaldecoder(encoding)(errors="lmlab-sniff").decode(sample, final=False)
    return errors


_TEXT_CONTROLS = "\t\n\r\f\v\x08\x1b"  # controls that real text files do contain (ESC: terminal colours)
# candidates, looked up below; U+3000-303F (CJK punctuation) and U+4E00-9FFF (CJK ideographs) are
# all assigned: skipping them spares the lookup for most characters of a Chinese text
_ODD = re.compile("[\\x00-\\x1f\\x7f\\u0080-\\u2fff\\u3040-\\u4dff\\ua000-\\U0010ffff]")


def _looks_binary(sample: bytes, encoding: str) -> bool:
    """Text in an ASCII-compatible encoding has (almost) no NUL bytes; images and executables do.
    Compressed or encrypted data need not (or may have had them removed), and GB18030 decodes
    most byte pairs: such data is told by its share of characters no text has — C0 controls,
    private-use, unassigned and surrogate code points, and for GB18030 undecodable bytes too —
    above 10 % of the sample's characters (random bytes: ≥ 17 % from 256 bytes on; the Chinese
    test corpora in GB18030: 0)."""
    if not sample:
        return False
    if sample.count(b"\x00") > max(1, len(sample) // 1000):
        return True
    text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(sample, final=False)
    odd = sum(1 for c in _ODD.findall(text) if c not in _TEXT_CONTROLS
              and (c < "\x80" or unicodedata.category(c) in ("Co", "Cn", "Cs")))
    if encoding == "gb18030":  # chosen because UTF-8 failed: its own failures count as well
        odd += text.count("\ufffd")
    return odd > max(4, len(text) // 10)


class _Transcoder(io.RawIOBase):
    """A UTF-16 byte stream read back as UTF-8 bytes, decode errors counted per the policy."""

    def __init__(self, raw: IO[bytes], source: str, cfg: ReadConfig, counters: Counters):
        self.raw, self.source, self.cfg, self.counters = raw, source, cfg, counters
        self.dec = codecs.getincrementaldecoder("utf-16")(errors="strict")
        self.buf = b""
        self.eof = False

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        block = self.raw.read(1 << 20)
        self.eof = not block
        if self.cfg.errors != "strict":  # skip cannot drop a line before it is decoded: replace
            codecs.register_error("lmlab-count-utf16", _counting_handler(self.counters, self.source))
            self.dec.errors = "lmlab-count-utf16"
        try:
            text = self.dec.decode(block, final=self.eof)
        except UnicodeDecodeError as e:
            raise DataError(f"{self.source}: invalid UTF-16 ({e.reason}); fix the file or use "
                            "--read.errors=replace") from None
        self.buf += text.encode("utf-8", errors="replace")

    def readinto(self, b: Any) -> int:
        while not self.buf and not self.eof:
            self._fill()
        n = min(len(b), len(self.buf))
        b[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n


_BLOCK_END = re.compile(rb"\n[ \t\r]*\n")


def _cut(buf: bytes, mode: str) -> int:
    """Index just after the last record boundary in `buf` (0 if none)."""
    if mode == "block":
        last = None
        for last in _BLOCK_END.finditer(buf, max(0, len(buf) - (1 << 16))):
            pass
        if last is None:  # search the whole buffer only when the tail had no boundary
            for last in _BLOCK_END.finditer(buf):
                pass
        return last.end() if last else 0
    if mode == "csv":
        # A newline ends a record only outside quotes: cut after the last newline preceded by
        # an even number of quote characters ("" escapes keep the parity).
        cut, quotes = 0, 0
        for m in re.finditer(rb'"|\n', buf):
            if m.group() == b'"':
                quotes += 1
            elif quotes % 2 == 0:
                cut = m.end()
        return cut
    return buf.rfind(b"\n") + 1


def _stream_items(stream: IO[bytes], source: str, mode: str, encoding: str, cfg: ReadConfig,
                  counters: Counters, header: list[str] | None) -> Iterator[Item]:
    """Cut a byte stream into Items of about chunk_bytes ending at record boundaries."""
    if mode == "file":
        data = stream.read(cfg.max_record_bytes + 1)
        if len(data) > cfg.max_record_bytes:
            counters.add("skipped_records_too_long", source)
            return
        yield Item(source, 1, "file", encoding, data)
        return
    line, buf, skipping = 1, b"", False
    while True:
        block = stream.read(cfg.chunk_bytes)
        if skipping:  # inside an over-long record: discard up to its end
            nl = block.find(b"\n")
            if nl < 0 and block:
                continue
            line += 1
            block, skipping = (block[nl + 1:] if nl >= 0 else b""), False
        buf += block
        final = not block
        cut = len(buf) if final else _cut(buf, mode)
        if cut == 0 and len(buf) > cfg.max_record_bytes:
            if mode == "block" and b"\n" in buf:  # split an over-long block at a line end
                cut = buf.rfind(b"\n") + 1
                counters.add("blocks_split", f"{source}:{line}")
            else:
                counters.add("skipped_records_too_long", f"{source}:{line}")
                buf, skipping = b"", True
                continue
        if cut:
            data, buf = buf[:cut], buf[cut:]
            yield Item(source, line, mode, encoding, data, header)
            line += data.count(b"\n")
        if final:
            return


def _read_header(stream: IO[bytes], source: str, mode: str, encoding: str,
                 cfg: ReadConfig) -> tuple[list[str] | None, int]:
    if mode not in ("csv", "tsv") or not cfg.header:
        return None, 0
    first = stream.readline(cfg.max_record_bytes)
    text = first.decode(encoding, errors="replace").lstrip("\ufeff")
    row = next(csv.reader([text], delimiter="\t" if mode == "tsv" else ","), [])
    return [c.strip() for c in row], 1


def _file_items(stream: IO[bytes], source: str, cfg: ReadConfig, counters: Counters) -> Iterator[Item]:
    """Items of one (decompressed) file that is not an archive."""
    fmt = _format_of(source, cfg)
    if fmt == "parquet":
        yield from _parquet_items(stream, source, cfg, counters)
        return
    if not hasattr(stream, "peek"):
        stream = io.BufferedReader(stream)  # type: ignore[arg-type]
    sample = stream.peek(1 << 16)[: 1 << 16]  # type: ignore[attr-defined]
    if not sample:
        counters.add("empty_files", source)
        return
    encoding = detect_encoding(sample, cfg)
    counters.add(f"encoding:{encoding.replace('utf-8-sig', 'utf-8-bom')}")
    if encoding.startswith("utf-16"):
        stream = io.BufferedReader(_Transcoder(stream, source, cfg, counters), 1 << 20)
        encoding = "utf-8"
    elif _looks_binary(sample, encoding):
        counters.add("skipped_binary_files", source)
        return
    if fmt == "json":
        yield from _json_items(stream, source, encoding, cfg, counters)
        return
    mode = {"text": cfg.doc_per, "jsonl": "jsonl", "csv": "csv", "tsv": "tsv"}[fmt]
    header, skipped = _read_header(stream, source, mode, encoding, cfg)
    for item in _stream_items(stream, source, "csv" if mode == "csv" else mode, encoding, cfg, counters, header):
        item.mode, item.first_line = mode, item.first_line + skipped
        yield item


def _field_text(value: Any, cfg: ReadConfig) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return cfg.join_lists.join(value)
    return None


def _walk(value: Any, path: list[str], where: str) -> Iterator[tuple[str, Any]]:
    """(position, value) at the end of a dotted `path` in parsed JSON: * takes every element of a
    list, A-B its elements A to B (inclusive); a step that does not exist ends in
    (position, None), which the caller counts as a bad row."""
    if not path:
        yield where.lstrip("."), value
        return
    key, rest = path[0], path[1:]
    span = re.fullmatch(r"(\d+)-(\d+)", key)
    if (key == "*" or span) and isinstance(value, list):
        lo, hi = (int(span.group(1)), int(span.group(2))) if span else (0, len(value) - 1)
        for i, v in enumerate(value[lo:hi + 1], lo):
            yield from _walk(v, rest, f"{where}.{i}")
    elif key != "*" and isinstance(value, dict) and key in value:
        yield from _walk(value[key], rest, f"{where}.{key}")
    else:
        yield f"{where}.{key}".lstrip("."), None


def _json_items(stream: IO[bytes], source: str, encoding: str, cfg: ReadConfig, counters: Counters) -> Iterator[Item]:
    data = stream.read(cfg.max_json_bytes + 1)
    if len(data) > cfg.max_json_bytes:
        raise DataError(f"{source}: JSON array larger than read.max_json_bytes ({cfg.max_json_bytes}); "
                        "convert it to JSONL, which is streamed")
    try:
        obj = json.loads(data.decode(encoding, errors=cfg.errors if cfg.errors != "skip" else "replace"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{source}: not valid JSON ({e})") from None
    if "." in cfg.field and not (isinstance(obj, dict) and cfg.field in obj):
        values = _walk(obj, cfg.field.split("."), "")  # (position, value) along a path into the document
    else:
        values = ((i, row.get(cfg.field) if isinstance(row, dict) else row)
                  for i, row in enumerate(obj if isinstance(obj, list) else [obj]))
    batch: list[tuple[str, str]] = []
    for i, value in values:
        text = _field_text(value, cfg)
        if text is None:
            if cfg.bad_rows == "fail":
                raise DataError(f"{source}: element {i} has no string field {cfg.field!r}; "
                                "set --read.field or --read.bad_rows=skip")
            counters.add("bad_rows", f"{source}[{i}]")
            continue
        batch.append((text, f"{source}[{i}]"))
        if sum(len(t) for t, _ in batch) >= cfg.chunk_bytes // 3:
            yield Item(source, 1, "strings", "utf-8", batch)
            batch = []
    if batch:
        yield Item(source, 1, "strings", "utf-8", batch)


def _parquet_items(stream: IO[bytes], source: str, cfg: ReadConfig, counters: Counters) -> Iterator[Item]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{source}: Parquet needs pyarrow; install lmlab[parquet]") from None
    try:
        pf = pq.ParquetFile(stream)
    except Exception as e:  # pyarrow raises its own ArrowInvalid
        raise DataError(f"{source}: not a valid Parquet file ({e})") from None
    if cfg.field not in pf.schema_arrow.names:
        raise DataError(f"{source}: no column {cfg.field!r}; columns: {', '.join(pf.schema_arrow.names)}")
    row = 0
    for g in range(pf.num_row_groups):
        values = pf.read_row_group(g, columns=[cfg.field]).column(0).to_pylist()
        batch = []
        for v in values:
            text = _field_text(v, cfg)
            if text is None:
                counters.add("bad_rows", f"{source}#row{row}")
            else:
                batch.append((text, f"{source}#row{row}"))
            row += 1
        yield Item(source, 1, "strings", "utf-8", batch)


def _archive_items(path: Path, cfg: ReadConfig, counters: Counters) -> Iterator[Item]:
    name = str(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                if info.is_dir():
                    continue
                with zf.open(info) as member:
                    stream = _open_decompressed(io.BufferedReader(member), info.filename)  # type: ignore[arg-type]
                    yield from _file_items(stream, f"{name}!{info.filename}", cfg, counters)
        return
    try:
        with (open(path, "rb") as raw,
              tarfile.open(fileobj=_open_decompressed(io.BufferedReader(raw), name), mode="r|") as tf):
            for member in tf:  # stream order; tar has no random access when compressed
                if not member.isfile():
                    continue
                f = tf.extractfile(member)
                if f is not None:
                    yield from _file_items(io.BufferedReader(f), f"{name}!{member.name}", cfg, counters)  # type: ignore[arg-type]
    except tarfile.TarError as e:
        raise DataError(f"{path}: not a readable tar archive ({e})") from None


def _is_archive(path: Path) -> bool:
    low = path.name.lower()
    return low.endswith(_TAR) or low.endswith(".zip")


def iter_items(paths: list[Path], cfg: ReadConfig, counters: Counters) -> Iterator[Item]:
    for path in paths:
        if _is_archive(path):
            yield from _archive_items(path, cfg, counters)
            continue
        try:
            raw = open(path, "rb")
        except OSError as e:
            raise DataError(f"{path}: cannot open ({e.strerror})") from None
        with raw:
            stream = _open_decompressed(io.BufferedReader(raw, 1 << 20), path.name)  # type: ignore[arg-type]
            try:
                yield from _file_items(stream, str(path), cfg, counters)
            except (OSError, EOFError, lzma.LZMAError) as e:  # corrupt or truncated compressed data
                raise DataError(f"{path}: cannot decompress ({e}); the file is truncated or corrupt") from None


def iter_chunks(inputs: list[str | Path], cfg: ReadConfig, counters: Counters) -> Iterator[Chunk]:
    """Items grouped into chunks of about cfg.chunk_bytes (many small archive members share one)."""
    chunk = Chunk(0)
    for item in iter_items(expand_inputs(inputs), cfg, counters):
        size = len(item.data) if isinstance(item.data, bytes) else sum(len(t) for t, _ in item.data) * 3
        chunk.items.append(item)
        chunk.nbytes += size
        if chunk.nbytes >= cfg.chunk_bytes:
            yield chunk
            chunk = Chunk(chunk.index + 1)
    if chunk.items:
        yield chunk


def _counting_handler(counters: Counters, ref: str):
    def handler(e: UnicodeDecodeError) -> tuple[str, int]:
        counters.add("replaced_bytes", ref, e.end - e.start)
        return "\ufffd", e.end
    return handler



def open_text_lines(path: str | Path) -> Iterator[str]:
    """Lines of a (possibly compressed) UTF-8 text file, for tools that read plain text."""
    with open(path, "rb") as raw:
        stream = _open_decompressed(io.BufferedReader(raw), str(path))
        for line in io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline=None):  # type: ignore[arg-type]
            yield line


def check_inputs(inputs: list[str | Path]) -> None:
    if not inputs:
        raise ConfigError("inputs: give at least one file, directory or glob")
    for spec in inputs:
        if not any(c in str(spec) for c in "*?[") and not os.path.exists(spec):
            raise DataError(f"{spec}: no such file or directory")
