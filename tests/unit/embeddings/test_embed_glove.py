"""GloVe: counts against brute force, the update against autograd, reproducibility, training."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch

from lmlab.embeddings import glove as G
from lmlab.embeddings.vocab import EncodedCorpus, Vocab


def encoded(lines: list[list[int]], vocab_size: int, tmp_path) -> EncodedCorpus:
    ids = np.array([i for line in lines for i in line], dtype=np.int32)
    ids.tofile(tmp_path / "ids.i32")
    counts = np.bincount(ids, minlength=vocab_size)
    vocab = Vocab([f"w{i}" for i in range(vocab_size)], counts)
    ends = np.cumsum([len(line) for line in lines]).astype(np.int64)
    return EncodedCorpus(vocab, tmp_path / "ids.i32", ends, int(len(ids)), len(lines))


def brute_force(lines, window, weighting=True):
    """The definition: each pair d ≤ window apart in a line adds 1/d to X[a,b] and to X[b,a]."""
    x = defaultdict(float)
    for line in lines:
        for p in range(len(line)):
            for q in range(max(0, p - window), p):
                w = 1.0 / (p - q) if weighting else 1.0
                x[line[p], line[q]] += w
                x[line[q], line[p]] += w
    return x


@pytest.mark.parametrize("window,memory_mb,weighting", [(3, 8, True), (5, 8, False), (2, 1024, True)])
def test_cooccurrence_counts_match_brute_force(tmp_path, window, memory_mb, weighting):
    rng = np.random.default_rng(window)
    v = 53
    lines = [list(rng.zipf(1.4, rng.integers(0, 40)) % v) for _ in range(61)]
    enc = encoded(lines, v, tmp_path)
    # memory_mb=8 stands for a tiny budget: a 40-cell dense table and a 23-pair buffer → many runs
    sizes = {"dense_cells": 40, "buffer_pairs": 23} if memory_mb == 8 else {}
    keys, vals, stats = G.count_cooccurrences(enc, window, tmp_path, memory_mb, weighting, **sizes)
    if memory_mb == 8:
        assert stats["runs_spilled"] > 3 and 0 < stats["dense_table_pairs"] <= 40
    rows, cols, xs = G.cooccurrence_triples(keys, vals, v, tmp_path, seed=None)
    ours = defaultdict(float)
    for i, j, x in zip(rows.tolist(), cols.tolist(), xs.tolist()):
        assert (i, j) not in ours  # one triple per cell
        ours[i, j] = x
    ref = brute_force(lines, window, weighting)
    assert set(ours) == set(ref)
    for cell, x in ref.items():
        assert ours[cell] == pytest.approx(x, rel=1e-6)


def test_dense_layout_respects_budget_and_frequency_product():
    lim, off = G.dense_layout(100, 500)
    assert off[-1] <= 500
    a = np.arange(100)
    assert np.all(lim >= a) and lim[0] > lim[50]  # frequent rows are wider


def test_shuffle_is_a_seeded_permutation(tmp_path):
    keys = np.array([0 * 7 + 3, 1 * 7 + 1, 2 * 7 + 5, 4 * 7 + 6], dtype=np.int64)
    vals = np.array([1.0, 2.0, 3.0, 4.0])
    plain = G.cooccurrence_triples(keys, vals, 7, tmp_path, seed=None)
    cells = sorted(zip(*(a.tolist() for a in plain)))
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    s1 = G.cooccurrence_triples(keys, vals, 7, tmp_path / "a", seed=3)
    s2 = G.cooccurrence_triples(keys, vals, 7, tmp_path / "b", seed=3)
    assert sorted(zip(*(a.tolist() for a in s1))) == cells  # same multiset
    assert all(np.array_equal(x, y) for x, y in zip(s1, s2))  # same order for the same seed
    assert (1, 1, 4.0) in cells and (0, 3, 1.0) in cells and (3, 0, 1.0) in cells  # diagonal doubled


def test_external_shuffle_is_a_seeded_permutation_that_mixes_blocks(tmp_path):
    v = 41
    keys = np.array(sorted({a * v + b for a in range(v) for b in range(a, v) if (a * 7 + b) % 5 == 0}), np.int64)
    vals = np.arange(1, len(keys) + 1, dtype=np.float64)
    plain = G.cooccurrence_triples(keys, vals, v, tmp_path, seed=None)
    cells = sorted(zip(*(a.tolist() for a in plain)))
    runs = []
    for k in range(2):
        (tmp_path / str(k)).mkdir()
        runs.append(G.cooccurrence_triples(keys, vals, v, tmp_path / str(k), seed=5, chunk=53))  # 6+ blocks
    assert len(cells) > 6 * 53
    assert sorted(zip(*(a.tolist() for a in runs[0]))) == cells
    assert all(np.array_equal(x, y) for x, y in zip(*runs))
    first_rows = np.asarray(runs[0][0][:53])
    assert len(np.unique(first_rows)) > 20  # the first block mixes rows from across the matrix


def test_update_equals_autograd_gradient_of_the_weighted_least_squares_loss():
    """With squared-gradient sums at 1, one AdaGrad step is −η·∇J; triples touching distinct
    words do not interact, so the kernel's total step must equal −η·∇ of the summed loss."""
    torch.manual_seed(0)
    v, d, eta, x_max, alpha = 9, 5, 0.05, 3.0, 0.75
    p = G.GloVeParams.init(v, d, seed=4)
    for name in ("W", "Wt", "b", "bt"):  # larger values than glove's init so every term matters
        setattr(p, name, (getattr(p, name) * 40).astype(np.float32))
    rows = np.array([0, 2, 5], np.int32)
    cols = np.array([1, 3, 7], np.int32)
    xs = np.array([0.5, 7.0, 2.0], np.float32)  # below and above x_max
    leaves = {n: torch.tensor(getattr(p, n), dtype=torch.float64, requires_grad=True) for n in ("W", "Wt", "b", "bt")}
    r, c, x = torch.tensor(rows).long(), torch.tensor(cols).long(), torch.tensor(xs, dtype=torch.float64)
    diff = (leaves["W"][r] * leaves["Wt"][c]).sum(1) + leaves["b"][r] + leaves["bt"][c] - torch.log(x)
    f = torch.clamp((x / x_max) ** alpha, max=1.0)
    loss = 0.5 * (f * diff**2).sum()
    loss.backward()
    before = {n: getattr(p, n).copy() for n in leaves}
    cfg = G.GloVeConfig(x_max=x_max, alpha=alpha, learning_rate=eta, grad_clip=1e6)
    cost = p.epoch(rows, cols, xs, cfg, threads=1)
    assert cost == pytest.approx(loss.item(), rel=1e-5)
    for n, leaf in leaves.items():
        np.testing.assert_allclose(getattr(p, n) - before[n], -eta * leaf.grad.numpy(), rtol=1e-4, atol=1e-6)
    # AdaGrad accumulators gained the squared step (atol: float32 sums near 1)
    np.testing.assert_allclose(p.gW[rows] - 1, (eta * leaves["W"].grad.numpy()[rows]) ** 2, rtol=1e-3, atol=2e-7)


def test_gradient_clip_bounds_each_component():
    p = G.GloVeParams.init(2, 3, seed=0)
    p.W[:] = 50.0
    p.Wt[:] = 50.0
    before, before_t = p.W.copy(), p.Wt.copy()
    p.epoch(np.array([0], np.int32), np.array([1], np.int32), np.array([1e4], np.float32),
            G.GloVeConfig(grad_clip=0.01, learning_rate=0.5), threads=1)
    # clipped gradient × η (the AdaGrad sum starts at 1); float32 around 50 has ~4e-6 resolution
    np.testing.assert_allclose(before[0] - p.W[0], 0.01 * 0.5, rtol=1e-3)
    np.testing.assert_allclose(before_t[1] - p.Wt[1], 0.01 * 0.5, rtol=1e-3)
    assert np.array_equal(p.W[1], before[1])


def test_training_reduces_loss_and_is_bit_reproducible_with_one_thread(tmp_path):
    rng = np.random.default_rng(1)
    lines = [list(rng.zipf(1.3, 30) % 40) for _ in range(200)]
    enc = encoded(lines, 40, tmp_path)
    cfg = G.GloVeConfig(x_max=10)
    runs = []
    for k in range(2):
        (tmp_path / str(k)).mkdir()
        runs.append(G.train_glove(enc, cfg, 8, 4, 6, threads=1, seed=7, workdir=tmp_path / str(k), progress=False))
    (v1, s1), (v2, s2) = runs
    np.testing.assert_array_equal(v1, v2)
    assert s1["loss_per_epoch"] == s2["loss_per_epoch"]
    assert s1["loss_per_epoch"][-1] < 0.5 * s1["loss_per_epoch"][0]
    (tmp_path / "2").mkdir()
    v3, _ = G.train_glove(enc, cfg, 8, 4, 6, threads=1, seed=8, workdir=tmp_path / "2", progress=False)
    assert not np.array_equal(v1, v3)


def test_glove_learns_topics(cluster_corpus, tmp_path):
    from lmlab.embeddings.train import train_embeddings
    from lmlab.embeddings.vectors import WordVectors

    path, topics = cluster_corpus
    stats = train_embeddings([str(path)], str(tmp_path / "g"), algo="glove", dim=10, window=4, epochs=25,
                             min_count=1, threads=2, progress=False, overrides=["--glove.x_max=10"])
    wv = WordVectors.load(tmp_path / "g")
    same = np.mean([wv.similarity(a, b) for t in topics for a in t for b in t if a != b])
    cross = np.mean([wv.similarity(a, b) for a in topics[0] for b in topics[1]])
    assert same > cross + 0.1, (same, cross)
    for t in topics:  # every topic word's nearest neighbour is from its own topic
        assert all(wv.most_similar(w, topn=1)[0][0] in t for w in t)
    assert stats["cooccurrences"] > 0 and set(stats["time_s"]) >= {"count", "shuffle", "train", "tokenize"}
    assert len(stats["loss_per_epoch"]) == 25
