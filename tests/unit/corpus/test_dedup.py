"""MinHash against exact Jaccard; LSH parameters; the sorted-run index against a dict."""

import random

import numpy as np
import pytest

from lmlab.corpus.dedup import DedupConfig, Deduplicator, MinHasher, U64Index, exact_key, lsh_params


def jaccard(a: str, b: str, n: int) -> float:
    sa = {a[i:i + n] for i in range(len(a) - n + 1)}
    sb = {b[i:i + n] for i in range(len(b) - n + 1)}
    return len(sa & sb) / len(sa | sb)


def test_minhash_estimates_jaccard():
    rng = random.Random(1)
    mh = MinHasher(num_perm=512, shingle=5, seed=3)
    base = "".join(rng.choice("abcdefghij ") for _ in range(2000))
    for cut in (100, 600, 1200):
        other = base[:cut] + "".join(rng.choice("klmnop") for _ in range(300)) + base[cut + 300:]
        true = jaccard(base, other, 5)
        est = float(np.mean(mh.signature(base) == mh.signature(other)))
        assert abs(est - true) < 0.07, (cut, true, est)  # 3 standard errors at k=512


def test_signatures_are_stable_across_instances():
    a = MinHasher(64, 5, 1).signature("同一段文字 same text")
    b = MinHasher(64, 5, 1).signature("同一段文字 same text")
    assert a.dtype == np.uint32 and np.array_equal(a, b)
    assert exact_key("x") == exact_key("x") != exact_key("y")


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.9])
def test_lsh_params_put_the_s_curve_at_the_threshold(threshold):
    b, r = lsh_params(threshold, 128)
    assert b * r <= 128

    def p(s):
        return 1 - (1 - s**r) ** b

    assert p(threshold - 0.2) < 0.35 and p(min(1.0, threshold + 0.1)) > 0.6


def test_u64index_matches_a_dict():
    rng = np.random.default_rng(0)
    idx, oracle = U64Index(), {}
    for step in range(40):
        keys = np.unique(rng.integers(0, 5000, size=rng.integers(1, 200)).astype(np.uint64))
        got = idx.get_many(keys)
        assert [int(g) for g in got] == [oracle.get(int(k), -1) for k in keys]
        new = keys[got < 0]
        vals = np.arange(len(new)) + 1000 * step
        idx.add_many(new, vals)
        oracle.update({int(k): int(v) for k, v in zip(new, vals)})
    assert len(idx) == len(oracle) and len(idx.keys) <= 12


def test_deduplicator_exact_and_near(tmp_path):
    cfg = DedupConfig(near=True, threshold=0.7, num_perm=128)
    d = Deduplicator(cfg, tmp_path)
    mh = MinHasher(cfg.num_perm, cfg.shingle, cfg.seed)
    rng = random.Random(5)
    base = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "eps", "zeta"]) + str(rng.randint(0, 99))
                    for _ in range(300))
    near = base[:-20] + " and a new ending"
    other = " ".join(str(rng.random()) for _ in range(100))
    texts = [base, other, base, near]
    keys = np.array([exact_key(t) for t in texts], dtype=np.uint64)
    sigs = np.stack([mh.signature(t) for t in texts])
    v = d.judge(keys, sigs, ["f:1", "f:2", "f:3", "f:4"])
    assert [x.kind for x in v] == ["keep", "keep", "exact", "near"]
    assert v[2].kept_ref == "f:1" and v[3].kept_ref == "f:1" and v[3].jaccard >= 0.7
    # a later chunk sees the earlier ones
    v2 = d.judge(np.array([exact_key(other)], dtype=np.uint64), mh.signature(other)[None], ["g:1"])
    assert v2[0].kind == "exact" and v2[0].kept_ref == "f:2"
    d.close()


def test_densified_signatures_are_unbiased_on_short_texts():
    """Texts with fewer shingles than bins rely on densification; the estimate must stay unbiased."""
    rng = random.Random(2)
    mh = MinHasher(num_perm=128, shingle=5, seed=9)
    diffs = []
    for _ in range(200):
        base = "".join(rng.choice("abcdefgh ") for _ in range(40))
        cut, k = rng.randint(0, 39), rng.randint(1, 15)
        other = base[:cut] + "".join(rng.choice("xyz") for _ in range(k)) + base[cut + k:]
        diffs.append(float(np.mean(mh.signature(base) == mh.signature(other))) - jaccard(base, other, 5))
    assert abs(np.mean(diffs)) < 0.02 and np.mean(np.abs(diffs)) < 0.08
