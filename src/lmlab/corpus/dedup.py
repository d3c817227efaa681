"""Exact and near-duplicate detection across a whole corpus in bounded memory.

Exact: a 64-bit BLAKE2b key of the normalised text. Near: MinHash signatures (Broder 1997) of
the set of character n-gram shingles (n = `shingle`, which works for Chinese without word
segmentation), computed by one-permutation hashing (see `MinHasher`), bucketed by
locality-sensitive hashing with b bands of r rows (Leskovec,
Rajaraman & Ullman, *Mining of Massive Datasets*, ch. 3.4); b and r are chosen for the Jaccard
`threshold` by minimising the integrated false-positive and false-negative probabilities, as
datasketch does. A candidate pair is confirmed only if the signatures agree on at least
`threshold` of their rows (the MinHash estimate of Jaccard similarity), so LSH collisions
below the threshold do not remove documents.

Memory: keys live in sorted numpy runs merged like a log-structured tree (`U64Index`),
8 + 8 bytes per key, so the resident cost is 16 × (1 + bands) bytes per *kept* document,
whatever the documents' length; the kept documents' signatures and source references go to
temporary files and are read back with `pread` only to confirm a candidate or name the kept
document in the duplicates report. Hashes are seeded constants, never Python's salted
`hash`, so results are identical in every process.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmlab.config import check

_MASK32 = np.uint64(0xFFFFFFFF)


def exact_key(text: str) -> int:
    """64-bit key of the exact text (BLAKE2b, stable across processes and runs)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=b"lmlab-ex").digest(), "little")


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads polynomial shingle hashes over all 64 bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@dataclass
class DedupConfig:
    exact: bool = True  # drop documents whose normalised text was seen before
    near: bool = False  # MinHash + LSH near-duplicate removal
    threshold: float = 0.8  # Jaccard similarity of shingle sets at which documents are duplicates
    num_perm: int = 128  # MinHash permutations (signature length)
    shingle: int = 5  # characters per shingle
    seed: int = 1
    report: bool = True  # write duplicates.jsonl (removed → kept, with estimated Jaccard)

    def __post_init__(self) -> None:
        check(0.0 < self.threshold <= 1.0, "dedup.threshold", "must be in (0, 1]")
        check(16 <= self.num_perm <= 1024, "dedup.num_perm", "must be in [16, 1024]")
        check(self.shingle >= 1, "dedup.shingle", "must be >= 1")


class MinHasher:
    """MinHash signatures by one-permutation hashing with optimal densification.

    Each shingle is hashed once (64 bits); the hash's top bits choose one of `num_perm` bins
    (monotonically, ``bin = (h >> 32) * k >> 32``), and a bin's value is the smallest hash in
    it — so one sort of the shingle hashes yields every bin's minimum. Empty bins borrow the
    value of a non-empty bin chosen by a fixed pseudo-random probe sequence shared by all
    documents, which keeps P[sig_i(A) = sig_i(B)] = J(A, B) (Li, Owen & Zhang 2012, "One
    permutation hashing"; Shrivastava 2017, "Optimal densification for fast and accurate
    minwise hashing"). Cost O(n log n) per document instead of O(k n) for k hash functions.
    A bin stores the low 32 bits of its minimum hash."""

    def __init__(self, num_perm: int = 128, shingle: int = 5, seed: int = 1):
        self.num_perm, self.shingle = num_perm, shingle
        self.salt = np.uint64(np.random.default_rng(seed).integers(1, 2**63))
        # probe sequences for densification: probe[t, j] = bin tried by empty bin j at attempt t
        probes = (np.arange(64, dtype=np.uint64)[:, None] * np.uint64(num_perm)
                  + np.arange(num_perm, dtype=np.uint64)[None])
        self.probe = (_mix64(probes ^ self.salt) % np.uint64(num_perm)).astype(np.intp)

    def shingles(self, text: str) -> np.ndarray:
        """64-bit hashes of the text's character n-grams (the whole text if shorter)."""
        cps = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32).astype(np.uint64)
        n = min(self.shingle, len(cps))
        if n == 0:
            return np.zeros(1, dtype=np.uint64)
        m = len(cps) - n + 1
        h = np.zeros(m, dtype=np.uint64)
        for j in range(n):  # polynomial rolling hash, wrapping mod 2^64
            h = h * np.uint64(1_000_003) + cps[j:j + m]
        return _mix64(h ^ self.salt)  # repeats are harmless: a minimum is idempotent

    def signature(self, text: str) -> np.ndarray:
        """[num_perm] uint32."""
        k = self.num_perm
        h = np.sort(self.shingles(text))
        bins = (((h >> np.uint64(32)) * np.uint64(k)) >> np.uint64(32)).astype(np.intp)  # non-decreasing
        first = np.flatnonzero(np.concatenate(([True], bins[1:] != bins[:-1])))  # smallest hash of each occupied bin
        sig = np.zeros(k, dtype=np.uint64)
        filled = np.zeros(k, dtype=bool)
        sig[bins[first]] = h[first]
        filled[bins[first]] = True
        empty = np.flatnonzero(~filled)
        for t in range(len(self.probe)):
            if len(empty) == 0:
                break
            src = self.probe[t, empty]
            ok = filled[src]
            sig[empty[ok]] = sig[src[ok]] + np.uint64(t + 1)  # +t: a borrowed value differs from its donor's
            empty = empty[~ok]
        if len(empty):  # (never for ≥ 1 shingle in practice) fall back to the first occupied bin
            sig[empty] = sig[bins[first[0]]] + np.uint64(len(self.probe) + 1)
        return (sig & _MASK32).astype(np.uint32)


def _area(y: np.ndarray, x: np.ndarray) -> float:
    return float(((y[1:] + y[:-1]) / 2 * np.diff(x)).sum())  # trapezoid rule


def lsh_params(threshold: float, num_perm: int, fp_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm minimising the weighted error areas of the
    S-curve P(candidate | s) = 1 - (1 - s^r)^b on either side of the threshold."""
    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        r = num_perm // b
        if r == 0:
            break
        s_lo = np.linspace(0.0, threshold, 200)
        s_hi = np.linspace(threshold, 1.0, 200)
        fp = _area(1 - (1 - s_lo**r) ** b, s_lo)
        fn = _area((1 - s_hi**r) ** b, s_hi)
        err = fp_weight * fp + (1 - fp_weight) * fn
        if err < best_err:
            best, best_err = (b, r), err
    return best


class U64Index:
    """uint64 → int64 map in sorted numpy runs; a new run merges with the previous one while it
    is at least half its size, so there are O(log n) runs and inserts cost O(log n) amortised."""

    def __init__(self) -> None:
        self.keys: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(k) for k in self.keys)

    def get_many(self, keys: np.ndarray) -> np.ndarray:
        out = np.full(len(keys), -1, dtype=np.int64)
        for rk, rv in zip(self.keys, self.vals):
            pos = np.searchsorted(rk, keys)
            pos[pos >= len(rk)] = 0
            hit = (rk[pos] == keys) & (out < 0) if len(rk) else np.zeros(len(keys), bool)
            out[hit] = rv[pos[hit]]
        return out

    def add_many(self, keys: np.ndarray, vals: np.ndarray) -> None:
        if len(keys) == 0:
            return
        order = np.argsort(keys, kind="stable")
        self.keys.append(np.asarray(keys, dtype=np.uint64)[order])
        self.vals.append(np.asarray(vals, dtype=np.int64)[order])
        while len(self.keys) >= 2 and len(self.keys[-1]) * 2 >= len(self.keys[-2]):
            k = np.concatenate([self.keys[-2], self.keys.pop()])
            v = np.concatenate([self.vals[-2], self.vals.pop()])
            order = np.argsort(k, kind="stable")
            self.keys[-1], self.vals[-1] = k[order], v[order]


class _KeptStore:
    """Signatures and references of kept documents in temporary files; O(1) memory per row."""

    def __init__(self, workdir: Path, num_perm: int):
        self.row = num_perm * 4
        self.sig_f = tempfile.TemporaryFile(dir=workdir)
        self.ref_f = tempfile.TemporaryFile(dir=workdir)
        self.ref_off = np.zeros(1024, dtype=np.int64)
        self.n, self.ref_end = 0, 0

    def append(self, sig: np.ndarray | None, ref: str) -> int:
        if sig is not None:  # append-only files: reads use pread, which leaves the position alone
            self.sig_f.write(sig.tobytes())
        data = ref.encode("utf-8")
        self.ref_f.write(data)
        if self.n + 1 >= len(self.ref_off):
            self.ref_off = np.concatenate([self.ref_off, np.zeros_like(self.ref_off)])
        self.ref_end += len(data)
        self.ref_off[self.n + 1] = self.ref_end
        self.n += 1
        return self.n - 1

    def sig(self, i: int) -> np.ndarray:
        self.sig_f.flush()
        return np.frombuffer(os.pread(self.sig_f.fileno(), self.row, i * self.row), dtype=np.uint32)

    def ref(self, i: int) -> str:
        self.ref_f.flush()
        a, b = int(self.ref_off[i]), int(self.ref_off[i + 1])
        return os.pread(self.ref_f.fileno(), b - a, a).decode("utf-8")

    def close(self) -> None:
        self.sig_f.close()
        self.ref_f.close()


@dataclass
class Verdict:
    kind: str  # "keep" | "exact" | "near"
    kept_ref: str = ""
    jaccard: float = 1.0
    kept_id: int = -1


class Deduplicator:
    """Decides, in corpus order, whether each document repeats an earlier kept one."""

    def __init__(self, cfg: DedupConfig, workdir: Path):
        self.cfg = cfg
        self.exact = U64Index()
        self.bands, self.rows = lsh_params(cfg.threshold, cfg.num_perm)
        rng = np.random.default_rng(cfg.seed + 7919)
        self.band_mult = (rng.integers(1, 2**63, size=(self.bands, self.rows), dtype=np.uint64) * np.uint64(2)
                          + np.uint64(1))
        self.band_salt = rng.integers(0, 2**63, size=self.bands, dtype=np.uint64)
        self.buckets = U64Index()
        self.kept = _KeptStore(workdir, cfg.num_perm)

    def band_keys(self, sigs: np.ndarray) -> np.ndarray:
        """[n, num_perm] uint32 → [n, bands] uint64 bucket keys (band index folded in)."""
        s = sigs[:, : self.bands * self.rows].astype(np.uint64).reshape(len(sigs), self.bands, self.rows)
        return _mix64((s * self.band_mult[None]).sum(axis=2) + self.band_salt[None])

    def judge(self, keys: np.ndarray, sigs: np.ndarray | None, refs: list[str]) -> list[Verdict]:
        """Verdicts for one chunk's documents, in order; kept ones are indexed."""
        n = len(refs)
        exact_prior = self.exact.get_many(keys) if self.cfg.exact else np.full(n, -1)
        use_near = self.cfg.near and sigs is not None
        if use_near:
            bkeys = self.band_keys(sigs)
            bucket_prior = self.buckets.get_many(bkeys.ravel()).reshape(n, self.bands)
        local_exact: dict[int, int] = {}
        local_bucket: dict[int, int] = {}
        new_exact_k, new_exact_v, new_b_k, new_b_v = [], [], [], []
        out: list[Verdict] = []
        for i in range(n):
            if self.cfg.exact:
                k = int(keys[i])
                prior = int(exact_prior[i]) if exact_prior[i] >= 0 else local_exact.get(k, -1)
                if prior >= 0:
                    out.append(Verdict("exact", kept_id=prior))
                    continue
            if use_near:
                verdict = None
                for bi in range(self.bands):
                    cand = int(bucket_prior[i, bi])
                    if cand < 0:
                        cand = local_bucket.get(int(bkeys[i, bi]), -1)
                    if cand >= 0:
                        j = float(np.mean(self.kept.sig(cand) == sigs[i]))
                        if j >= self.cfg.threshold:
                            verdict = Verdict("near", jaccard=j, kept_id=cand)
                            break
                if verdict is not None:
                    out.append(verdict)
                    continue
            kid = self.kept.append(sigs[i] if use_near else None, refs[i])
            if self.cfg.exact:
                local_exact[int(keys[i])] = kid
                new_exact_k.append(int(keys[i]))
                new_exact_v.append(kid)
            if use_near:
                for bi in range(self.bands):
                    bk = int(bkeys[i, bi])
                    if bucket_prior[i, bi] < 0 and bk not in local_bucket:
                        local_bucket[bk] = kid
                        new_b_k.append(bk)
                        new_b_v.append(kid)
            out.append(Verdict("keep", kept_id=kid))
        self.exact.add_many(np.array(new_exact_k, dtype=np.uint64), np.array(new_exact_v, dtype=np.int64))
        self.buckets.add_many(np.array(new_b_k, dtype=np.uint64), np.array(new_b_v, dtype=np.int64))
        if self.cfg.report:
            for v in out:
                if v.kind != "keep":
                    v.kept_ref = self.kept.ref(v.kept_id)
        return out

    def close(self) -> None:
        self.kept.close()
