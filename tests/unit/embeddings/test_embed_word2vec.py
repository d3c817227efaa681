"""Word2Vec through lmlab: learns, reproducible with a seed on one thread, all variants run; its update is SGD on
the skip-gram negative-sampling loss (against autograd)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("gensim")

from lmlab.embeddings.train import train_embeddings  # noqa: E402
from lmlab.embeddings.vectors import WordVectors  # noqa: E402
from lmlab.errors import ConfigError  # noqa: E402


def topic_scores(wv, topics):
    same = np.mean([wv.similarity(a, b) for t in topics for a in t for b in t if a != b])
    cross = np.mean([wv.similarity(a, b) for a in topics[0] for b in topics[1]])
    return same, cross


def test_skipgram_learns_topics_and_writes_stats(cluster_corpus, tmp_path):
    path, topics = cluster_corpus
    stats = train_embeddings([str(path)], str(tmp_path / "v"), dim=12, window=3, epochs=8, min_count=1,
                             threads=2, progress=False)
    wv = WordVectors.load(tmp_path / "v")
    same, cross = topic_scores(wv, topics)
    assert same > cross + 0.2, (same, cross)
    assert stats["vocab_size"] == len(wv) == 19 and wv.dim == 12
    assert stats["tokens_seen"] == stats["tokens_kept"] == 900 * 11
    assert len(stats["loss_per_epoch"]) == 8 and stats["loss_per_epoch"][-1] < stats["loss_per_epoch"][0]
    assert (tmp_path / "v" / "config.yaml").read_text().count("architecture: skipgram") == 1


@pytest.mark.parametrize("variant", [["--word2vec.architecture=cbow"], ["--word2vec.objective=hs"]])
def test_cbow_and_hierarchical_softmax_learn(cluster_corpus, tmp_path, variant):
    path, topics = cluster_corpus
    train_embeddings([str(path)], str(tmp_path / "v"), dim=12, window=3, epochs=10, min_count=1,
                     progress=False, overrides=variant)
    same, cross = topic_scores(WordVectors.load(tmp_path / "v"), topics)
    assert same > cross + 0.1, (variant, same, cross)


def _train_in_subprocess(corpus, out, seed):
    """A fresh interpreter each time: Python's string hash is randomised per process, which is
    what broke gensim's seeding."""
    code = ("import sys; from lmlab.embeddings.train import train_embeddings; "
            f"train_embeddings([{str(corpus)!r}], {str(out)!r}, dim=9, epochs=2, min_count=1, threads=1, "
            f"seed={seed}, progress=False)")
    subprocess.run([sys.executable, "-c", code], check=True, env={**__import__("os").environ,
                                                                  "PYTHONHASHSEED": "random"})
    return WordVectors.load(out).vectors


def test_seeded_single_thread_runs_are_bit_reproducible_across_processes(cluster_corpus, tmp_path):
    path, _ = cluster_corpus
    a = _train_in_subprocess(path, tmp_path / "a", 5)
    b = _train_in_subprocess(path, tmp_path / "b", 5)
    np.testing.assert_array_equal(a, b)
    c = train_embeddings([str(path)], str(tmp_path / "c"), dim=9, epochs=2, min_count=1, threads=1, seed=6,
                         progress=False)
    assert c and not np.array_equal(a, WordVectors.load(tmp_path / "c").vectors)


def test_bad_config_names_the_field(cluster_corpus, tmp_path):
    path, _ = cluster_corpus
    with pytest.raises(ConfigError, match="word2vec.sample"):
        train_embeddings([str(path)], str(tmp_path / "v"), overrides=["--word2vec.sample=2"])
    with pytest.raises(ConfigError, match="unknown config key word2vec.negatives"):
        train_embeddings([str(path)], str(tmp_path / "v"), overrides=["--word2vec.negatives=2"])
    assert not (tmp_path / "v").exists()


def gensim_sigmoid(s: torch.Tensor) -> torch.Tensor:
    """σ as gensim's kernel reads it (word2vec_inner.pyx, as in word2vec.c): a float32 table of 1000 values
    of σ over [−6, 6), indexed by int((s + 6) · 83), where 83 is EXP_TABLE_SIZE / MAX_EXP / 2 in integer
    arithmetic (83.3 in exact arithmetic). Near 0, where a fresh model's dot products are, it gives
    σ(−0.024) = 0.494 for σ(0) = 0.5: a gradient 1.2% off."""
    i = torch.arange(1000, dtype=torch.float32)
    e = torch.exp(((i / 1000 * 2 - 1) * 6).double()).float()
    table = (e / (e + 1)).double()
    assert bool((s.abs() < 6).all())  # beyond, gensim makes no update at all
    return table[((s + 6) * 83).long()]


class SGNSLoss(torch.autograd.Function):
    """−Σ [y log σ(s) + (1 − y) log σ(−s)] over scores s = v'·h; backward takes its gradient σ(s) − y with
    σ from `gensim_sigmoid` (tabled=True) or exact."""

    @staticmethod
    def forward(ctx, scores, labels, tabled):
        ctx.save_for_backward(scores, labels)
        ctx.tabled = tabled
        return -(labels * F.logsigmoid(scores) + (1 - labels) * F.logsigmoid(-scores)).sum()

    @staticmethod
    def backward(ctx, grad):
        scores, labels = ctx.saved_tensors
        sigma = gensim_sigmoid(scores) if ctx.tabled else torch.sigmoid(scores)
        return grad * (sigma - labels), None, None


def sgd_on_sgns(syn0, syn1, pairs, noise, alpha, tabled):
    """Plain SGD on the skip-gram negative-sampling loss, one (centre, context) pair at a time: the input
    vector of the context word h predicts the centre word against one noise word (none when the draw is
    the centre itself: gensim skips it). Gradients by autograd, in float64."""
    w_in, w_out = torch.tensor(syn0, dtype=torch.float64), torch.tensor(syn1, dtype=torch.float64)
    for (centre, context), k in zip(pairs, noise):
        targets = [centre] + ([] if k is None else [k])
        h = w_in[context].clone().requires_grad_(True)
        outs = w_out[targets].clone().requires_grad_(True)
        labels = torch.tensor([1.0] + [0.0] * (len(targets) - 1), dtype=torch.float64)
        SGNSLoss.apply(outs @ h, labels, tabled).backward()
        with torch.no_grad():
            w_in[context] -= alpha * h.grad
            w_out[targets] -= alpha * outs.grad
    return w_in, w_out


def test_skipgram_update_equals_sgd_on_the_sgns_loss_by_autograd(tmp_path, monkeypatch, figure):
    """One epoch of skip-gram with one noise word over "alpha beta gamma" (window 1, no subsampling, a
    constant learning rate). gensim's noise draws are its own, so every sequence of draws is simulated and
    the closest must match: to float32 rounding with gensim's σ table, while the exact σ misses by the
    table's 1.2% of the output vectors' update, and the next closest sequence by far more."""
    import itertools

    import gensim.models

    captured = {}
    real_train = gensim.models.Word2Vec.train

    def spy(self, *args, **kwargs):
        captured["before"] = self.wv.vectors.copy(), self.syn1neg.copy()
        out = real_train(self, *args, **kwargs)
        captured["after"] = self.wv.vectors.copy(), self.syn1neg.copy()
        captured["index"] = dict(self.wv.key_to_index)
        return out
    monkeypatch.setattr(gensim.models.Word2Vec, "train", spy)
    corpus = tmp_path / "c.txt"
    corpus.write_text("alpha beta gamma\n")
    alpha = 0.025
    train_embeddings([str(corpus)], str(tmp_path / "v"), dim=8, window=1, epochs=1, min_count=1, threads=1, seed=3,
                     progress=False, overrides=["--word2vec.negative=1", "--word2vec.sample=0",
                                                f"--word2vec.alpha={alpha}", f"--word2vec.min_alpha={alpha}",
                                                "--vocab.tokenizer=whitespace"])
    words = WordVectors.load(tmp_path / "v").words  # gensim's keys are lmlab's ids, as text
    a, b, c = (captured["index"][str(words.index(w))] for w in ("alpha", "beta", "gamma"))
    pairs = [(a, b), (b, a), (b, c), (c, b)]  # (centre, context) in gensim's order
    got = [torch.tensor(x, dtype=torch.float64) for x in captured["after"]]
    moved = max((g - torch.tensor(x, dtype=torch.float64)).abs().max().item()
                for g, x in zip(got, captured["before"]))

    def gaps(tabled):
        out = []
        for noise in itertools.product(*[[None, *(r for r in (a, b, c) if r != centre)] for centre, _ in pairs]):
            sim = sgd_on_sgns(*captured["before"], pairs, noise, alpha, tabled)
            out.append(max((s - g).abs().max().item() for s, g in zip(sim, got)))
        return sorted(out)
    tabled, exact = gaps(True), gaps(False)
    figure(max_abs_diff=tabled[0], next_closest=tabled[1], exact_sigmoid_max_abs_diff=exact[0], update=moved)
    assert tabled[0] < 1e-7 and tabled[1] > 100 * 1e-7, tabled[:2]
    assert exact[0] > 100 * tabled[0] and exact[0] < 0.05 * moved, (exact[0], moved)
