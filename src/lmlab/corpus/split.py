"""Deterministic train/validation/test assignment by a hash of the document text.

A document's split depends only on its (normalised) text and the seed, never on its position,
the number of workers or the other documents, so re-running on a grown corpus keeps every old
document in its split and identical texts can never straddle train and test.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from lmlab.config import check

SPLITS = ("train", "valid", "test")


@dataclass
class SplitConfig:
    valid: float = 0.01  # fraction of documents for validation
    test: float = 0.0  # fraction for test
    seed: int = 0  # changes the assignment

    def __post_init__(self) -> None:
        check(0.0 <= self.valid < 1.0, "split.valid", "must be in [0, 1)")
        check(0.0 <= self.test < 1.0, "split.test", "must be in [0, 1)")
        check(self.valid + self.test < 1.0, "split", "valid + test must be < 1")


def split_of(text: str, cfg: SplitConfig) -> str:
    """'train', 'valid' or 'test': a uniform number from BLAKE2b(seed, text) against the fractions."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=b"lmlab-sp",
                             salt=cfg.seed.to_bytes(8, "little", signed=True)).digest()
    u = int.from_bytes(digest, "little") / 2**64
    if u < cfg.valid:
        return "valid"
    if u < cfg.valid + cfg.test:
        return "test"
    return "train"
