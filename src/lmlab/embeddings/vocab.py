"""Corpus → tokens → vocabulary and a compact id stream, the input of both trainers.

A corpus is one or more plain-text files (``.gz`` allowed) or directories of them, one document
per line, or a cleaned corpus directory (``lmlab corpus clean``: its train split); windows never
cross a document. Tokens come from one of:

- ``words``: lower-cased (by default) regex words ``\\w+`` joined by inner apostrophes or
  hyphens (``don't``, ``well-known``); punctuation is dropped. For English and other
  space-separated languages.
- ``whitespace``: the line split on whitespace, nothing dropped (pre-tokenised text).
- ``jieba``: Chinese word segmentation with jieba (precise mode); tokens without a letter or
  digit (punctuation, spaces) are dropped.
- a directory holding ``tokenizer.json`` (an lmlab or Hugging Face tokenizer): its tokens,
  exactly as the model sees them, so that vectors line up with a model vocabulary.

`encode_corpus` makes one pass over the text, interning tokens to provisional ids written to
an ``int32`` file on disk (memory holds only the token table), then counts, applies
``min_count``/``max_vocab`` and rewrites the stream with final ids — frequency-sorted, ties by
first appearance, so runs are deterministic — with out-of-vocabulary tokens removed *before*
windowing, as word2vec.c and the Stanford GloVe tools do.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from lmlab.config import check
from lmlab.errors import DataError

WORD_RE = re.compile(r"\w+(?:['’\-]\w+)*")
BUILTIN_TOKENIZERS = ("words", "whitespace", "jieba")
CHUNK_TOKENS = 1 << 22  # tokens per block when rewriting the id stream


@dataclass
class VocabConfig:
    tokenizer: str = "words"  # words | whitespace | jieba | a directory with tokenizer.json
    lowercase: bool = True  # for words/whitespace/jieba; a tokenizer directory normalises itself
    min_count: int = 5  # drop tokens seen fewer times
    max_vocab: int = 0  # keep at most this many most frequent tokens (0: no limit)

    def __post_init__(self) -> None:
        check(self.min_count >= 1, "vocab.min_count", "must be >= 1")
        check(self.max_vocab >= 0, "vocab.max_vocab", "must be >= 0 (0 means no limit)")
        check(self.tokenizer in BUILTIN_TOKENIZERS or Path(self.tokenizer, "tokenizer.json").is_file(),
              "vocab.tokenizer", f"{self.tokenizer!r} is neither one of {', '.join(BUILTIN_TOKENIZERS)} "
              "nor a directory holding tokenizer.json")


@dataclass
class Vocab:
    words: list[str]
    counts: np.ndarray  # int64 [V], descending

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)


@dataclass
class EncodedCorpus:
    """The kept tokens of a corpus as final ids (``int32`` file) plus the end offset of each line."""

    vocab: Vocab
    ids_path: Path
    line_ends: np.ndarray  # int64 [lines], exclusive end of each line in the id stream
    tokens_seen: int  # before min_count
    lines: int

    @property
    def tokens_kept(self) -> int:
        return int(self.line_ends[-1]) if len(self.line_ends) else 0

    def ids(self) -> np.ndarray:
        return np.memmap(self.ids_path, dtype=np.int32, mode="r") if self.tokens_kept else np.zeros(0, np.int32)

    def blocks(self, max_tokens: int = CHUNK_TOKENS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(ids, line_ends)`` blocks of whole lines (a longer line is its own block);
        ``line_ends`` are relative to the block."""
        ids = self.ids()
        ends = self.line_ends
        start_line, start = 0, 0
        while start_line < len(ends):
            stop_line = int(np.searchsorted(ends, start + max_tokens, side="right"))
            stop_line = max(stop_line, start_line + 1)
            stop = int(ends[stop_line - 1])
            yield np.asarray(ids[start:stop]), ends[start_line:stop_line] - start
            start_line, start = stop_line, stop


def corpus_files(paths: list[str | Path]) -> list[Path]:
    """Expand directories (sorted, ``*.txt``/``*.gz``/extension-less files) and check existence."""
    files: list[Path] = []
    for p in map(Path, paths):
        if (p / "manifest.json").is_file():  # a cleaned corpus (lmlab corpus clean): its train split
            from lmlab.corpus.pipeline import corpus_files as cleaned_files

            files.extend(cleaned_files(p, "train"))
        elif p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                                and f.suffix in (".txt", ".gz", "")))
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p}: corpus file not found")
    if not files:
        raise DataError(f"{', '.join(map(str, paths))}: no corpus files (.txt or .gz) found")
    return files


def read_lines(files: list[Path]) -> Iterator[tuple[Path, int, str]]:
    """Yield ``(file, line number, text)``; a decoding error names the file and line."""
    for path in files:
        raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
        with raw, io.BufferedReader(raw, 1 << 20) if path.suffix == ".gz" else raw as f:
            lineno = 0
            try:
                for lineno, line in enumerate(f, 1):  # bytes, split at \n; \r\n is stripped below
                    try:
                        text = line.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise DataError(f"{path}: line {lineno}: not UTF-8 ({e.reason} at byte {e.start}); "
                                        "convert the file to UTF-8 first") from None
                    if lineno == 1 and text.startswith("\ufeff"):
                        text = text[1:]  # byte-order mark
                    if path.suffix == ".jsonl":  # a cleaned corpus record: {"text": ...}
                        try:
                            text = json.loads(text)["text"].replace("\n", " ")
                        except (json.JSONDecodeError, KeyError, TypeError):
                            raise DataError(f"{path}: line {lineno}: not a corpus record {{\"text\": ...}}") from None
                    yield path, lineno, text
            except (OSError, EOFError) as e:  # a truncated or corrupt .gz
                raise DataError(f"{path}: cannot read after line {lineno}: {e}") from None


def make_tokenizer(spec: str, lowercase: bool = True) -> Callable[[list[str]], list[list[str]]]:
    """A batch tokenizer ``lines → token lists`` for a `VocabConfig.tokenizer` value."""
    if spec == "words":
        find = WORD_RE.findall
        return lambda lines: [find(s.lower() if lowercase else s) for s in lines]
    if spec == "whitespace":
        return lambda lines: [(s.lower() if lowercase else s).split() for s in lines]
    if spec == "jieba":
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)

        def keep(tok: str) -> bool:
            return any(unicodedata.category(ch)[0] in "LN" for ch in tok)

        return lambda lines: [[t for t in jieba.lcut((s.lower() if lowercase else s).strip()) if keep(t)]
                              for s in lines]
    from tokenizers import Tokenizer

    path = Path(spec, "tokenizer.json")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust library raises a plain Exception
        raise DataError(f"{path}: not a readable tokenizer file ({e})") from None
    return lambda lines: [e.tokens for e in tok.encode_batch([s.rstrip("\r\n") for s in lines],
                                                             add_special_tokens=False)]


def build_vocab(words: list[str], counts: np.ndarray, min_count: int, max_vocab: int = 0) -> tuple[Vocab, np.ndarray]:
    """Return the kept vocabulary (descending count, ties by `words` order) and the map
    ``old id → new id`` (-1 for dropped)."""
    order = np.argsort(-counts, kind="stable")
    order = order[counts[order] >= min_count]
    if max_vocab:
        order = order[:max_vocab]
    remap = np.full(len(words), -1, dtype=np.int32)
    remap[order] = np.arange(len(order), dtype=np.int32)
    return Vocab([words[i] for i in order], counts[order].astype(np.int64)), remap


def encode_corpus(paths: list[str | Path], cfg: VocabConfig, workdir: str | Path,
                  progress: bool = True) -> EncodedCorpus:
    """Tokenise `paths` once into ``workdir`` and return the encoded corpus (see module doc)."""
    from tqdm import tqdm

    files = corpus_files(paths)
    workdir = Path(workdir)
    tokenize = make_tokenizer(cfg.tokenizer, cfg.lowercase)
    table: dict[str, int] = {}
    raw_path = workdir / "tokens.raw.i32"
    line_lengths: list[int] = []
    # progress in bytes of text; unknown total when some input is compressed
    total_bytes = None if any(f.suffix == ".gz" for f in files) else sum(f.stat().st_size for f in files)
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenize", disable=not progress or None)
    with open(raw_path, "wb") as out:
        batch: list[str] = []

        def flush() -> None:
            ids: list[int] = []
            for toks in tokenize(batch):
                ids.extend([table.setdefault(t, len(table)) for t in toks])
                line_lengths.append(len(toks))
            np.asarray(ids, dtype=np.int32).tofile(out)
            bar.update(sum(len(s.encode("utf-8")) for s in batch))
            batch.clear()

        for _, _, line in read_lines(files):
            batch.append(line)
            if len(batch) == 2000:
                flush()
        if batch:
            flush()
    bar.close()
    tokens_seen = int(sum(line_lengths))
    if tokens_seen == 0:
        raise DataError(f"{', '.join(map(str, paths))}: the corpus has no tokens "
                        f"(tokenizer {cfg.tokenizer!r}); is it empty?")
    raw = np.memmap(raw_path, dtype=np.int32, mode="r")
    counts = np.zeros(len(table), dtype=np.int64)
    for s in range(0, len(raw), CHUNK_TOKENS):
        counts += np.bincount(raw[s:s + CHUNK_TOKENS], minlength=len(table))
    words = list(table)
    table.clear()
    vocab, remap = build_vocab(words, counts, cfg.min_count, cfg.max_vocab)
    if len(vocab) == 0:
        raise DataError(f"{', '.join(map(str, paths))}: no token occurs at least min_count={cfg.min_count} "
                        f"times ({len(words)} distinct tokens, most frequent seen {int(counts.max())} times); "
                        "lower --min-count or use a larger corpus")
    # Rewrite with final ids, dropping out-of-vocabulary tokens; recompute line ends.
    old_ends = np.cumsum(np.asarray(line_lengths, dtype=np.int64))
    kept_before = np.zeros(len(old_ends), dtype=np.int64)
    ids_path = workdir / "ids.i32"
    kept_total = 0
    with open(ids_path, "wb") as out:
        for s in range(0, len(raw), CHUNK_TOKENS):
            mapped = remap[raw[s:s + CHUNK_TOKENS]]
            keep = mapped >= 0
            mapped[keep].tofile(out)
            cum = np.cumsum(keep, dtype=np.int64)
            # line ends e in (s, s + n] map to (kept before this block) + cum[e - s - 1]
            lo, hi = np.searchsorted(old_ends, [s, s + len(mapped)], side="right")
            kept_before[lo:hi] = kept_total + cum[old_ends[lo:hi] - s - 1]
            kept_total += int(cum[-1])
    del raw
    raw_path.unlink()
    line_ends = kept_before  # a line ending at 0 (empty leading lines) keeps 0
    return EncodedCorpus(vocab=vocab, ids_path=ids_path, line_ends=line_ends,
                         tokens_seen=tokens_seen, lines=len(line_lengths))
