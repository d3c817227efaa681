"""Word2Vec (Mikolov et al. 2013, "Efficient Estimation of Word Representations in Vector
Space" and "Distributed Representations of Words and Phrases and their Compositionality"):
skip-gram or CBOW, negative sampling or hierarchical softmax, frequent-word subsampling
(threshold ``sample``, eq. 5 of the second paper as word2vec.c implements it), linearly
decaying learning rate, multi-core.

Why this wraps gensim instead of reimplementing: gensim's Cython/BLAS kernels *are* the
reference implementation the issue measures against, and in ``corpus_file`` mode each worker
reads its own slice of a file without the GIL, so it scales with cores. A rewrite would have to
beat that speed at equal quality to be worth its maintenance; the things lmlab adds are done
around gensim instead:

- lmlab's tokenisation and vocabulary (`lmlab.embeddings.vocab`), so both trainers and the
  model vocabulary agree; gensim is handed the id stream as text (``"17 4 933"`` lines) and
  the counts via ``build_vocab_from_freq``, and never tokenises anything itself.
- reproducibility: gensim seeds each word's initial vector from ``hashfxn(word + seed)``,
  Python's randomised ``hash`` by default; lmlab passes a CRC32 hash, so a run with
  ``threads=1`` and a seed is bit-reproducible across processes (checked in the tests). With
  more threads, Hogwild updates race and runs differ in the last bits (as in word2vec.c).
- a per-epoch loss and a progress bar. The loss is gensim's own tally (``compute_loss``),
  reset at each epoch end: gensim accumulates it in float32 (gensim issue #2735, which makes
  the cumulative figure saturate); resetting per epoch keeps each epoch's figure meaningful,
  but it is still a float32 sum and only approximate for very large epochs.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from lmlab.config import check
from lmlab.embeddings.vocab import EncodedCorpus


@dataclass
class Word2VecConfig:
    architecture: Literal["skipgram", "cbow"] = "skipgram"
    objective: Literal["negative", "hs"] = "negative"  # negative sampling or hierarchical softmax
    negative: int = 5  # noise words per positive example (objective=negative)
    sample: float = 1e-3  # subsampling threshold for frequent words (0: off)
    alpha: float = 0.0  # initial learning rate; 0 = word2vec.c's default (0.025 skip-gram, 0.05 CBOW)
    min_alpha: float = 1e-4  # learning rate at the end of the last epoch (linear decay)
    cbow_mean: bool = True  # CBOW averages (True) or sums (False) the context vectors

    def __post_init__(self) -> None:
        check(self.negative >= 1 or self.objective == "hs", "word2vec.negative", "must be >= 1 for negative sampling")
        check(0 <= self.sample < 1, "word2vec.sample", "must be in [0, 1)")
        check(self.alpha >= 0 and self.min_alpha >= 0, "word2vec.alpha", "learning rates must be >= 0")

    @property
    def start_alpha(self) -> float:
        return self.alpha or (0.025 if self.architecture == "skipgram" else 0.05)


def _crc32_hash(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def write_id_lines(corpus: EncodedCorpus, path: Path) -> None:
    """The id stream as gensim's LineSentence text: one line per non-empty document."""
    with open(path, "w", encoding="ascii") as f:
        for ids, ends in corpus.blocks():
            start = 0
            text = ids.astype(str)
            for end in ends.tolist():
                if end > start:
                    f.write(" ".join(text[start:end]))
                    f.write("\n")
                start = end


def train_word2vec(corpus: EncodedCorpus, cfg: Word2VecConfig, dim: int, window: int, epochs: int,
                   threads: int, seed: int, workdir: Path, progress: bool = True) -> tuple[np.ndarray, dict]:
    """Train on an encoded corpus; return (vectors float32 [V, dim] in vocabulary order, stats)."""
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec
    from tqdm import tqdm

    t0 = time.perf_counter()
    text_path = workdir / "ids.txt"
    write_id_lines(corpus, text_path)
    t_write = time.perf_counter() - t0
    losses: list[float] = []
    bar = tqdm(total=epochs, unit="epoch", desc="word2vec", disable=not progress or None)

    class EpochEnd(CallbackAny2Vec):
        def on_epoch_end(self, model: Word2Vec) -> None:
            losses.append(float(model.get_latest_training_loss()))
            model.running_training_loss = 0.0
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4g}")

    model = Word2Vec(
        vector_size=dim, window=window, min_count=1, workers=threads, seed=seed,
        sg=int(cfg.architecture == "skipgram"), hs=int(cfg.objective == "hs"),
        negative=cfg.negative if cfg.objective == "negative" else 0, sample=cfg.sample,
        alpha=cfg.start_alpha, min_alpha=cfg.min_alpha, cbow_mean=int(cfg.cbow_mean),
        hashfxn=_crc32_hash, compute_loss=True, sorted_vocab=1,
    )
    model.build_vocab_from_freq({str(i): int(c) for i, c in enumerate(corpus.vocab.counts)})
    t1 = time.perf_counter()
    model.train(corpus_file=str(text_path), total_words=corpus.tokens_kept, epochs=epochs,
                callbacks=[EpochEnd()], compute_loss=True)
    t_train = time.perf_counter() - t1
    bar.close()
    order = np.array([model.wv.key_to_index[str(i)] for i in range(len(corpus.vocab))])
    vectors = np.asarray(model.wv.vectors[order], dtype=np.float32)
    text_path.unlink()
    stats = {
        "loss_per_epoch": losses,
        "loss_note": "gensim's float32 tally of the training objective, reset each epoch",
        "time_s": {"write_ids": round(t_write, 3), "train": round(t_train, 3)},
        "words_per_s": round(corpus.tokens_kept * epochs / max(t_train, 1e-9)),
    }
    return vectors, stats
