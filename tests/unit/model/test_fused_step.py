"""FusedStep against the model's own cached path: float32 logits equal up to summation order
for every decoder variant it covers (odd shapes: d_model 36, 3 heads, vocab 97, batch 3),
dense and left-padded, through oneDNN's fused kernels and through plain F.linear; bf16 within
bf16 rounding with the same greedy tokens; and the models it must refuse."""

import pytest
import torch

from lmlab import machine
from lmlab.model import KVCache, Transformer, preset
from lmlab.model import fused_step
from lmlab.model.fused_step import FusedStep, unsupported
from lmlab.model.linear import PackedWeights

V = 97
SHAPE = dict(vocab_size=V, d_model=36, n_heads=3, n_layers=2, d_ff=44, max_seq_len=40, dropout=0.0,
             attn_dropout=0.0, init_std=0.3)
VARIANTS = {
    "gpt2": ("gpt2", {}),
    "gpt2-gelu-relu-untied-bias": ("gpt2", dict(activation="relu", tie_embeddings=False, lm_head_bias=True)),
    "gpt2-erf-gelu-sinusoidal-scaled": ("gpt2", dict(activation="gelu", position="sinusoidal",
                                                      scale_embeddings=True, embedding_norm=True)),
    "gpt2-silu-no-bias-no-positions": ("gpt2", dict(activation="silu", bias=False, position="none")),
    "llama-gqa": ("llama", dict(n_kv_heads=1, init_std=0.1)),
    "qwen2-qkv-bias": ("llama", dict(n_kv_heads=1, qkv_bias=True, init_std=0.1)),
    "qwen3-qk-norm-head-dim": ("llama", dict(n_heads=4, n_kv_heads=2, head_dim=10, qk_norm=True, init_std=0.1,
                                             rope_scaling="llama3", rope_original_max_seq_len=16)),
}
PROMPTS = [[5, 17, 3, 44, 8, 61, 2], [9], [30, 31, 32]]


def model_of(variant: str) -> Transformer:
    family, extra = VARIANTS[variant]
    torch.manual_seed(0)
    model = Transformer(preset(f"{family}-tiny", **{**SHAPE, **extra})).eval()
    with torch.no_grad():  # norm gains and biases away from 1 and 0, so that a swapped one shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0, 0.5)
    return model


def both_paths(model, prompts, steps: int, route: str | None = None, rows: int | None = None):
    """Logits [steps, B, V] of the model's cached path and of FusedStep, fed the model path's greedy tokens."""
    b, width = len(prompts), max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    padded = not bool(mask.all())
    full_mask = torch.cat((mask, torch.ones(b, steps, dtype=torch.long)), 1)
    dtype = next(model.parameters()).dtype
    caches = [KVCache.for_model(model.config, b, width + steps, dtype=dtype) for _ in range(2)]
    pack = PackedWeights()
    step = FusedStep(model, pack, route, rows=rows)
    out = {"model": [], "fused": []}
    with torch.inference_mode():
        positions = (mask.cumsum(-1) - 1).clamp(min=0) if padded else None
        for cache in caches:  # the same prefill on both
            with pack:
                model(ids, attention_mask=mask if padded else None, cache=cache, position_ids=positions)
        if padded:
            positions = positions[:, -1:] + 1
        tokens = torch.tensor([[p[-1]] for p in prompts])
        for _ in range(steps):
            end = caches[0].length + 1
            with pack:
                z = model(tokens, attention_mask=full_mask[:, :end] if padded else None, cache=caches[0],
                          position_ids=positions).logits[:, -1]
            attn_mask = full_mask[:, :end].bool()[:, None, None, :] if padded else None
            out["model"].append(z)
            out["fused"].append(step.step(tokens, caches[1], positions, attn_mask))
            tokens = z.argmax(-1, keepdim=True)
            if padded:
                positions = positions + 1
    return torch.stack(out["model"]).float(), torch.stack(out["fused"]).float(), step


@pytest.mark.parametrize("route", fused_step.ROUTES)
@pytest.mark.parametrize("prompts", [PROMPTS[:1], PROMPTS], ids=["dense", "left-padded"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_float32_steps_equal_the_model(variant, prompts, route, figure):
    if route == "onednn" and fused_step._LP is None:
        pytest.skip("this torch has no oneDNN linear")
    model = model_of(variant)
    ref, got, step = both_paths(model, prompts, 6, route)
    assert step.route == route
    diff = (got - ref).abs().max().item()
    figure(max_abs_logit_diff=diff)
    assert diff <= 1e-5 * max(1.0, ref.abs().max().item())
    assert torch.equal(got.argmax(-1), ref.argmax(-1))


@pytest.mark.skipif(fused_step._MKL_LINEAR is None, reason="this torch has no MKL")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_float32_products_through_weights_packed_for_the_batch_size_equal_the_model(variant, figure):
    """The "blas" route with ``rows``: every product of a batch of 3 through MKL's weights packed
    for 3 rows (dense and left-padded rows alike)."""
    ref, got, step = both_paths(model_of(variant), PROMPTS, 6, "blas", rows=3)
    assert step.rows == 3 and all(isinstance(p, fused_step._MklProduct) for p in step.products)
    diff = (got - ref).abs().max().item()
    figure(max_abs_logit_diff=diff)
    assert diff <= 1e-5 * max(1.0, ref.abs().max().item())
    assert torch.equal(got.argmax(-1), ref.argmax(-1))


@pytest.mark.skipif(torch.bfloat16 not in machine.detect().packed_dtypes, reason="no native bf16 oneDNN on this CPU")
@pytest.mark.parametrize("variant", ["gpt2", "llama-gqa", "qwen3-qk-norm-head-dim"])
def test_bf16_steps_round_once_where_the_model_rounds_twice(variant, figure):
    """Fused post-ops round a product and its activation or residual once: not bit-identical to
    the model's bf16 path, but as close as bf16 allows, with the same greedy tokens."""
    model = model_of(variant).to(torch.bfloat16)
    ref, got, step = both_paths(model, PROMPTS, 6)
    assert step.route == "onednn"
    diff = (got - ref).abs().max().item()
    scale = ref.abs().max().item()
    figure(max_abs_logit_diff=diff, max_abs_logit=scale)
    assert diff <= 0.05 * scale  # bf16 keeps 8 bits: 2⁻⁸ ≈ 0.4% per rounding, a few per layer
    top2 = ref.topk(2, dim=-1).values
    clear = top2[..., 0] - top2[..., 1] > 2 * diff  # where rounding cannot swap the two best
    assert clear.float().mean() >= 0.5
    assert torch.equal(got.argmax(-1)[clear], ref.argmax(-1)[clear])


def test_routes_by_dtype_and_machine(monkeypatch):
    import dataclasses

    model = model_of("gpt2")
    real = machine.detect()
    for vendor, route in (("GenuineIntel", "blas" if real.mkl else "onednn"), ("AuthenticAMD", "onednn")):
        m = dataclasses.replace(real, vendor=vendor, mkldnn=True)
        monkeypatch.setattr(machine, "detect", lambda: m)
        assert FusedStep(model, PackedWeights()).route == route  # float32 on CPU
    monkeypatch.undo()
    with machine.force("avx2"):  # bf16 emulated: F.linear, as the model's path
        assert FusedStep(model.to(torch.bfloat16), PackedWeights()).route == "plain"
    with pytest.raises(ValueError, match="route 'mkl'"):
        FusedStep(model, PackedWeights(), "mkl")


def test_what_it_refuses():
    assert unsupported(model_of("gpt2")) is None
    assert "training" in unsupported(model_of("gpt2").train())
    torch.manual_seed(0)
    assert "decoder-only" in unsupported(Transformer(preset("transformer-tiny", **SHAPE)))
    assert "post-norm" in unsupported(Transformer(preset("gpt2-tiny", **SHAPE, norm_position="post")).eval())
    model = model_of("gpt2")
    handle = model.decoder.layers[1].ffn.register_forward_hook(lambda *a: None)
    assert "hooks" in unsupported(model)
    with pytest.raises(ValueError, match="hooks"):
        FusedStep(model, PackedWeights())
    handle.remove()
    assert unsupported(model) is None
    model.decoder.layers[0].self_attn.forward = lambda *a, **k: None  # instrumentation, as a test's slow model
    assert "replaced" in unsupported(model)


def test_the_decode_loop_steps_through_it():
    from lmlab.generate.decode import Stepper

    model = model_of("llama-gqa")
    stepper = Stepper(model, PROMPTS, 4, pad_id=0)
    assert stepper.fusable and stepper.fused is None
    with torch.inference_mode():
        stepper.forward(stepper.first_ids)  # the prefill: the model's path, nothing packed
        assert stepper.fused is None and not stepper.pack._packed
        stepper.forward(torch.tensor([[4]] * len(PROMPTS)))
    assert stepper.fused is not None
    torch.manual_seed(0)
    seq2seq = Transformer(preset("transformer-tiny", **SHAPE)).eval()
    assert not Stepper(seq2seq, PROMPTS, 4, pad_id=0, decoder_start_id=0).fusable


def test_steps_reuse_their_buffers_until_the_cache_is_reordered():
    """q, k, v and the FFN's activations go into buffers made once per cache; a beam search's
    reorder replaces the cache's tensors, and the next step takes buffers (and views) of the new ones."""
    model = model_of("gpt2")
    b = len(PROMPTS)
    cache, ref = (KVCache.for_model(model.config, b, 12) for _ in range(2))
    step, tokens = FusedStep(model, PackedWeights()), torch.tensor([[4], [7], [9]])
    with torch.inference_mode():
        step.step(tokens, cache)
        workspace, buffer = step.workspace, step.workspace.qkv.data_ptr()
        step.step(tokens, cache)
        assert step.workspace is workspace and step.workspace.qkv.data_ptr() == buffer
        order = torch.tensor([2, 0, 1])
        cache.reorder(order)
        got = step.step(tokens, cache)
        assert step.workspace is not workspace and step.workspace.keys[0].data_ptr() == cache.kv[0][0].data_ptr()
        for _ in range(2):  # the reference: the model's own path over the same rows in the new order
            model(tokens, cache=ref)
        ref.reorder(order)
        want = model(tokens, cache=ref).logits[:, -1]
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
