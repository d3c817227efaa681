"""Word2Vec (Mikolov et al. 2013, "Efficient Estimation of Word Representations in Vector
Space" and "Distributed Representations of Words and Phrases and their Compositionality"):
skip-gram or CBOW, negative sampling or hierarchical softmax, frequent-word subsampling
(threshold ``sample``, eq. 5 of the second paper as word2vec.c implements it), linearly
decaying learning rate, multi-core.

Why this wraps gensim instead of reimplementing: gensim's Cython/BLAS kernels *are* the
reference implementation that lmlab is measured against (BENCHMARKS.md), and in ``corpus_file`` mode each worker
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
- a loss curve that means something, and a progress bar. gensim's own tally
  (``compute_loss``) is a float32 running sum (gensim issue #2735: it saturates) and, with
  several workers, each worker overwrites the shared tally with its own copy, so per-epoch
  figures jump around. For negative sampling lmlab instead evaluates, after every epoch, the
  exact objective −log σ(v'_o·h) − Σ_k log σ(−v'_k·h) (h: the input vector for skip-gram, the
  context mean for CBOW) on a fixed probe of ``loss_probe`` (position, context) pairs with
  fixed noise words drawn from the unigram^0.75 distribution — a curve comparable across
  epochs and runs; gensim's ``compute_loss`` is then off, as it slows training noticeably
  (see BENCHMARKS.md); the probe costs ~0.3 s per epoch.
  For hierarchical softmax the loss is gensim's tally (reset each epoch, also kept in stats
  as ``gensim_loss_tally``).
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
    loss_probe: int = 20_000  # (position, context) pairs on which the per-epoch loss is measured

    def __post_init__(self) -> None:
        check(self.negative >= 1 or self.objective == "hs", "word2vec.negative", "must be >= 1 for negative sampling")
        check(0 <= self.sample < 1, "word2vec.sample", "must be in [0, 1)")
        check(self.alpha >= 0 and self.min_alpha >= 0, "word2vec.alpha", "learning rates must be >= 0")

    @property
    def start_alpha(self) -> float:
        return self.alpha or (0.025 if self.architecture == "skipgram" else 0.05)


def _crc32_hash(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


class LossProbe:
    """A fixed sample of training examples on which the negative-sampling objective is
    evaluated after each epoch (see the module docstring)."""

    def __init__(self, corpus: EncodedCorpus, window: int, negative: int, n: int, cbow: bool, seed: int):
        rng = np.random.default_rng(seed + 7919)
        ids = corpus.ids()
        ends = corpus.line_ends
        starts = np.concatenate([[0], ends[:-1]])
        pos = np.sort(rng.integers(0, len(ids), size=min(n, len(ids))))
        line = np.searchsorted(ends, pos, side="right")
        lo, hi = starts[line], ends[line]
        offsets = np.arange(-window, window + 1)
        offsets = offsets[offsets != 0]
        ctx = pos[:, None] + offsets[None, :]  # [n, 2·window]
        valid = (ctx >= lo[:, None]) & (ctx < hi[:, None])
        keep = valid.any(1)
        self.center = np.asarray(ids[pos[keep]], dtype=np.int64)
        self.context = np.where(valid[keep], np.asarray(ids[np.clip(ctx[keep], 0, len(ids) - 1)]), -1)
        noise = corpus.vocab.counts.astype(np.float64) ** 0.75
        self.noise = rng.choice(len(noise), size=(len(self.center), negative), p=noise / noise.sum())
        self.cbow = cbow

    def loss(self, w_in: np.ndarray, w_out: np.ndarray) -> float:
        """Mean objective per example; `w_in`/`w_out` are [V, d] in lmlab vocabulary order."""
        if len(self.center) == 0:
            return float("nan")
        logsig = lambda z: -np.logaddexp(0.0, -z)  # noqa: E731  log σ(z), stable
        mask = self.context >= 0
        if self.cbow:  # h = mean of the context inputs, target = the centre word
            h = (w_in[np.where(mask, self.context, 0)] * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            pos = logsig(np.einsum("nd,nd->n", h, w_out[self.center]))
            neg = logsig(-np.einsum("nd,nkd->nk", h, w_out[self.noise])).sum(1)
            return float(-(pos + neg).mean())
        h = w_in[self.center]  # skip-gram: each (centre, context) pair is an example
        pos = logsig(np.einsum("nd,ncd->nc", h, w_out[np.where(mask, self.context, 0)]))
        neg = logsig(-np.einsum("nd,nkd->nk", h, w_out[self.noise])).sum(1, keepdims=True)
        return float(-((pos + neg) * mask).sum() / mask.sum())


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
    tallies: list[float] = []
    probe = None
    if cfg.objective == "negative" and cfg.loss_probe > 0:
        probe = LossProbe(corpus, window, cfg.negative, cfg.loss_probe, cfg.architecture == "cbow", seed)
    bar = tqdm(total=epochs, unit="epoch", desc="word2vec", disable=not progress or None)

    class EpochEnd(CallbackAny2Vec):
        def on_epoch_end(self, model: Word2Vec) -> None:
            if probe is not None:
                losses.append(probe.loss(model.wv.vectors[order], model.syn1neg[order]))
            else:
                tallies.append(float(model.get_latest_training_loss()))
                model.running_training_loss = 0.0
                losses.append(tallies[-1])
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4g}")

    model = Word2Vec(
        vector_size=dim, window=window, min_count=1, workers=threads, seed=seed,
        sg=int(cfg.architecture == "skipgram"), hs=int(cfg.objective == "hs"),
        negative=cfg.negative if cfg.objective == "negative" else 0, sample=cfg.sample,
        alpha=cfg.start_alpha, min_alpha=cfg.min_alpha, cbow_mean=int(cfg.cbow_mean),
        hashfxn=_crc32_hash, compute_loss=probe is None, sorted_vocab=1,
    )
    model.build_vocab_from_freq({str(i): int(c) for i, c in enumerate(corpus.vocab.counts)})
    order = np.array([model.wv.key_to_index[str(i)] for i in range(len(corpus.vocab))])  # lmlab id → gensim row
    t1 = time.perf_counter()
    model.train(corpus_file=str(text_path), total_words=corpus.tokens_kept, epochs=epochs,
                callbacks=[EpochEnd()], compute_loss=probe is None)
    t_train = time.perf_counter() - t1
    bar.close()
    vectors = np.asarray(model.wv.vectors[order], dtype=np.float32)
    text_path.unlink()
    stats = {
        "loss_per_epoch": losses,
        "loss_note": (f"negative-sampling objective per example on a fixed probe of {cfg.loss_probe} positions"
                      if probe is not None else "gensim's float32 tally of the objective, reset each epoch"),
        "gensim_loss_tally": tallies,
        "time_s": {"write_ids": round(t_write, 3), "train": round(t_train, 3)},
        "words_per_s": round(corpus.tokens_kept * epochs / max(t_train, 1e-9)),
    }
    return vectors, stats
