"""Cleaning one chunk of raw records: decode → normalise → filter → hash → split → serialise (workers).

Kept free of heavy imports (no torch) so that spawned worker processes start fast. A worker
builds its `Normalizer`, `DocumentFilter` and `MinHasher` once (`init_worker`) and returns, per
chunk, the surviving texts with their keys and signatures; every decision that depends on
other chunks (deduplication, output order) is left to the single consumer, which is what makes
the output identical for any number of workers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmlab.corpus.dedup import DedupConfig, MinHasher, exact_key
from lmlab.corpus.filters import DocumentFilter, FilterConfig
from lmlab.corpus.normalize import NormalizeConfig, Normalizer
from lmlab.corpus.decode import decode_chunk
from lmlab.corpus.read import Chunk, Counters, ReadConfig
from lmlab.corpus.split import SplitConfig, split_of


@dataclass
class ChunkResult:
    index: int
    refs: list[str] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)  # the output JSON line of each document
    chars: list[int] = field(default_factory=list)  # characters of each document
    splits: list[str] = field(default_factory=list)  # train / valid / test, by hash
    keys: np.ndarray | None = None  # [n] uint64 exact keys
    sigs: np.ndarray | None = None  # [n, num_perm] uint32 MinHash signatures
    docs_in: int = 0
    chars_in: int = 0
    bytes_in: int = 0
    counters: Counters | None = None  # decoding events (replaced bytes, bad rows, …)
    drops: Counters | None = None  # filter reasons


class ChunkCleaner:
    def __init__(self, read: ReadConfig, normalize: NormalizeConfig, filt: FilterConfig, dedup: DedupConfig,
                 split: SplitConfig):
        self.read = read
        self.split = split
        self.normalize = Normalizer(normalize)
        self.filter = DocumentFilter(filt)
        self.dedup = dedup
        self.minhash = MinHasher(dedup.num_perm, dedup.shingle, dedup.seed) if dedup.near else None

    def __call__(self, chunk: Chunk) -> ChunkResult:
        res = ChunkResult(chunk.index, counters=Counters(self.read.examples), drops=Counters(self.read.examples))
        res.bytes_in = chunk.nbytes
        sigs, keys = [], []
        for raw, ref in decode_chunk(chunk, self.read, res.counters):
            res.docs_in += 1
            res.chars_in += len(raw)
            text = self.normalize(raw)
            reason = self.filter(text)
            if reason is not None:
                res.drops.add(reason, ref)
                continue
            res.refs.append(ref)
            # serialising here, not in the single consumer, is what lets workers scale
            res.lines.append((json.dumps({"text": text, "source": ref}, ensure_ascii=False) + "\n").encode("utf-8"))
            res.chars.append(len(text))
            res.splits.append(split_of(text, self.split))
            keys.append(exact_key(text))
            if self.minhash is not None:
                sigs.append(self.minhash.signature(text))
        res.keys = np.array(keys, dtype=np.uint64)
        if self.minhash is not None:
            res.sigs = np.stack(sigs) if sigs else np.zeros((0, self.dedup.num_perm), dtype=np.uint32)
        return res


_CLEANER: ChunkCleaner | None = None


def init_worker(configs: dict[str, Any]) -> None:
    """Process-pool initializer: build the cleaner once per worker from plain-dict configs."""
    global _CLEANER
    from lmlab.config import from_dict

    _CLEANER = ChunkCleaner(from_dict(ReadConfig, configs["read"]), from_dict(NormalizeConfig, configs["normalize"]),
                            from_dict(FilterConfig, configs["filter"]), from_dict(DedupConfig, configs["dedup"]),
                            from_dict(SplitConfig, configs["split"]))


def clean_chunk(chunk: Chunk) -> ChunkResult:
    assert _CLEANER is not None, "init_worker was not called"
    return _CLEANER(chunk)
