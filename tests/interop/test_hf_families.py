"""Qwen2, Qwen3 and Llama 3 rope scaling against transformers, with no network: random-init tiny
HF models with odd shapes (vocab 99, batch 3, seq 7, 2 layers, grouped-query attention, a Qwen3
head width apart from hidden/heads, tied and untied output embeddings) → lmlab → HF again, and
greedy continuations of lmlab.generate equal to transformers' generate(do_sample=False)."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

from lmlab.errors import ConfigError  # noqa: E402
from lmlab.hf.convert import export_hf, import_hf  # noqa: E402
from lmlab.model import load_model  # noqa: E402
from lmlab.model.position import llama3_frequencies  # noqa: E402

V, B, T = 99, 3, 7
COMMON = dict(vocab_size=V, num_hidden_layers=2, intermediate_size=44, max_position_embeddings=64,
              bos_token_id=None, eos_token_id=None, pad_token_id=None)
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 4.0, "low_freq_factor": 1.0,
               "high_freq_factor": 32.0, "original_max_position_embeddings": 256}


def hf_model(name: str, init_std: float = 0.02):
    """A fresh random HF model; its name says the family and the embedding tie."""
    T_ = transformers
    common = {**COMMON, "initializer_range": init_std}
    tied = name.endswith("tied") and not name.endswith("untied")
    if name.startswith("qwen2"):
        cfg = T_.Qwen2Config(**common, hidden_size=36, num_attention_heads=3, num_key_value_heads=1,
                             tie_word_embeddings=tied, rope_parameters={"rope_type": "default", "rope_theta": 5000.0})
        return T_.Qwen2ForCausalLM(cfg)
    if name.startswith("qwen3"):  # head_dim 10 ≠ 36 / 4
        cfg = T_.Qwen3Config(**common, hidden_size=36, num_attention_heads=4, num_key_value_heads=2, head_dim=10,
                             tie_word_embeddings=tied, rope_parameters={"rope_type": "default", "rope_theta": 20000.0})
        return T_.Qwen3ForCausalLM(cfg)
    cfg = T_.LlamaConfig(**common, hidden_size=36, num_attention_heads=3, num_key_value_heads=1,
                         tie_word_embeddings=tied, rope_parameters=dict(LLAMA3_ROPE))
    return T_.LlamaForCausalLM(cfg)


def perturb(model):
    """Norm gains and biases away from their 1 and 0 init, so that a swapped or missing one shows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                p.normal_(0, 0.5)
    return model


MODELS = ["qwen2-tied", "qwen2-untied", "qwen3-tied", "qwen3-untied", "llama3-untied", "llama3-tied"]
CLASSES = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "llama3": "LlamaForCausalLM"}


def logits(model, ids, mask=None):
    with torch.no_grad():
        return model(ids, attention_mask=mask).logits


@pytest.mark.parametrize("name", MODELS)
def test_import_export_round_trip_parity(name, tmp_path, figure):
    hf = perturb(hf_model(name)).eval()
    hf.save_pretrained(tmp_path / "hf")
    summary = import_hf(tmp_path / "hf", tmp_path / "lm")
    model = load_model(tmp_path / "lm").eval()
    ids = torch.randint(0, V, (B, T))
    ref = logits(hf, ids)
    imported = (logits(model, ids) - ref).abs().max().item()

    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 4:] = 0  # right padding in one row: real positions must agree
    padded = (logits(model, ids, mask) - logits(hf, ids, mask))[mask.bool()].abs().max().item()

    out = export_hf(tmp_path / "lm", tmp_path / "hf2")
    back = type(hf).from_pretrained(tmp_path / "hf2", use_safetensors=True).eval()
    exported = (logits(back, ids) - ref).abs().max().item()
    figure(import_max_abs_diff=imported, export_max_abs_diff=exported, padded_max_abs_diff=padded)
    assert summary["architecture"] == out["architecture"] == CLASSES[name.split("-")[0]]
    assert imported <= 1e-5 and padded <= 1e-5 and exported <= 1e-5
    cfg = model.config
    assert cfg.tie_embeddings == name.endswith("-tied")
    assert cfg.kv_heads < cfg.n_heads
    assert (cfg.qkv_bias, cfg.qk_norm) == {"qwen2": (True, False), "qwen3": (False, True),
                                           "llama3": (False, False)}[name.split("-")[0]]
    if name.startswith("qwen3"):
        assert cfg.d_head == 10 and cfg.d_head * cfg.n_heads != cfg.d_model
    if name.startswith("llama3"):
        assert cfg.rope_scaling == "llama3" and cfg.rope_theta == 500000.0
        assert back.config.rope_parameters["rope_type"] == "llama3"


def test_llama3_frequencies_equal_transformers():
    """Every regime of the rewrite is hit (kept, smoothed, divided) and equals transformers'."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    for d_head, rope in ((12, LLAMA3_ROPE), (64, {**LLAMA3_ROPE, "factor": 8.0, "high_freq_factor": 4.0,
                                                   "original_max_position_embeddings": 8192})):
        cfg = transformers.LlamaConfig(hidden_size=d_head * 2, num_attention_heads=2, rope_parameters=dict(rope))
        theirs, scale = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
        base = 1.0 / (rope["rope_theta"] ** (torch.arange(0, d_head, 2, dtype=torch.int64).float() / d_head))
        ours = llama3_frequencies(base, rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"],
                                  rope["original_max_position_embeddings"])
        assert scale == 1.0 and torch.equal(ours, theirs)
        kept, divided = ours == base, torch.isclose(ours, base / rope["factor"], rtol=1e-6, atol=0)
        assert kept.any() and divided.any() and (~kept & ~divided).any()


def test_llama3_scaling_from_older_config_names(tmp_path):
    """transformers 4's config.json: rope_theta at the top level and rope_scaling with "type"."""
    hf = hf_model("llama3-untied").eval()
    hf.save_pretrained(tmp_path / "hf")
    path = tmp_path / "hf/config.json"
    cfg = json.loads(path.read_text())
    rope = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = {"type": rope.pop("rope_type"), **rope}
    path.write_text(json.dumps(cfg))
    import_hf(tmp_path / "hf", tmp_path / "lm")
    model = load_model(tmp_path / "lm").eval()
    ids = torch.randint(0, V, (B, T))
    assert (logits(model, ids) - logits(hf, ids)).abs().max() <= 1e-5


@pytest.mark.parametrize("rope, message", [
    ({"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}, "rope_parameters.rope_type 'yarn'"),
    ({"rope_type": "llama3", "factor": 4.0, "rope_theta": 10000.0}, "lacks low_freq_factor, high_freq_factor"),
    ({"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}, "partial_rotary_factor"),
])
def test_unsupported_rope_scaling_is_refused_by_field(rope, message, tmp_path):
    hf_model("qwen2-untied").save_pretrained(tmp_path / "hf")
    path = tmp_path / "hf/config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "rope_parameters": rope}))
    with pytest.raises(ConfigError, match="config.json") as e:
        import_hf(tmp_path / "hf", tmp_path / "lm")
    assert message in str(e.value)
    assert not (tmp_path / "lm").exists()
    legacy = {k: v for k, v in json.loads(path.read_text()).items() if k != "rope_parameters"}
    path.write_text(json.dumps({**legacy, "rope_scaling": {"type": "dynamic", "factor": 2.0}}))
    with pytest.raises(ConfigError, match=r"config.json: rope_scaling.rope_type 'dynamic'"):
        import_hf(tmp_path / "hf", tmp_path / "lm")


def test_sliding_window_attention_is_refused(tmp_path):
    T_ = transformers
    cfg = T_.Qwen2Config(**COMMON, hidden_size=36, num_attention_heads=3, use_sliding_window=True,
                         sliding_window=4, max_window_layers=1)
    T_.Qwen2ForCausalLM(cfg).save_pretrained(tmp_path / "hf")
    with pytest.raises(ConfigError, match="sliding-window"):
        import_hf(tmp_path / "hf", tmp_path / "lm")


def greedy(model, prompts: list[list[int]], n: int) -> list[list[int]]:
    from lmlab.generate import DecodeLoop, GenerationConfig

    loop = DecodeLoop(model, prompts, GenerationConfig(temperature=0, max_new_tokens=n))
    list(loop)
    return loop.generated


@pytest.mark.parametrize("name", ["qwen2-tied", "qwen2-untied", "qwen3-tied", "qwen3-untied", "llama3-untied"])
def test_greedy_generation_equals_transformers(name, tmp_path):
    """20 new tokens for three prompts of different lengths (left padding on both sides)."""
    # weights of std 0.3: logits with std ≈ 2, so that argmax is not decided by rounding and the
    # continuations vary (a scaled-up embedding would make a tied model repeat its last token)
    hf = hf_model(name, init_std=0.3).eval()
    hf.save_pretrained(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "lm")
    model = load_model(tmp_path / "lm").eval()
    prompts = [[5, 17, 42, 8, 90], [3, 60], [11, 12, 13, 14]]
    ours = greedy(model, prompts, 20)
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=20, do_sample=False, num_beams=1,
                         pad_token_id=0, eos_token_id=None)[:, width:]
    assert ours == theirs.tolist()
    assert all(len(set(row)) > 1 for row in ours)  # not a constant continuation
