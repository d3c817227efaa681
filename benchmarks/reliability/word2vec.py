"""I6: Word2Vec's update vs the SGNS gradient from autograd.

gensim's kernel (word2vec_inner.pyx, like word2vec.c) reads σ from a float32 table of 1000 values over
[−6, 6) at index int((s + 6) · 83): 83 is EXP_TABLE_SIZE / MAX_EXP / 2 in integer arithmetic (83.3
exactly), so at s = 0 it reads σ(−0.024) = 0.494 instead of 0.5. A fresh model's dot products are all
near 0 (syn1neg starts at zero), so every gradient σ(s) − y is about 1.2% off the exact one: that is the
whole gap between gensim and autograd with the exact σ. With σ taken from the same table, autograd's SGD
matches gensim to float32 rounding. Ruled out by reading the kernel: the in-place update of syn1neg per
target (each target is a different row, and h is updated only after all of them, as autograd does), the
learning-rate decay (constant here: min_alpha = alpha), and the order of the pairs (reproduced).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
import torch.nn.functional as F

from .table import row


def gensim_sigmoid(s: torch.Tensor) -> torch.Tensor:
    """σ as gensim's table gives it (float32 table, truncated index, scale 83)."""
    i = torch.arange(1000, dtype=torch.float32)
    e = torch.exp(((i / 1000 * 2 - 1) * 6).double()).float()
    table = (e / (e + 1)).double()
    assert bool((s.abs() < 6).all())  # beyond, gensim makes no update at all
    return table[((s + 6) * 83).long()]


class SGNSLoss(torch.autograd.Function):
    """−Σ [y log σ(s) + (1 − y) log σ(−s)]; backward takes its gradient σ(s) − y with gensim's tabled σ
    (tabled=True) or the exact one."""

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


def campaign_i6(work: Path, quick: bool) -> list[dict]:
    """One epoch of skip-gram with negative sampling (1 noise word, window 1, no subsampling, a
    constant learning rate) on "a b c" through `lmlab embed train` (gensim underneath). The
    noise draws are gensim's own, so every distinct sequence of draws (81: per pair, none or one of the
    two other words) is simulated with autograd (SGD on −log σ(v'_o·h) − log σ(−v'_k·h), in float64)
    and the closest must match; the gap to the next closest shows that the comparison can tell the
    updates apart. Run twice: σ from gensim's table (the measured figure) and the exact σ (the size of
    the table's effect)."""
    import gensim.models

    from lmlab.embeddings.train import train_embeddings
    from lmlab.embeddings.vectors import WordVectors

    captured = {}
    real_train = gensim.models.Word2Vec.train

    def spy(self, *a, **kw):
        captured["before"] = self.wv.vectors.copy(), self.syn1neg.copy()
        out = real_train(self, *a, **kw)
        captured["after"] = self.wv.vectors.copy(), self.syn1neg.copy()
        captured["index"] = dict(self.wv.key_to_index)
        return out
    corpus = work / "i6.txt"
    corpus.write_text("alpha beta gamma\n")
    alpha = 0.025
    gensim.models.Word2Vec.train = spy
    try:
        train_embeddings([str(corpus)], str(work / "i6-vectors"), dim=8, window=1, epochs=1, min_count=1, threads=1,
                         seed=3, overwrite=True, progress=False,
                         overrides=["--word2vec.negative=1", "--word2vec.sample=0", f"--word2vec.alpha={alpha}",
                                    f"--word2vec.min_alpha={alpha}", "--vocab.tokenizer=whitespace"])
    finally:
        gensim.models.Word2Vec.train = real_train
    # gensim's rows are lmlab ids written as text; the sentence is ids of alpha, beta, gamma
    words = WordVectors.load(work / "i6-vectors").words
    a, b, c = (captured["index"][str(words.index(w))] for w in ("alpha", "beta", "gamma"))
    pairs = [(a, b), (b, a), (b, c), (c, b)]  # (centre, context) in gensim's order
    before = [torch.tensor(x, dtype=torch.float64) for x in captured["before"]]
    got = [torch.tensor(x, dtype=torch.float64) for x in captured["after"]]

    def simulate(noise, tabled):
        w_in, w_out = (x.clone() for x in before)
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

    sequences = list(itertools.product(*[[None, *(r for r in (a, b, c) if r != centre)] for centre, _ in pairs]))
    results = {}
    for tabled in (True, False):
        diffs = []
        for noise in sequences:
            w_in, w_out = simulate(noise, tabled)
            diffs.append(((w_in - got[0]).abs().max().item(), (w_out - got[1]).abs().max().item()))
        diffs.sort(key=max)
        results[tabled] = diffs
    moved_in, moved_out = ((g - x).abs().max().item() for g, x in zip(got, before))
    (d_in, d_out), runner_up = results[True][0], max(results[True][1])
    e_in, e_out = results[False][0]
    ulp = torch.finfo(torch.float32).eps * before[0].abs().max().item()
    return [row("I6", len(sequences), int(max(d_in, d_out) > 1e-6),
                f"closest autograd simulation with gensim's σ table: word vectors (syn0, what lmlab keeps) max |Δ| "
                f"{d_in:.2e} of an update of {moved_in:.2e}, output vectors (syn1neg) {d_out:.2e} of "
                f"{moved_out:.2e}: float32 rounding (ε·max|syn0| = {ulp:.1e}); next closest draw "
                f"sequence {runner_up:.2e}. With the exact σ instead: {e_in:.2e} and {e_out:.2e}, the table's "
                f"σ(0) = 0.494 (index int((s + 6)·83), 83 = 1000 // 6 // 2) making each gradient ~1.2% off",
                f"campaign I6 (gensim skip-gram + negative sampling through `lmlab embed train`, vs SGD on the SGNS "
                f"objective by autograd, all {len(sequences)} noise-draw sequences)",
                syn0_max_abs_diff=d_in, syn1_max_abs_diff=d_out, exact_sigmoid_syn0=e_in, exact_sigmoid_syn1=e_out)]
