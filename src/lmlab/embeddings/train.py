"""``lmlab embed train``: corpus files → a `WordVectors` artifact, with Word2Vec or GloVe.

One pass tokenises the corpus into a temporary id stream (`lmlab.embeddings.vocab`); the
chosen trainer reads it; the artifact gets the vectors, the vocabulary with counts, the
resolved ``config.yaml`` and a ``stats.json`` (vocabulary size, tokens seen and kept, loss per
epoch, time per stage). Nothing is left behind on error or interrupt.

Scratch files (the id stream, GloVe's spilled runs and co-occurrence triples: about 4 bytes per
token plus 12 bytes per non-zero co-occurrence) go to a temporary directory under ``$TMPDIR``;
point it at a disk-backed directory when ``/tmp`` is a RAM-backed tmpfs and the corpus is large.

Config (``--section.field=value`` overrides; recipes hold overrides only)::

    algo: word2vec | glove        dim, window, epochs, threads, seed
    vocab:    tokenizer, lowercase, min_count, max_vocab          (lmlab.embeddings.vocab)
    word2vec: architecture, objective, negative, sample, alpha…   (lmlab.embeddings.word2vec)
    glove:    x_max, alpha, learning_rate, memory_mb…             (lmlab.embeddings.glove)
"""

from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmlab.config import check, load_config
from lmlab.embeddings.glove import GloVeConfig
from lmlab.embeddings.vectors import WordVectors
from lmlab.embeddings.vocab import VocabConfig, encode_corpus
from lmlab.embeddings.word2vec import Word2VecConfig


@dataclass
class EmbedConfig:
    algo: Literal["word2vec", "glove"] = "word2vec"
    dim: int = 100  # vector size
    window: int = 5  # context words on each side
    epochs: int = 5  # passes over the corpus (GloVe: over the co-occurrence matrix)
    threads: int = 2  # worker threads; 1 makes a seeded run bit-reproducible
    seed: int = 1
    vocab: VocabConfig = field(default_factory=VocabConfig)
    word2vec: Word2VecConfig = field(default_factory=Word2VecConfig)
    glove: GloVeConfig = field(default_factory=GloVeConfig)

    def __post_init__(self) -> None:
        check(self.dim >= 1, "dim", "must be >= 1")
        check(self.window >= 1, "window", "must be >= 1")
        check(self.epochs >= 1, "epochs", "must be >= 1")
        check(self.threads >= 1, "threads", "must be >= 1")
        check(self.seed >= 0, "seed", "must be >= 0")


def train_embeddings(corpus: list[str], out: str, algo: str | None = None, dim: int | None = None,
                     window: int | None = None, min_count: int | None = None, epochs: int | None = None,
                     tokenizer: str | None = None, threads: int | None = None, seed: int | None = None,
                     config: str | None = None, overrides: list[str] = (), overwrite: bool = False,
                     progress: bool = True) -> dict:
    """Train word vectors on `corpus` (files or directories) and write them to `out`.

    Explicit arguments are applied over the recipe `config`; ``--section.field=value``
    `overrides` come last. Returns the stats written to ``stats.json``.
    """
    flags = {"algo": algo, "dim": dim, "window": window, "epochs": epochs, "threads": threads,
             "seed": seed, "vocab.min_count": min_count, "vocab.tokenizer": tokenizer}
    cfg = load_config(EmbedConfig, config, [f"--{k}={v}" for k, v in flags.items() if v is not None]
                      + list(overrides))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lmlab-embed-") as tmp:
        enc = encode_corpus(corpus, cfg.vocab, tmp, progress=progress)
        t_tok = time.perf_counter() - t0
        if cfg.algo == "word2vec":
            from lmlab.embeddings.word2vec import train_word2vec

            vectors, algo_stats = train_word2vec(enc, cfg.word2vec, cfg.dim, cfg.window, cfg.epochs,
                                                 cfg.threads, cfg.seed, Path(tmp), progress)
        else:
            from lmlab.embeddings.glove import train_glove

            vectors, algo_stats = train_glove(enc, cfg.glove, cfg.dim, cfg.window, cfg.epochs,
                                              cfg.threads, cfg.seed, Path(tmp), progress)
    stats = {
        "algo": cfg.algo,
        "vocab_size": len(enc.vocab),
        "dim": cfg.dim,
        "lines": enc.lines,
        "tokens_seen": enc.tokens_seen,
        "tokens_kept": enc.tokens_kept,
        **algo_stats,
        "time_s": {"tokenize": round(t_tok, 3), **algo_stats.get("time_s", {}),
                   "total": round(time.perf_counter() - t0, 3)},
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "threads": cfg.threads},
    }
    WordVectors(enc.vocab.words, vectors, enc.vocab.counts).save(out, config=cfg, stats=stats,
                                                                 overwrite=overwrite)
    return stats
