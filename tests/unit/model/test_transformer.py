"""Whole-model invariants: causality, KV cache = recomputation, formula = fused,
padding invariance, parameter counts in closed form, config validation."""

import pytest
import torch

from lmlab import machine

from lmlab.errors import ConfigError
from lmlab.model import KVCache, Transformer, TransformerConfig, preset
from lmlab.model.summary import count_parameters, flops_per_token

V = 99
FAMILIES = ["bert", "gpt2", "llama", "transformer"]


# Llama with every switch of the Qwen and Llama 3 checkpoints on: head width 10 ≠ 36 / 3,
# biases on q, k, v only, QK-norm, rope scaling.
QWEN_LIKE = dict(n_kv_heads=1, head_dim=10, qkv_bias=True, qk_norm=True, rope_scaling="llama3",
                 rope_original_max_seq_len=32, rope_high_freq_factor=8.0)


def tiny(family: str, **kw) -> Transformer:
    if family == "qwen-like":
        family, kw = "llama", {**QWEN_LIKE, **kw}
    cfg = preset(f"{family}-tiny", vocab_size=V, d_model=36, n_heads=3, n_layers=2, d_ff=44,
                 max_seq_len=64, dropout=0.0, attn_dropout=0.0, **kw)
    return Transformer(cfg).eval()


def run(model, ids, dec=None, **kw):
    if model.config.arch == "encoder-decoder":
        return model(ids, decoder_input_ids=dec if dec is not None else ids, **kw)
    return model(ids, **kw)


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen-like", "transformer"])
def test_causality_future_tokens_do_not_change_the_past(family, figure):
    model = tiny(family)
    ids = torch.randint(0, V, (3, 7))
    for t in range(1, 7):
        changed = ids.clone()
        changed[:, t:] = torch.randint(0, V, (3, 7 - t))
        with torch.no_grad():
            a = run(model, ids).logits[:, :t]
            b = run(model, ids, changed).logits[:, :t] if family == "transformer" else run(model, changed).logits[:, :t]
        figure(**{f"max_change_t{t}": (a - b).abs().max()})
        assert torch.equal(a, b)


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen-like", "transformer"])
def test_kv_cache_equals_full_recomputation(family, figure):
    kw = {"n_kv_heads": 1} if family == "llama" else {}
    model = tiny(family, **kw)
    src = torch.randint(0, V, (3, 5))
    ids = torch.randint(0, V, (3, 40))
    with torch.no_grad():
        full = run(model, src, ids).logits if family == "transformer" else run(model, ids).logits
        cache = KVCache.for_model(model.config, batch_size=3, max_len=64)
        steps, memory = [], None
        chunks = [ids[:, :9]] + [ids[:, i:i + 1] for i in range(9, 40)]  # a prompt, then token by token
        for chunk in chunks:
            if family == "transformer":
                out = model(src, decoder_input_ids=chunk, memory=memory, cache=cache)
                memory = out.memory
            else:
                out = model(chunk, cache=cache)
            steps.append(out.logits)
    inc = torch.cat(steps, dim=1)
    diff = (inc - full).abs().max().item()
    figure(max_logit_diff=diff)
    assert diff <= 1e-5
    assert torch.equal(inc.argmax(-1), full.argmax(-1))


@pytest.mark.parametrize("kind", ["avx2", "avx512_bf16", "amx_bf16"])
@pytest.mark.parametrize("family", ["gpt2", "transformer"])
def test_bf16_model_cache_dtype_follows_the_cpu(family, kind, figure):
    """Half-precision weights; a float32 cache (attention in float32) unless the CPU's bf16
    attention is the faster (AMX): the cached logits stay as close to the bf16 full
    recomputation as bf16 rounding allows."""
    model = tiny(family).to(torch.bfloat16)
    src = torch.randint(0, V, (3, 5))
    ids = torch.randint(0, V, (3, 12))
    with machine.force(kind):
        cache = KVCache.for_model(model.config, batch_size=3, max_len=16, dtype=torch.bfloat16)
    assert cache.k[0].dtype == (torch.bfloat16 if kind == "amx_bf16" else torch.float32)
    with torch.no_grad():
        full = (run(model, src, ids) if family == "transformer" else run(model, ids)).logits.float()
        steps, memory = [], None
        for i in range(12):
            chunk = ids[:, i:i + 1]
            if family == "transformer":
                out = model(src, decoder_input_ids=chunk, memory=memory, cache=cache)
                memory = out.memory
            else:
                out = model(chunk, cache=cache)
            assert out.logits.dtype == torch.bfloat16
            steps.append(out.logits.float())
    diff = (torch.cat(steps, 1) - full).abs().max().item()
    scale = full.abs().max().item()
    figure(max_logit_diff=diff, logit_scale=scale)
    assert diff <= 0.05 * scale


@pytest.mark.parametrize("family", [*FAMILIES, "qwen-like"])
def test_formula_path_equals_fused_path_with_grads(family):
    fused = tiny(family).double()
    formula = tiny(family, attention_impl="formula").double()
    formula.load_state_dict(fused.state_dict())
    ids = torch.randint(1, V, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:] = 0
    kw = {"attention_mask": mask}
    a, b = run(fused, ids, **kw).logits, run(formula, ids, **kw).logits
    assert (a - b).abs().max() <= 1e-10
    a.sum().backward()
    b.sum().backward()
    worst = max((p.grad - q.grad).abs().max().item()
                for p, q in zip(fused.parameters(), formula.parameters()) if p.grad is not None)
    assert worst <= 1e-9


def test_encoder_padding_does_not_change_real_tokens():
    model = tiny("bert")
    ids = torch.randint(1, V, (1, 5))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        a = model(ids).hidden_states
        b = model(padded, attention_mask=mask).hidden_states[:, :5]
    assert (a - b).abs().max() <= 1e-5


def test_output_attentions_are_distributions_with_causal_zeros():
    model = tiny("gpt2")
    out = model(torch.randint(0, V, (3, 7)), output_attentions=True)
    w = out.attentions[0]["self"]
    assert w.shape == (3, 3, 7, 7)
    assert torch.allclose(w.sum(-1), torch.ones(3, 3, 7))
    assert w.triu(1).abs().max() == 0


def test_mlm_head_positions_select_rows():
    model = tiny("bert")
    ids = torch.randint(1, V, (3, 7))
    where = torch.zeros(3, 7, dtype=torch.bool)
    where[0, 2] = where[2, 5] = True
    full = model(ids).logits
    some = model(ids, head_positions=where).logits
    assert some.shape == (2, V)
    assert torch.allclose(some, full[where], atol=1e-6)


def test_decoder_classification_reads_the_last_real_token():
    model = tiny("gpt2", head="classification", n_labels=3)
    ids = torch.randint(1, V, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6])
    with torch.no_grad():
        a = model(ids, attention_mask=mask).logits
        b = model(ids[:1, :4]).logits
    assert a.shape == (2, 3)
    assert torch.allclose(a[0], b[0], atol=1e-5)


def test_gpt2_parameter_count_in_closed_form():
    cfg = preset("gpt2-base")
    d, L, V_, P = cfg.d_model, cfg.n_layers, cfg.vocab_size, cfg.max_seq_len
    # per layer: 4d² + 4d (attention) + 8d² + 5d (MLP) + 4d (two LayerNorms)
    expected = V_ * d + P * d + L * (12 * d * d + 13 * d) + 2 * d
    assert count_parameters(cfg)["parameters"] == expected == 124_439_808
    # forward FLOPs ≈ 2N (non-embedding) + 2dV + attention
    n = L * 12 * d * d
    assert flops_per_token(cfg, 1024) == 2 * n + 2 * d * V_ + 4 * L * 1024 * d
    # a masked LM computes its head (transform d² + projection dV) at the masked positions only
    bert = preset("bert-base")
    n_b, head = bert.n_layers * 12 * d * d, d * d + d * bert.vocab_size
    assert flops_per_token(bert, 128, training=True, scored_fraction=0.15) == \
        pytest.approx(3 * (2 * n_b + 2 * 0.15 * head + 4 * bert.n_layers * 128 * d), abs=3)


def test_bert_base_matches_published_size():
    assert abs(count_parameters(preset("bert-base"))["parameters"] - 110_000_000) < 200_000


@pytest.mark.parametrize("bad, field", [
    (dict(d_model=100, n_heads=3), "d_model"),
    (dict(n_heads=4, n_kv_heads=3), "n_kv_heads"),
    (dict(arch="encoder", head="clm"), "head"),
    (dict(dropout=1.5), "dropout"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(head_dim=0), "head_dim"),
    (dict(position="rope", head_dim=7), "head_dim"),
    (dict(position="learned", rope_scaling="llama3"), "rope_scaling"),
    (dict(position="rope", rope_scaling="llama3", rope_low_freq_factor=4.0), "rope_low_freq_factor"),
])
def test_invalid_configs_name_the_field(bad, field):
    with pytest.raises(ConfigError, match=field):
        TransformerConfig(**bad)


def test_unknown_preset_and_keys_are_rejected():
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("gpt5-huge")
    with pytest.raises(ConfigError, match="valid keys"):
        TransformerConfig.from_dict({"d_modle": 3})


def test_too_long_input_is_a_clear_error():
    model = tiny("gpt2")
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 65, dtype=torch.long))


@pytest.mark.parametrize("ids, msg", [
    (torch.zeros(7, dtype=torch.long), "shape"),
    (torch.zeros(2, 7), "integer"),
    (torch.full((2, 7), V), "vocab_size=99"),
    (torch.full((2, 7), -1), "outside"),
])
def test_bad_input_ids_are_clear_errors(ids, msg):
    with pytest.raises(ValueError, match=msg):
        tiny("gpt2")(ids)


def test_pointer_generator_in_closed_form():
    """p(w) = g·softmax(E·h)(w) + (1 − g)·Σ_{s: x_s = w} a_s, written out token by token with the
    model's own weights; padding in the source gets no copy mass."""
    torch.manual_seed(0)
    model = tiny("transformer", copy=True, init_std=0.1)
    src = torch.randint(4, V, (3, 7))
    src[0, 5:] = 2  # id 2 appears only in row 0's padding
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, 5:] = 0
    dec = torch.randint(4, V, (3, 5))
    with torch.no_grad():
        out = model(src, attention_mask=mask, decoder_input_ids=dec)
        h, m, pg = out.hidden_states, out.memory, model.pointer
        vocab = torch.softmax(h @ model.embed.tokens.weight.T, -1)  # tied output projection, no bias
        want = torch.zeros(3, 5, V)
        for b in range(3):
            real = mask[b].bool()
            for t in range(5):
                a = torch.softmax((pg.q(h[b, t]) @ pg.k(m[b, real]).T) / 36 ** 0.5, -1)
                g = torch.sigmoid(pg.gate(torch.cat([h[b, t], a @ m[b, real]])))
                want[b, t] = g * vocab[b, t]
                for s, x in enumerate(src[b, real].tolist()):
                    want[b, t, x] += (1 - g[0]) * a[s]
    torch.testing.assert_close(out.logits.exp(), want, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.logits.exp().sum(-1), torch.ones(3, 5))
    row0 = out.logits[0].exp()[:, 2]
    assert torch.all(row0 < vocab[0, :, 2] + 1e-6)  # no copy mass from the padding
    labels = torch.randint(4, V, (3, 5))
    loss = model(src, attention_mask=mask, decoder_input_ids=dec, labels=labels).loss
    torch.testing.assert_close(loss, -want.log().gather(-1, labels[..., None]).mean(), rtol=1e-4, atol=1e-6)


def test_copy_needs_the_seq2seq_head():
    with pytest.raises(ConfigError, match="copy"):
        preset("gpt2-tiny", vocab_size=V, copy=True)
