"""GloVe (Pennington, Socher & Manning 2014, "GloVe: Global Vectors for Word Representation"),
in three stages like the Stanford C tools (cooccur, shuffle, glove), with numba kernels.

1. **Counting.** For each token at position p and each context token within ``window`` to its
   left in the same line, at distance d, add 1/d (eq. 8's weighting; 1 with
   ``distance_weighting=False``) to X[w_p, w_q] *and* X[w_q, w_p] (the symmetric window of the
   C tools, so the diagonal X[w, w] gets 2/d per pair). Memory stays under ``memory_mb``: pairs
   of frequent words, where (rank_a + 1)(rank_b + 1) ≤ P, go to a dense triangular table (the
   C tools' "bigram table"), P sized to a quarter of the budget; the rest are packed as
   ``(pair · window + d − 1)`` in an int64 buffer (another quarter) that, when full, is sorted
   in place, reduced to (pair, Σ 1/d) (a third quarter for the values) and spilled to disk as a
   sorted run; peak memory while counting is about ¾ of the budget. Runs and the dense table are
   merged pairwise from memory-mapped files. The count is single-threaded and deterministic.
2. **Shuffling.** The merged upper triangle is expanded to both directions as (i, j, X_ij)
   triples in memory-mapped files and shuffled with seeded Fisher–Yates: in one piece when
   the triples fit in half the budget, else in shuffle.c's two passes (shuffle each block,
   then build the output from rounds that draw an equal slice from every block, shuffled
   together) — sequential I/O only, bounded memory, an approximately uniform permutation.
3. **Training.** Weighted least squares, eq. 8:
   J = Σ f(X_ij) (w_iᵀ w̃_j + b_i + b̃_j − log X_ij)², f(x) = min(1, (x / x_max)^α),
   with AdaGrad (squared-gradient accumulators start at 1; each gradient component is clipped
   to ±``grad_clip`` before the step η·g, as in the current glove.c — whose bias step, unlike
   the vectors', has no η since clipping was added; lmlab keeps η on the biases as the
   original release did) and Hogwild threads: each thread walks its own contiguous slice
   of the shuffled triples, updating shared parameters without locks. The reported loss is
   glove.c's: Σ ½ f(X) diff² over the epoch divided by the number of triples. The output is
   W + W̃ (§4.2 of the paper; glove.c ``-model 2``).

Reproducibility: counting and shuffling are deterministic for a seed; training is
bit-reproducible with ``threads=1`` only (Hogwild races otherwise).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numba
import numpy as np
from numba import njit, prange

from lmlab.config import check
from lmlab.embeddings.vocab import EncodedCorpus


@dataclass
class GloVeConfig:
    x_max: float = 100.0  # co-occurrence count at which the weight f(x) reaches 1
    alpha: float = 0.75  # exponent of the weighting function
    learning_rate: float = 0.05  # AdaGrad initial step (glove.c -eta)
    grad_clip: float = 100.0  # per-component gradient clip (glove.c)
    distance_weighting: bool = True  # add 1/d for a pair d words apart (False: add 1)
    memory_mb: int = 1024  # counting budget: dense table ¼, pair buffer ¼, its values at a flush ¼
    output: Literal["sum", "word"] = "sum"  # W + W̃, or W alone

    def __post_init__(self) -> None:
        check(self.x_max > 0, "glove.x_max", "must be > 0")
        check(0 < self.alpha <= 1.5, "glove.alpha", "must be in (0, 1.5]")
        check(self.learning_rate > 0, "glove.learning_rate", "must be > 0")
        check(self.grad_clip > 0, "glove.grad_clip", "must be > 0")
        check(self.memory_mb >= 8, "glove.memory_mb", "must be >= 8")


# ---------------------------------------------------------------------------- 1. counting
def dense_layout(vocab_size: int, max_entries: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the dense triangle: row a holds b ∈ [a, lim[a]) where (a+1)(b+1) ≤ P, with the
    largest P whose table fits `max_entries` cells. Returns (lim, offset) int64 [V], [V+1]."""
    def layout(p: int) -> tuple[np.ndarray, np.ndarray]:
        a = np.arange(vocab_size, dtype=np.int64)
        lim = np.minimum(vocab_size, p // (a + 1))  # b + 1 ≤ P/(a+1)  ⇔  b < P//(a+1)
        lim = np.maximum(lim, a)  # empty row when a ≥ lim
        off = np.zeros(vocab_size + 1, dtype=np.int64)
        np.cumsum(lim - a, out=off[1:])
        return lim, off

    lo, hi = 0, vocab_size * vocab_size
    while lo < hi:  # largest P with table size ≤ max_entries
        mid = (lo + hi + 1) // 2
        if layout(mid)[1][-1] <= max_entries:
            lo = mid
        else:
            hi = mid - 1
    return layout(lo)


@njit(nogil=True, cache=True)
def _count_pairs(ids, line_ends, line0, pos0, window, weighting, lim, off, dense, buf, n, vocab_size):
    """Count from (line0, pos0) until the buffer cannot take another token's pairs.
    Returns (buffer fill, next line, next position); next line == len(line_ends) when done."""
    cap = len(buf)
    for li in range(line0, len(line_ends)):
        s = 0 if li == 0 else line_ends[li - 1]
        e = line_ends[li]
        p = s if li != line0 else max(s, pos0)
        while p < e:
            if n + window > cap:
                return n, li, p
            w1 = ids[p]
            q = max(s, p - window)
            while q < p:
                w2 = ids[q]
                d = p - q
                a, b = (w1, w2) if w1 <= w2 else (w2, w1)
                if b < lim[a]:
                    dense[off[a] + b - a] += 1.0 / d if weighting else 1.0
                else:
                    buf[n] = (np.int64(a) * vocab_size + b) * window + (d - 1)
                    n += 1
                q += 1
            p += 1
    return n, len(line_ends), 0


@njit(nogil=True, cache=True)
def _reduce_packed(packed, window, weighting, keys, vals):
    """Sorted packed (pair·window + d − 1) → unique pairs with Σ 1/d. Returns the count."""
    n = -1
    last = -1
    for k in range(len(packed)):
        pair = packed[k] // window
        x = 1.0 / (packed[k] % window + 1) if weighting else 1.0
        if pair != last:
            n += 1
            keys[n] = pair
            vals[n] = 0.0
            last = pair
        vals[n] += x
    return n + 1


@njit(nogil=True, cache=True)
def _dense_to_run(lim, off, dense, vocab_size, keys, vals):
    n = 0
    for a in range(len(lim)):
        for b in range(a, lim[a]):
            x = dense[off[a] + b - a]
            if x != 0.0:
                keys[n] = np.int64(a) * vocab_size + b
                vals[n] = x
                n += 1
    return n


@njit(nogil=True, cache=True)
def _merge(ak, av, bk, bv, ok, ov):
    i = j = n = 0
    while i < len(ak) and j < len(bk):
        if ak[i] < bk[j]:
            ok[n] = ak[i]; ov[n] = av[i]; i += 1  # noqa: E702
        elif bk[j] < ak[i]:
            ok[n] = bk[j]; ov[n] = bv[j]; j += 1  # noqa: E702
        else:
            ok[n] = ak[i]; ov[n] = av[i] + bv[j]; i += 1; j += 1  # noqa: E702
        n += 1
    while i < len(ak):
        ok[n] = ak[i]; ov[n] = av[i]; i += 1; n += 1  # noqa: E702
    while j < len(bk):
        ok[n] = bk[j]; ov[n] = bv[j]; j += 1; n += 1  # noqa: E702
    return n


class _Runs:
    """Sorted (pair key, value) runs as memory-mapped .npy files in a work directory."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []
        self.made = 0
        self.spilled = 0

    def _alloc(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        from numpy.lib.format import open_memmap

        self.made += 1
        k = open_memmap(self.workdir / f"run{self.made}.keys.npy", "w+", np.int64, (max(n, 1),))
        v = open_memmap(self.workdir / f"run{self.made}.vals.npy", "w+", np.float64, (max(n, 1),))
        return k, v

    def add(self, keys: np.ndarray, vals: np.ndarray) -> None:
        k, v = self._alloc(len(keys))
        k[: len(keys)] = keys
        v[: len(vals)] = vals
        self.runs.append((k[: len(keys)], v[: len(vals)]))
        self.spilled += 1

    def merged(self) -> tuple[np.ndarray, np.ndarray]:
        """Merge pairwise until one run is left."""
        runs = self.runs
        if not runs:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        while len(runs) > 1:
            nxt = []
            for r in range(0, len(runs) - 1, 2):
                (ak, av), (bk, bv) = runs[r], runs[r + 1]
                ok, ov = self._alloc(len(ak) + len(bk))
                n = _merge(ak, av, bk, bv, ok, ov)
                nxt.append((ok[:n], ov[:n]))
            if len(runs) % 2:
                nxt.append(runs[-1])
            runs = nxt
        return runs[0]


def count_cooccurrences(corpus: EncodedCorpus, window: int, workdir: Path, memory_mb: int = 1024,
                        distance_weighting: bool = True, dense_cells: int | None = None,
                        buffer_pairs: int | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Upper-triangle co-occurrence counts as sorted (key = i·V + j with i ≤ j, X_ij) arrays,
    memory-mapped from `workdir`, plus counting stats. X_ii holds one direction's sum.
    `dense_cells`/`buffer_pairs` override the sizes derived from `memory_mb` (tests)."""
    v = len(corpus.vocab)
    if v * v * window >= 2**62:
        raise ValueError(f"vocabulary of {v} words is too large for 64-bit pair keys at window {window}")
    budget = memory_mb * 2**20
    lim, off = dense_layout(v, dense_cells if dense_cells is not None else budget // 4 // 8)
    dense = np.zeros(max(int(off[-1]), 1), dtype=np.float64)
    buf = np.empty(max(buffer_pairs or budget // 4 // 8, window + 1), dtype=np.int64)
    runs = _Runs(workdir)
    n_buffered = 0
    for ids, ends in corpus.blocks():
        line, pos, n = 0, 0, 0
        while line < len(ends):
            n, line, pos = _count_pairs(ids, ends, line, pos, window, distance_weighting,
                                        lim, off, dense, buf, n_buffered, v)
            n_buffered = n
            if line < len(ends):  # buffer full mid-block
                _flush(buf, n_buffered, window, distance_weighting, runs)
                n_buffered = 0
    if n_buffered:
        _flush(buf, n_buffered, window, distance_weighting, runs)
    del buf
    dk, dv = runs._alloc(int(np.count_nonzero(dense)))
    n = _dense_to_run(lim, off, dense, v, dk, dv)
    dense_entries = n
    del dense
    runs.runs.append((dk[:n], dv[:n]))
    keys, vals = runs.merged()
    stats = {"nonzero_upper": int(len(keys)), "dense_table_pairs": int(off[-1]),
             "dense_nonzero": int(dense_entries), "runs_spilled": runs.spilled}
    return keys, vals, stats


def _flush(buf: np.ndarray, n: int, window: int, weighting: bool, runs: _Runs) -> None:
    packed = buf[:n]
    packed.sort()  # in place: no second buffer
    vals = np.empty(n, np.float64)
    m = _reduce_packed(packed, window, weighting, packed, vals)  # keys overwrite the packed pairs (m ≤ k)
    runs.add(packed[:m], vals[:m])


# ---------------------------------------------------------------------------- 2. shuffling
@njit(nogil=True, cache=True)
def _expand(keys, vals, vocab_size, rows, cols, xs):
    n = 0
    for k in range(len(keys)):
        i = keys[k] // vocab_size
        j = keys[k] % vocab_size
        if i == j:
            rows[n] = i; cols[n] = i; xs[n] = 2.0 * vals[k]; n += 1  # noqa: E702
        else:
            rows[n] = i; cols[n] = j; xs[n] = vals[k]; n += 1  # noqa: E702
            rows[n] = j; cols[n] = i; xs[n] = vals[k]; n += 1  # noqa: E702
    return n


@njit(nogil=True, cache=True)
def _shuffle(rows, cols, xs, seed):
    np.random.seed(seed)
    for k in range(len(rows) - 1, 0, -1):
        r = np.random.randint(0, k + 1)
        rows[k], rows[r] = rows[r], rows[k]
        cols[k], cols[r] = cols[r], cols[k]
        xs[k], xs[r] = xs[r], xs[k]


def cooccurrence_triples(keys: np.ndarray, vals: np.ndarray, vocab_size: int, workdir: Path,
                         seed: int | None = 0, chunk: int = 1 << 26) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both directions as (rows int32, cols int32, X float32) memory-mapped from `workdir`,
    shuffled if `seed` is not None, holding at most `chunk` triples in memory at a time."""
    from numpy.lib.format import open_memmap

    diag = int(np.count_nonzero(keys // vocab_size == keys % vocab_size)) if len(keys) else 0
    total = 2 * len(keys) - diag
    shape = (max(total, 1),)
    rows = open_memmap(workdir / "triples.rows.npy", "w+", np.int32, shape)
    cols = open_memmap(workdir / "triples.cols.npy", "w+", np.int32, shape)
    xs = open_memmap(workdir / "triples.x.npy", "w+", np.float32, shape)
    n = _expand(keys, vals, vocab_size, rows, cols, xs)
    rows, cols, xs = rows[:n], cols[:n], xs[:n]
    if seed is None:
        return rows, cols, xs
    if n <= chunk:  # fits: one Fisher–Yates in memory, written back
        block = [np.array(a) for a in (rows, cols, xs)]
        _shuffle(*block, seed)
        for a, b in zip((rows, cols, xs), block):
            a[:] = b
        return rows, cols, xs
    return _external_shuffle(rows, cols, xs, workdir, seed, chunk)


def _external_shuffle(rows, cols, xs, workdir: Path, seed: int, chunk: int):
    """shuffle.c's two passes: shuffle each `chunk`-sized block in place, then build the output
    from rounds that take an equal slice of every block, shuffled together."""
    from numpy.lib.format import open_memmap

    n = len(rows)
    starts = list(range(0, n, chunk))
    for k, s in enumerate(starts):  # pass 1: sequential read, shuffle, write back
        block = [np.array(a[s:s + chunk]) for a in (rows, cols, xs)]
        _shuffle(*block, seed + k)
        for a, b in zip((rows, cols, xs), block):
            a[s:s + len(b)] = b
    out = [open_memmap(workdir / f"shuffled.{name}.npy", "w+", a.dtype, (n,))
           for name, a in zip(("rows", "cols", "x"), (rows, cols, xs))]
    per_round = max(1, chunk // len(starts))
    pos = 0
    for r, off in enumerate(range(0, chunk, per_round)):  # pass 2: interleave the blocks
        pieces = [[a[s + off:min(s + off + per_round, s + chunk, n)] for s in starts] for a in (rows, cols, xs)]
        block = [np.concatenate(p) for p in pieces]
        _shuffle(*block, seed + len(starts) + r)
        for a, b in zip(out, block):
            a[pos:pos + len(b)] = b
        pos += len(block[0])
    return tuple(out)


# ---------------------------------------------------------------------------- 3. training
@njit(parallel=True, nogil=True, fastmath=True, cache=True)
def glove_epoch(rows, cols, xs, W, Wt, b, bt, gW, gWt, gb, gbt, x_max, alpha, eta, clip, n_threads):
    """One AdaGrad pass over the triples, Hogwild over `n_threads` contiguous slices.
    W, Wt: float32 [V, d]; b, bt: float32 [V]; g*: their squared-gradient sums. Returns Σ ½ f·diff²."""
    total = len(rows)
    d = W.shape[1]
    costs = np.zeros(n_threads)
    for t in prange(n_threads):
        lo = t * total // n_threads
        hi = (t + 1) * total // n_threads
        cost = 0.0
        for e in range(lo, hi):
            i = rows[e]
            j = cols[e]
            x = xs[e]
            diff = b[i] + bt[j] - math.log(x)
            for k in range(d):
                diff += W[i, k] * Wt[j, k]
            fdiff = diff if x > x_max else (x / x_max) ** alpha * diff
            cost += 0.5 * fdiff * diff
            for k in range(d):
                g1 = min(max(fdiff * Wt[j, k], -clip), clip) * eta  # η · ∂J/∂w_i, clipped first
                g2 = min(max(fdiff * W[i, k], -clip), clip) * eta  # η · ∂J/∂w̃_j
                W[i, k] -= g1 / math.sqrt(gW[i, k])
                Wt[j, k] -= g2 / math.sqrt(gWt[j, k])
                gW[i, k] += g1 * g1
                gWt[j, k] += g2 * g2
            fdiff *= eta  # η · ∂J/∂b_i = η · ∂J/∂b̃_j
            b[i] -= fdiff / math.sqrt(gb[i])
            bt[j] -= fdiff / math.sqrt(gbt[j])
            gb[i] += fdiff * fdiff
            gbt[j] += fdiff * fdiff
        costs[t] = cost
    return costs.sum()


@dataclass
class GloVeParams:
    W: np.ndarray
    Wt: np.ndarray
    b: np.ndarray
    bt: np.ndarray
    gW: np.ndarray
    gWt: np.ndarray
    gb: np.ndarray
    gbt: np.ndarray

    @classmethod
    def init(cls, vocab_size: int, dim: int, seed: int) -> "GloVeParams":
        """glove.c's init: uniform in [−0.5, 0.5) / dim; squared-gradient sums start at 1."""
        rng = np.random.default_rng(seed)

        def u(*shape: int) -> np.ndarray:
            return ((rng.random(shape, dtype=np.float32) - 0.5) / dim).astype(np.float32)

        ones = lambda *s: np.ones(s, np.float32)  # noqa: E731
        return cls(u(vocab_size, dim), u(vocab_size, dim), u(vocab_size), u(vocab_size),
                   ones(vocab_size, dim), ones(vocab_size, dim), ones(vocab_size), ones(vocab_size))

    def epoch(self, rows, cols, xs, cfg: GloVeConfig, threads: int) -> float:
        return float(glove_epoch(rows, cols, xs, self.W, self.Wt, self.b, self.bt, self.gW, self.gWt,
                                 self.gb, self.gbt, np.float32(cfg.x_max), np.float32(cfg.alpha),
                                 np.float32(cfg.learning_rate), np.float32(cfg.grad_clip), threads))


def set_threads(threads: int) -> int:
    """Use `threads` numba threads (capped at numba's pool size); return the number used."""
    n = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


def train_glove(corpus: EncodedCorpus, cfg: GloVeConfig, dim: int, window: int, epochs: int,
                threads: int, seed: int, workdir: Path, progress: bool = True) -> tuple[np.ndarray, dict]:
    """Count, shuffle, train; return (vectors float32 [V, dim] in vocabulary order, stats)."""
    from tqdm import tqdm

    threads = set_threads(threads)
    v = len(corpus.vocab)
    t0 = time.perf_counter()
    keys, vals, count_stats = count_cooccurrences(corpus, window, workdir, cfg.memory_mb,
                                                  cfg.distance_weighting)
    t1 = time.perf_counter()
    rows, cols, xs = cooccurrence_triples(keys, vals, v, workdir, seed, chunk=cfg.memory_mb * 2**20 // 2 // 12)
    del keys, vals
    t2 = time.perf_counter()
    if len(rows) == 0:
        from lmlab.errors import DataError

        raise DataError("no two vocabulary words ever occur within the window of each other; "
                        "the corpus is too small for GloVe (or every line has a single word)")
    params = GloVeParams.init(v, dim, seed)
    losses = []
    bar = tqdm(range(epochs), unit="epoch", desc="glove", disable=not progress or None)
    for _ in bar:
        losses.append(params.epoch(rows, cols, xs, cfg, threads) / len(rows))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    t3 = time.perf_counter()
    vectors = params.W + params.Wt if cfg.output == "sum" else params.W.copy()
    stats = {
        "cooccurrences": int(len(rows)),
        **count_stats,
        "loss_per_epoch": losses,
        "loss_note": "glove.c's: sum of 0.5 f(X) diff^2 over an epoch / number of co-occurrences",
        "time_s": {"count": round(t1 - t0, 3), "shuffle": round(t2 - t1, 3), "train": round(t3 - t2, 3)},
        "updates_per_s": round(len(rows) * epochs / max(t3 - t2, 1e-9)),
        "threads": threads,
    }
    return vectors.astype(np.float32), stats
