"""Chunked linear cross-entropy vs F.cross_entropy on materialised logits."""

import pytest
import torch
import torch.nn.functional as F

from lmlab.model import loss as loss_module
from lmlab.model.loss import linear_cross_entropy


@pytest.mark.parametrize("bias", [True, False])
def test_equals_cross_entropy_forward_and_grads(bias, monkeypatch, figure):
    monkeypatch.setattr(loss_module, "ROWS_PER_SLICE", {2: 4, 4: 4, 8: 4})
    monkeypatch.setattr(loss_module, "BLOCK_ELEMENTS", 99 * 8)  # blocks of 8 rows, slices of 4
    h = torch.randn(3, 7, 10, dtype=torch.float64, requires_grad=True)
    w = torch.randn(99, 10, dtype=torch.float64, requires_grad=True)
    b = torch.randn(99, dtype=torch.float64, requires_grad=True) if bias else None
    y = torch.randint(0, 99, (3, 7))
    y[0, :3] = -100
    ours = linear_cross_entropy(h, w, b, y)
    ref = F.cross_entropy(F.linear(h, w, b).reshape(-1, 99), y.reshape(-1), ignore_index=-100)
    params = [h, w] + ([b] if bias else [])
    g1 = torch.autograd.grad(ours * 2.5, params)
    g2 = torch.autograd.grad(ref * 2.5, params)
    diff = max([abs(ours.item() - ref.item())] + [(a - c).abs().max().item() for a, c in zip(g1, g2)])
    figure(max_abs_diff=diff)
    assert diff <= 1e-10


def test_bf16_autocast_close_to_fp32():
    h = torch.randn(21, 16, requires_grad=True)
    w = torch.randn(99, 16, requires_grad=True)
    y = torch.randint(0, 99, (21,))
    ref = F.cross_entropy(h @ w.t(), y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear_cross_entropy(h, w, None, y)
    ours.backward()
    assert ours.dtype == torch.float32 and abs(ours.item() - ref.item()) < 0.05 * ref.item()
    assert h.grad.dtype == torch.float32 and w.grad.dtype == torch.float32


def test_no_grad_computes_only_the_loss():
    h, w, y = torch.randn(5, 4), torch.randn(9, 4), torch.randint(0, 9, (5,))
    with torch.no_grad():
        assert torch.allclose(linear_cross_entropy(h, w, None, y), F.cross_entropy(h @ w.t(), y))


def test_model_labels_give_the_loss_of_its_logits():
    from lmlab.model import Transformer, preset

    for family in ("gpt2", "bert"):
        model = Transformer(preset(f"{family}-tiny", vocab_size=99, d_model=36, n_heads=3, n_layers=2,
                                   max_seq_len=16, dropout=0.0, attn_dropout=0.0)).double()
        ids = torch.randint(0, 99, (3, 7))
        labels = torch.randint(0, 99, (3, 7))
        labels[:, ::2] = -100
        out = model(ids, labels=labels)
        logits = model(ids).logits
        ref = F.cross_entropy(logits.reshape(-1, 99), labels.reshape(-1), ignore_index=-100)
        assert out.logits is None and abs(out.loss.item() - ref.item()) < 1e-10


def test_frozen_weight_gives_only_the_input_gradient():
    h = torch.randn(3, 7, 10, dtype=torch.float64, requires_grad=True)
    w = torch.randn(99, 10, dtype=torch.float64)  # frozen (e.g. a tied embedding under LoRA)
    y = torch.randint(0, 99, (3, 7))
    (ours,) = torch.autograd.grad(linear_cross_entropy(h, w, None, y), [h])
    (ref,) = torch.autograd.grad(F.cross_entropy(F.linear(h, w).reshape(-1, 99), y.reshape(-1)), [h])
    assert (ours - ref).abs().max().item() <= 1e-12


def test_bf16_bias_gradient_keeps_float32_precision():
    """The bias gradient sums the float32 softmax, not its bf16-rounded copy (BERT's decoder bias)."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(300, 16, generator=g, requires_grad=True)
    w = (torch.randn(999, 16, generator=g) * 0.1).requires_grad_()
    b = (torch.randn(999, generator=g) * 0.1).requires_grad_()
    y = torch.randint(0, 999, (300,), generator=g)
    y[::5] = -100
    (ref,) = torch.autograd.grad(F.cross_entropy(F.linear(h, w, b), y, ignore_index=-100), [b])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (ours,) = torch.autograd.grad(linear_cross_entropy(h, w, b, y), [b])
    assert ((ours - ref).norm() / ref.norm()).item() < 3e-4  # ~8e-5; summing the bf16-rounded G gives ~1.1e-3


def test_bf16_blocks_accumulate_like_one_block(monkeypatch):
    """Several blocks (∂W summed across them in float32) give what one block gives, under autocast."""
    g = torch.Generator().manual_seed(1)
    h = torch.randn(3, 7, 16, generator=g)
    w = torch.randn(99, 16, generator=g) * 0.3
    y = torch.randint(0, 99, (3, 7), generator=g)

    def grads():
        hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = linear_cross_entropy(hh, ww, None, y)
        loss.backward()
        return loss.detach(), hh.grad, ww.grad

    one = grads()
    monkeypatch.setattr(loss_module, "ROWS_PER_SLICE", {2: 4, 4: 4, 8: 4})
    monkeypatch.setattr(loss_module, "BLOCK_ELEMENTS", 99 * 8)  # 3 blocks of ≤ 8 rows
    many = grads()
    assert many[2].dtype == torch.float32
    for a, b in zip(one, many):
        assert torch.allclose(a, b, rtol=2e-2, atol=1e-4)
