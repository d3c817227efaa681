"""Token shards: a corpus tokenised once into memory-mapped id arrays (``lmlab data shard``).

    lmlab data shard out/corpus --tokenizer out/tok --out out/shards

Layout (kind ``lmlab-token-shards``)::

    train/00000.bin   ids, little-endian uint16 (vocabulary ≤ 65,536) or uint32, documents back to back,
                      each followed by the tokenizer's document separator (eos, else sep)
    train/00000.idx   int64 .npy, [documents + 1] start offsets (in tokens) of each document in the .bin
    valid/…, test/…   one .bin/.idx pair per input corpus shard (or input text file)
    tokenizer/        a copy of the tokenizer directory's files, so the shards are self-describing
    stats.json        tokens and documents per split; config.yaml; manifest.json (sha256 of every file,
                      dtype, vocab_size, separator_id, tokenizer fingerprint)

A corpus record that is not ``{"text": ...}`` (a damaged file) stops the run with its file:line,
or with ``--shard.bad_rows=skip`` is skipped and counted in stats.json (``skipped_records``).

The .bin format is nanoGPT's (``np.memmap(path, dtype, mode="r")``). uint16 halves disk and
page-cache use; forcing it with a vocabulary above 65,536 is refused (ids would wrap).

Resumable: each output pair is produced in ``.NAME.partial/`` next to the output and marked done
(with the input's size and mtime, the tokenizer fingerprint and the dtype) only once written
and fsynced; an interrupted run started again skips every unit already done and identical. The
finished directory appears atomically, like every artifact. Parallelism comes from the
tokenizers library, which encodes each batch of documents on all cores.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np

from lmlab.artifacts import ArtifactWriter, read_json, read_manifest, sha256_file
from lmlab.config import check, load_config
from lmlab.errors import ArtifactCorrupt, ArtifactError, ConfigError, DataError
from lmlab.tokenizer.tokenizer import FILES as TOKENIZER_FILES
from lmlab.tokenizer.tokenizer import Tokenizer

KIND = "lmlab-token-shards"
SPLITS = ("train", "valid", "test")


@dataclass
class ShardConfig:
    dtype: Literal["auto", "uint16", "uint32"] = "auto"  # auto: uint16 when the vocabulary fits
    batch_documents: int = 512  # documents per encode call (the library spreads a call over cores)
    separator: bool = True  # append the document separator (eos, else sep) after each document
    splits: list[str] = field(default_factory=lambda: list(SPLITS))  # corpus splits to shard, if present
    bad_rows: Literal["fail", "skip"] = "fail"  # a corpus line that is not {"text": ...}: stop, or skip and count

    def __post_init__(self) -> None:
        check(self.batch_documents >= 1, "shard.batch_documents", "must be >= 1")
        bad = sorted(set(self.splits) - set(SPLITS))
        check(not bad, "shard.splits", f"unknown {bad}; use {', '.join(SPLITS)}")


def choose_dtype(vocab_size: int, requested: str = "auto") -> np.dtype:
    """uint16 when every id fits (vocab_size ≤ 65,536), else uint32; a forced uint16 that cannot hold
    the ids is refused."""
    if requested == "uint16" and vocab_size > 2**16:
        raise ConfigError(f"shard.dtype: uint16 cannot hold ids of a {vocab_size:,}-token vocabulary "
                          "(max 65,536); use auto or uint32")
    if requested == "auto":
        return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)
    return np.dtype(requested)


def _units(corpus: Path | list[Path], cfg: ShardConfig) -> list[tuple[str, Path]]:
    """(split, input file) pairs: the shards of a corpus directory, or text files as 'train'."""
    from lmlab.corpus.pipeline import KIND as CORPUS_KIND

    paths = corpus if isinstance(corpus, list) else [corpus]
    units: list[tuple[str, Path]] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            manifest = read_manifest(p, CORPUS_KIND)
            for name in sorted(manifest["files"]):
                split = name.split("-", 1)[0]
                if split in cfg.splits and name.endswith(".jsonl"):
                    units.append((split, p / name))
        elif p.is_file():
            units.append(("train", p))
        else:
            raise DataError(f"{p}: no such corpus directory or text file")
    if not units:
        raise DataError(f"{corpus}: nothing to shard (no {'/'.join(cfg.splits)} shards)")
    return units


def _texts(path: Path, bad_rows: str, skipped: list[int]) -> Iterator[str]:
    from lmlab.corpus.read import open_text_lines

    if path.suffix == ".jsonl":
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    text = json.loads(raw.decode("utf-8"))["text"]
                    if not isinstance(text, str):
                        raise TypeError
                except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
                    if bad_rows == "fail":
                        raise DataError(f"{path}:{lineno}: not a corpus record {{\"text\": ...}}; fix or re-create the "
                                        "corpus, or pass --shard.bad_rows=skip") from None
                    skipped[0] += 1
                    continue
                yield text
        return
    for line in open_text_lines(path):
        line = line.rstrip("\n")
        if line.strip():
            yield line


def _batches(it: Iterator[str], n: int) -> Iterator[list[str]]:
    while batch := list(itertools.islice(it, n)):
        yield batch


def _encode_unit(src: Path, tok: Tokenizer, dtype: np.dtype, sep: int | None, batch: int,
                 bin_path: Path, idx_path: Path, bad_rows: str = "fail") -> tuple[int, int, int]:
    """Tokenise one input file into bin_path/idx_path; returns (documents, tokens, skipped records)."""
    offsets = [0]
    skipped = [0]
    total = 0
    extra = [sep] if sep is not None else []
    with open(bin_path, "wb") as f:
        for texts in _batches(_texts(src, bad_rows, skipped), batch):
            ids = tok.encode_batch(texts)
            lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)) + len(extra)
            n = int(lengths.sum())
            flat = np.fromiter(itertools.chain.from_iterable(x + extra for x in ids), dtype=dtype, count=n)
            f.write(flat.tobytes())
            offsets.extend((total + np.cumsum(lengths)).tolist())
            total += n
        f.flush()
        os.fsync(f.fileno())
    with open(idx_path, "wb") as f:
        np.save(f, np.asarray(offsets, dtype=np.int64), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    return len(offsets) - 1, total, skipped[0]


def shard_corpus(corpus: str | Path | list[str], tokenizer: str | Path, out: str | Path,
                 config: ShardConfig | str | Path | None = None, overrides: list[str] = (),  # type: ignore[assignment]
                 overwrite: bool = False) -> dict[str, Any]:
    """Tokenise a cleaned corpus (or text files) into token shards at `out`; resumes an interrupted run."""
    over = [o.replace("--shard.", "--", 1) for o in overrides]
    cfg = config if isinstance(config, ShardConfig) else load_config(ShardConfig, config, over)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ArtifactError(f"{out}: already exists and is not empty; "
                            "choose another output directory or pass --overwrite")
    tok = Tokenizer.load(tokenizer)
    dtype = choose_dtype(tok.vocab_size, cfg.dtype)
    sep = tok.document_separator_id if cfg.separator else None
    corpus_list = [Path(c) for c in corpus] if isinstance(corpus, (list, tuple)) else Path(corpus)
    units = _units(corpus_list, cfg)
    partial = out.parent / f".{out.name}.partial"
    partial.mkdir(parents=True, exist_ok=True)
    fingerprint = tok.fingerprint
    t0 = time.perf_counter()
    resumed, counts = 0, {s: {"documents": 0, "tokens": 0, "shards": 0, "skipped_records": 0} for s in SPLITS}
    numbering: dict[str, int] = {}
    layout: list[tuple[str, str]] = []
    for split, src in units:
        i = numbering[split] = numbering.get(split, -1) + 1
        name = f"{split}/{i:05d}"
        layout.append((split, name))
        (partial / split).mkdir(exist_ok=True)
        st = src.stat()
        key = {"input": str(src.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
               "tokenizer": fingerprint, "dtype": dtype.name, "separator": sep}
        done_path = partial / f"{name}.done.json"
        if done_path.exists():
            done = json.loads(done_path.read_text())
            if done.get("key") == key and (partial / f"{name}.bin").exists():
                resumed += 1
                c = done["counts"]
            else:
                done_path.unlink()
                c = None
        else:
            c = None
        if c is None:
            docs, ntok, bad = _encode_unit(src, tok, dtype, sep, cfg.batch_documents,
                                           partial / f"{name}.bin", partial / f"{name}.idx", cfg.bad_rows)
            c = {"documents": docs, "tokens": ntok, "skipped_records": bad}
            tmp = done_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"key": key, "counts": c}))
            os.replace(tmp, done_path)  # the unit counts as done only after its files are durable
        counts[split]["documents"] += c["documents"]
        counts[split]["tokens"] += c["tokens"]
        counts[split]["skipped_records"] += c.get("skipped_records", 0)
        counts[split]["shards"] += 1
    stats = {"dtype": dtype.name, "vocab_size": tok.vocab_size, "separator_id": sep,
             "splits": {s: v for s, v in counts.items() if v["shards"]}}
    extra = {"dtype": dtype.name, "vocab_size": tok.vocab_size, "separator_id": sep,
             "tokenizer_fingerprint": fingerprint, "tokenizer_kind": tok.kind}
    with ArtifactWriter(out, kind=KIND, config=cfg, overwrite=overwrite, extra=extra) as w:
        for split, name in layout:
            (w.path / split).mkdir(exist_ok=True)
            for suffix in (".bin", ".idx"):
                # hard link: partial stays valid until commit
                os.link(partial / f"{name}{suffix}", w.path / f"{name}{suffix}")
        (w.path / "tokenizer").mkdir()
        for fname in TOKENIZER_FILES + ("config.yaml", "manifest.json"):  # a loadable tokenizer artifact
            if (Path(tokenizer) / fname).exists():
                shutil.copy2(Path(tokenizer) / fname, w.path / "tokenizer" / fname)
        (w.path / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(partial, ignore_errors=True)
    seconds = time.perf_counter() - t0
    total = sum(v["tokens"] for v in counts.values())
    return {"out": str(out), **stats, "resumed_units": resumed, "seconds": round(seconds, 2),
            "tokens_per_s": round(total / max(seconds, 1e-9))}


class TokenShards:
    """Read side: one split of a shard directory as memory-mapped arrays.

    Checks, cheaply, that every .bin has the size the manifest records and a whole number of
    ids, and that each .idx ends at the .bin's length (`verify_hashes=True` also re-hashes);
    with `tokenizer`, refuses shards made by a different tokenizer."""

    def __init__(self, directory: str | Path, split: str = "train", tokenizer: Tokenizer | str | Path | None = None,
                 verify_hashes: bool = False):
        self.directory = Path(directory)
        self.split = split
        m = read_manifest(self.directory, KIND)
        self.manifest = m
        self.dtype = np.dtype(m["dtype"])
        if self.dtype not in (np.dtype(np.uint16), np.dtype(np.uint32)):
            raise ArtifactCorrupt(f"{self.directory / 'manifest.json'}: dtype {m['dtype']!r} is not uint16 or uint32")
        self.vocab_size = int(m["vocab_size"])
        if self.dtype == np.uint16 and self.vocab_size > 2**16:
            raise ArtifactCorrupt(f"{self.directory}: manifest says uint16 for a {self.vocab_size}-token vocabulary")
        self.separator_id = m.get("separator_id")
        if tokenizer is not None:
            tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.load(tokenizer)
            if tok.fingerprint != m["tokenizer_fingerprint"]:
                raise ArtifactError(f"{self.directory}: these shards were made with a different tokenizer "
                                    f"(vocab {self.vocab_size}, {m['tokenizer_kind']}) than "
                                    f"{getattr(tok, 'directory', 'the one given')} "
                                    f"(vocab {tok.vocab_size}, {tok.kind}); re-shard or use the tokenizer in "
                                    f"{self.directory / 'tokenizer'}")
        names = sorted(n[: -len(".bin")] for n in m["files"] if n.startswith(f"{split}/") and n.endswith(".bin"))
        if not names:
            splits = sorted({n.split("/")[0] for n in m["files"] if "/" in n and not n.startswith("tokenizer/")})
            raise ArtifactError(f"{self.directory}: no {split!r} split; splits: {', '.join(splits)}")
        self.names = names
        self.shards: list[np.ndarray] = []
        self.offsets: list[np.ndarray] = []
        for name in names:
            bin_path, idx_path = self.directory / f"{name}.bin", self.directory / f"{name}.idx"
            if verify_hashes:
                for p in (bin_path, idx_path):
                    rel = p.relative_to(self.directory).as_posix()
                    if sha256_file(p) != m["files"][rel]["sha256"]:
                        raise ArtifactCorrupt(f"{p}: contents differ from the manifest")
            expected = m["files"][f"{name}.bin"]["bytes"]
            actual = bin_path.stat().st_size if bin_path.exists() else -1
            if actual != expected or actual % self.dtype.itemsize:
                raise ArtifactCorrupt(f"{bin_path}: {actual} bytes, the manifest says {expected} "
                                      f"({expected // self.dtype.itemsize} {self.dtype.name} ids); "
                                      "the shard is truncated or modified — re-run `lmlab data shard`")
            try:
                offs = np.load(idx_path, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise ArtifactCorrupt(f"{idx_path}: not a valid .npy offsets file ({e})") from None
            if not isinstance(offs, np.ndarray):  # a zip (.npz, or a torch .pt) loads as an NpzFile
                raise ArtifactCorrupt(f"{idx_path}: not a .npy offsets file (a zip archive)")
            n = actual // self.dtype.itemsize
            if offs.ndim != 1 or len(offs) == 0 or offs[0] != 0 or offs[-1] != n or np.any(np.diff(offs) < 0):
                raise ArtifactCorrupt(f"{idx_path}: document offsets do not match {bin_path.name} ({n} ids)")
            self.shards.append(np.memmap(bin_path, dtype=self.dtype, mode="r") if n else np.zeros(0, self.dtype))
            self.offsets.append(offs)
        self.num_tokens = sum(len(s) for s in self.shards)
        self.num_documents = sum(len(o) - 1 for o in self.offsets)

    def document(self, i: int) -> np.ndarray:
        """Ids of document i (counting across shards), including its trailing separator."""
        for shard, offs in zip(self.shards, self.offsets):
            if i < len(offs) - 1:
                return np.asarray(shard[offs[i]:offs[i + 1]])
            i -= len(offs) - 1
        raise IndexError("document index out of range")

    def __repr__(self) -> str:
        return (f"TokenShards({str(self.directory)!r}, split={self.split!r}, tokens={self.num_tokens:,}, "
                f"documents={self.num_documents:,}, dtype={self.dtype.name})")


def shard_stats(directory: str | Path) -> dict[str, Any]:
    read_manifest(directory, KIND)
    return read_json(Path(directory) / "stats.json")
