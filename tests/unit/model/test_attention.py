"""Attention written as the formula vs torch's own SDPA and nn.MultiheadAttention; fully masked rows and
large logits stay finite."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmlab import machine
from lmlab.model.attention import (FORMULA_GRAD_MAX_KEYS, KVCache, MultiHeadAttention, causal_mask,
                                   fused_grad_is_slow, scaled_dot_product_attention)
from lmlab.model.config import TransformerConfig

B, H, T, S, D = 3, 2, 7, 5, 6


def _qkv(t=T, s=S, requires_grad=True):
    q = torch.randn(B, H, t, D, dtype=torch.float64, requires_grad=requires_grad)
    k = torch.randn(B, H, s, D, dtype=torch.float64, requires_grad=requires_grad)
    v = torch.randn(B, H, s, D, dtype=torch.float64, requires_grad=requires_grad)
    return q, k, v


def _masks():
    pad = torch.ones(B, 1, 1, S, dtype=torch.bool)
    pad[0, ..., 3:] = False  # sequence 0 has 3 real keys
    pad[2, ..., 1:] = False
    return {
        "none": (None, S),
        "padding": (pad, S),
        "causal": (causal_mask(T, T), T),
        "causal+padding": (causal_mask(T, T)[None, None] & torch.tensor([1, 1, 1, 1, 1, 0, 0]).bool(), T),
        "cross": (pad, S),
    }


@pytest.mark.parametrize("case", list(_masks()))
def test_formula_equals_torch_sdpa_forward_and_grads(case, figure):
    mask, s = _masks()[case]
    q, k, v = _qkv(T, s)
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), g)
    ref_grads = torch.autograd.grad(ref, (q, k, v), g)
    diff = max([(out - ref).abs().max().item()] + [(a - b).abs().max().item() for a, b in zip(grads, ref_grads)])
    figure(max_abs_diff=diff)
    assert diff <= 1e-6
    assert torch.allclose(weights.sum(-1), torch.ones(B, H, T, dtype=torch.float64))


def test_formula_matches_closed_form_by_hand():
    q, k, v = (x.detach() for x in _qkv())
    out, _ = scaled_dot_product_attention(q, k, v)
    b, h, i = 1, 1, 4
    scores = [sum(q[b, h, i, d] * k[b, h, j, d] for d in range(D)) / math.sqrt(D) for j in range(S)]
    z = sum(math.exp(s) for s in scores)
    expected = sum(math.exp(scores[j]) / z * v[b, h, j] for j in range(S))
    assert torch.allclose(out[b, h, i], expected)


def test_fully_padded_row_gives_zeros_not_nan_on_both_paths():
    q, k, v = _qkv()
    mask = torch.ones(B, 1, T, S, dtype=torch.bool)
    mask[1] = False  # an all-padding sequence
    out, _ = scaled_dot_product_attention(q, k, v, mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    (out.sum() + ref.sum()).backward()
    assert not out.isnan().any() and not ref.isnan().any()
    assert out[1].abs().max() == 0 and ref[1].abs().max() == 0
    assert not q.grad.isnan().any() and not k.grad.isnan().any()


def test_large_scores_stay_finite_in_fp32_and_bf16(figure):
    q = torch.full((1, 1, 4, 8), 100.0)
    k = torch.full((1, 1, 4, 8), 100.0) * torch.tensor([1, -1, 1, -1.0])[:, None]
    v = torch.randn(1, 1, 4, 8)
    out32, _ = scaled_dot_product_attention(q, k, v)  # scores ≈ ±2.8e4
    out16, _ = scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert torch.isfinite(out32).all() and torch.isfinite(out16).all()
    figure(bf16_vs_fp32_max_rel=((out16.float() - out32).abs().max() / out32.abs().max()).item())


def test_multihead_equals_torch_multiheadattention():
    cfg = TransformerConfig(d_model=12, n_heads=3, d_ff=8, attention_impl="formula")
    ours = MultiHeadAttention(cfg).double()
    ref = torch.nn.MultiheadAttention(12, 3, batch_first=True).double()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q.weight, ours.k.weight, ours.v.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q.bias, ours.k.bias, ours.v.bias]))
        ref.out_proj.weight.copy_(ours.o.weight)
        ref.out_proj.bias.copy_(ours.o.bias)
    x = torch.randn(B, T, 12, dtype=torch.float64)
    key_padding = torch.zeros(B, T, dtype=torch.bool)
    key_padding[0, 5:] = True  # torch: True = ignore
    expected, expected_w = ref(x, x, x, key_padding_mask=key_padding, average_attn_weights=False)
    out, w = ours(x, attn_mask=~key_padding[:, None, None, :], need_weights=True)
    assert (out - expected).abs().max() <= 1e-10
    assert (w - expected_w).abs().max() <= 1e-10


@pytest.mark.parametrize("kv_heads", [3, 1])
def test_fused_equals_formula_inside_module(kv_heads):
    cfg = TransformerConfig(d_model=12, n_heads=3, n_kv_heads=kv_heads, d_ff=8)
    m = MultiHeadAttention(cfg).double()
    x = torch.randn(B, T, 12, dtype=torch.float64)
    memory = torch.randn(B, S, 12, dtype=torch.float64)
    for kwargs in ({"is_causal": True}, {"memory": memory}):
        m.impl = "fused"
        a, _ = m(x, **kwargs)
        m.impl = "formula"
        b, _ = m(x, **kwargs)
        assert (a - b).abs().max() <= 1e-10


def test_kv_cache_overflow_is_an_error():
    cache = KVCache(1, 1, 1, 4, 2)
    cache.update(0, torch.zeros(1, 1, 3, 2), torch.zeros(1, 1, 3, 2))
    cache.advance(3)
    with pytest.raises(ValueError, match="overflow"):
        cache.update(0, torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))


def test_fused_qkv_lives_in_the_packed_weights_and_training_sees_every_update():
    """A decode keeps [Wq; Wk; Wv] in its packed weights (one concatenation for their lifetime,
    however many generations a server runs); without them every call rebuilds it, so updates
    that do not bump version counters (fused AdamW) are seen by evaluation between training steps."""
    from lmlab.model import TransformerConfig
    from lmlab.model.attention import MultiHeadAttention
    from lmlab.model.linear import PackedWeights

    torch.manual_seed(0)
    mha = MultiHeadAttention(TransformerConfig(d_model=36, n_heads=3, n_kv_heads=1)).eval()
    x = torch.randn(2, 5, 36)
    pack = PackedWeights()
    for _ in range(3):  # three generations with one pack
        cache = KVCache(1, 2, 1, 8, 12)
        with torch.inference_mode(), pack:
            mha(x[:, :3], cache=cache)
            cache.advance(3)
            mha(x[:, 3:4], cache=cache)
    assert len(pack._stacked) == 2  # [Wq; Wk; Wv], [bq; bk; bv]
    assert len(pack._packed) == (0 if machine.detect().blas_float32 else 2)  # float32 packed where MKL does not
    # take it: the copies of [Wq; Wk; Wv] and Wᴼ, made once
    w, b = (t for _, t in pack._stacked.values())
    assert torch.equal(w, torch.cat((mha.q.weight, mha.k.weight, mha.v.weight)))
    assert torch.equal(b, torch.cat((mha.q.bias, mha.k.bias, mha.v.bias)))
    with torch.no_grad():
        first = mha(x)[0]
        opt = torch.optim.AdamW(mha.parameters(), lr=0.1, fused=True)
        for p in mha.parameters():
            p.grad = torch.ones_like(p)
        opt.step()  # in place, version counters unchanged
        changed = mha(x)[0]
    assert not torch.allclose(first, changed)
    reference = F.scaled_dot_product_attention(
        mha.q(x).view(2, 5, 3, 12).transpose(1, 2),
        mha.k(x).view(2, 5, 1, 12).transpose(1, 2).repeat_interleave(3, 1),
        mha.v(x).view(2, 5, 1, 12).transpose(1, 2).repeat_interleave(3, 1)).transpose(1, 2).reshape(2, 5, 36)
    assert (mha.o(reference) - changed).abs().max() <= 1e-5
    out = mha(x)[0]  # autograd on: gradients reach q, k and v
    out.sum().backward()
    assert all(p.grad is not None for p in (mha.q.weight, mha.k.weight, mha.v.weight))


def test_half_precision_training_on_cpu_takes_the_formula_where_it_is_faster():
    short, long = torch.zeros(1, 1, FORMULA_GRAD_MAX_KEYS, 4), torch.zeros(1, 1, FORMULA_GRAD_MAX_KEYS + 1, 4)
    bf16 = torch.zeros(1, 1, 3, 4, dtype=torch.bfloat16)
    assert fused_grad_is_slow(bf16.requires_grad_(), short)
    assert not fused_grad_is_slow(bf16, long)
    assert not fused_grad_is_slow(bf16.detach(), short)  # inference keeps the fused forward
    fp32 = torch.zeros(1, 1, 3, 4, requires_grad=True)
    assert not fused_grad_is_slow(fp32, short)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # float32 inputs that autocast will multiply in bf16
        assert fused_grad_is_slow(fp32, short)


def test_fused_module_under_bf16_autocast_matches_float32_training(figure):
    """The module's training path in bf16 (the formula, `fused_grad_is_slow`) and float32 (torch's
    kernel) agree to bf16 precision in output and input gradient."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(TransformerConfig(d_model=32, n_heads=4, d_ff=8))
    x = torch.randn(3, 7, 32, requires_grad=True)
    pad = torch.ones(3, 1, 1, 7, dtype=torch.bool)
    pad[1, ..., 2:] = False
    ref, _ = mha(x, attn_mask=pad)
    (gref,) = torch.autograd.grad(ref.pow(2).sum(), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = mha(x, attn_mask=pad)
    (g,) = torch.autograd.grad(out.float().pow(2).sum(), x)
    figure(max_out_diff=(out.float() - ref).abs().max().item(), max_grad_diff=(g - gref).abs().max().item())
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(g, gref, atol=5e-2 * gref.abs().max().item(), rtol=5e-2)
