"""Positional encodings against their closed forms."""

import math

import torch

from lmlab.model.position import RotaryEmbedding, sinusoidal_table


def test_sinusoidal_equals_the_papers_formula(figure):
    d_model, n = 38, 23
    pe = sinusoidal_table(n, d_model)
    worst = 0.0
    for pos in range(n):
        for i in range(d_model // 2):
            worst = max(worst, abs(pe[pos, 2 * i] - math.sin(pos / 10000 ** (2 * i / d_model))),
                        abs(pe[pos, 2 * i + 1] - math.cos(pos / 10000 ** (2 * i / d_model))))
    figure(max_abs_diff=worst)
    assert worst <= 1e-6


def test_concat_layout_is_a_channel_permutation_of_interleaved():
    a, b = sinusoidal_table(17, 12, "interleaved"), sinusoidal_table(17, 12, "concat")
    perm = torch.cat((torch.arange(0, 12, 2), torch.arange(1, 12, 2)))
    assert torch.equal(a[:, perm], b)


def test_rope_dot_product_depends_only_on_distance(figure):
    d_head = 10
    rope = RotaryEmbedding(d_head, 64)
    q, k = torch.randn(d_head, dtype=torch.float64), torch.randn(d_head, dtype=torch.float64)
    rope.cos, rope.sin = rope.cos.double(), rope.sin.double()

    def score(m, n):
        qm = rope.rotate(q[None, None, None], torch.tensor([m]))
        kn = rope.rotate(k[None, None, None], torch.tensor([n]))
        return (qm * kn).sum().item()

    diffs = [abs(score(m, m - d) - score(m + s, m + s - d)) for m in (5, 9, 20) for d in (0, 1, 4) for s in (3, 30)]
    figure(max_abs_diff=max(diffs))
    assert max(diffs) <= 1e-6
    assert abs(score(7, 3) - score(7, 5)) > 1e-3  # and it does depend on the distance


def test_rope_rotation_preserves_norm_and_is_identity_at_zero():
    rope = RotaryEmbedding(8, 16)
    x = torch.randn(3, 2, 5, 8)
    y = rope.rotate(x, torch.arange(5))
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.equal(y[:, :, 0], x[:, :, 0])
