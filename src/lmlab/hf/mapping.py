"""Hugging Face ↔ lmlab: config translation and tensor-name maps, one table per family.

| family | HF classes                                                   | lmlab config            |
|--------|--------------------------------------------------------------|-------------------------|
| bert   | BertModel, BertForMaskedLM, BertForSequenceClassification,  | encoder, learned, post  |
|        | BertForQuestionAnswering (BertForPreTraining: NSP dropped)  |                         |
| gpt2   | GPT2Model, GPT2LMHeadModel                                   | decoder, learned, pre   |
| llama  | LlamaModel, LlamaForCausalLM                                 | decoder, rope, rmsnorm  |
| qwen2  | Qwen2Model, Qwen2ForCausalLM                                 | llama + qkv_bias        |
| qwen3  | Qwen3Model, Qwen3ForCausalLM                                 | llama + qk_norm         |
| marian | MarianModel, MarianMTModel                                   | encoder-decoder, sinus. |

Checkpoint-specific names (``c_attn``, ``wte``, ``LayerNorm``) live only here. A `Rule` pairs
an lmlab tensor with an HF tensor (templates over the layer index ``{i}``) and says how the
values move: ``copy``; ``t`` (GPT-2's Conv1D stores [in, out]); ``qkv`` (GPT-2's fused
c_attn, transposed, split into q, k, v); ``row`` (Marian's final_logits_bias is [1, V]).

Llama, Qwen2 and Qwen3 share their tensor names (Qwen3 adds ``q_norm``/``k_norm``); their
RoPE parameters are read as transformers reads them (``rope_parameters``, or the older
``rope_theta`` + ``rope_scaling``): rope_type "default" or "llama3", anything else is refused.

Marian lays its sinusoidal table out as [sin | cos]; an lmlab model with the paper's
interleaved layout is exported by permuting the channels of the residual stream (embeddings,
norms, the input side of q/k/v/w₁ and the output side of o/w₂) so that its interleaved table
becomes Marian's — LayerNorm and every other operation commute with a channel permutation,
so outputs are unchanged. Import keeps Marian's layout ("concat").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lmlab.errors import CheckpointMismatch, ConfigError
from lmlab.model.config import TransformerConfig


@dataclass(frozen=True)
class Rule:
    lmlab: str
    hf: str
    kind: str = "copy"  # copy | t | qkv | row


def _linear(lm: str, hf: str, bias: bool, kind: str = "copy") -> list[Rule]:
    rules = [Rule(f"{lm}.weight", f"{hf}.weight", kind)]
    if bias:
        rules.append(Rule(f"{lm}.bias", f"{hf}.bias", "copy"))
    return rules


def _norm(lm: str, hf: str, cfg: TransformerConfig) -> list[Rule]:
    return _linear(lm, hf, bias=cfg.norm == "layernorm")


# --- families -----------------------------------------------------------------------------------

def bert_rules(cfg: TransformerConfig, prefix: str) -> list[Rule]:
    p = prefix
    rules = [Rule("embed.tokens.weight", f"{p}embeddings.word_embeddings.weight"),
             Rule("embed.positions.weight", f"{p}embeddings.position_embeddings.weight"),
             *_norm("embed.norm", f"{p}embeddings.LayerNorm", cfg)]
    if cfg.type_vocab_size:
        rules.append(Rule("embed.segments.weight", f"{p}embeddings.token_type_embeddings.weight"))
    for i in range(cfg.n_layers):
        lm, hf = f"encoder.layers.{i}", f"{p}encoder.layer.{i}"
        for ours, theirs in (("q", "query"), ("k", "key"), ("v", "value")):
            rules += _linear(f"{lm}.self_attn.{ours}", f"{hf}.attention.self.{theirs}", True)
        rules += _linear(f"{lm}.self_attn.o", f"{hf}.attention.output.dense", True)
        rules += _norm(f"{lm}.attn_norm", f"{hf}.attention.output.LayerNorm", cfg)
        rules += _linear(f"{lm}.ffn.w_1", f"{hf}.intermediate.dense", True)
        rules += _linear(f"{lm}.ffn.w_2", f"{hf}.output.dense", True)
        rules += _norm(f"{lm}.ffn_norm", f"{hf}.output.LayerNorm", cfg)
    if cfg.pooler:
        rules += _linear("pooler.dense", f"{p}pooler.dense", True)
    if cfg.head == "mlm":
        rules += _linear("head.dense", "cls.predictions.transform.dense", True)
        rules += _norm("head.norm", "cls.predictions.transform.LayerNorm", cfg)
        rules.append(Rule("head.proj.bias", "cls.predictions.bias"))
    elif cfg.head == "classification":
        rules += _linear("head.out", "classifier", True)
    elif cfg.head == "span":
        rules += _linear("head.out", "qa_outputs", True)
    return rules


def gpt2_rules(cfg: TransformerConfig, prefix: str) -> list[Rule]:
    p = prefix
    rules = [Rule("embed.tokens.weight", f"{p}wte.weight"), Rule("embed.positions.weight", f"{p}wpe.weight")]
    for i in range(cfg.n_layers):
        lm, hf = f"decoder.layers.{i}", f"{p}h.{i}"
        rules += _norm(f"{lm}.attn_norm", f"{hf}.ln_1", cfg)
        rules += [Rule(f"{lm}.self_attn.qkv.weight", f"{hf}.attn.c_attn.weight", "qkv"),
                  Rule(f"{lm}.self_attn.qkv.bias", f"{hf}.attn.c_attn.bias", "qkv")]
        rules += _linear(f"{lm}.self_attn.o", f"{hf}.attn.c_proj", True, "t")
        rules += _norm(f"{lm}.ffn_norm", f"{hf}.ln_2", cfg)
        rules += _linear(f"{lm}.ffn.w_1", f"{hf}.mlp.c_fc", True, "t")
        rules += _linear(f"{lm}.ffn.w_2", f"{hf}.mlp.c_proj", True, "t")
    rules += _norm("decoder.norm", f"{p}ln_f", cfg)
    return rules


def llama_rules(cfg: TransformerConfig, prefix: str) -> list[Rule]:
    """Llama, Qwen2 (q, k, v biases) and Qwen3 (q_norm, k_norm)."""
    p = prefix
    rules = [Rule("embed.tokens.weight", f"{p}embed_tokens.weight")]
    for i in range(cfg.n_layers):
        lm, hf = f"decoder.layers.{i}", f"{p}layers.{i}"
        for ours in ("q", "k", "v", "o"):
            bias = cfg.bias or (cfg.qkv_bias and ours != "o")
            rules += _linear(f"{lm}.self_attn.{ours}", f"{hf}.self_attn.{ours}_proj", bias)
        if cfg.qk_norm:
            rules += _norm(f"{lm}.self_attn.q_norm", f"{hf}.self_attn.q_norm", cfg)
            rules += _norm(f"{lm}.self_attn.k_norm", f"{hf}.self_attn.k_norm", cfg)
        rules += _linear(f"{lm}.ffn.w_gate", f"{hf}.mlp.gate_proj", cfg.bias)
        rules += _linear(f"{lm}.ffn.w_1", f"{hf}.mlp.up_proj", cfg.bias)
        rules += _linear(f"{lm}.ffn.w_2", f"{hf}.mlp.down_proj", cfg.bias)
        rules += _norm(f"{lm}.attn_norm", f"{hf}.input_layernorm", cfg)
        rules += _norm(f"{lm}.ffn_norm", f"{hf}.post_attention_layernorm", cfg)
    rules += _norm("decoder.norm", f"{p}norm", cfg)
    if cfg.head == "clm" and not cfg.tie_embeddings:
        rules.append(Rule("head.proj.weight", "lm_head.weight"))
    return rules


def marian_rules(cfg: TransformerConfig, prefix: str) -> list[Rule]:
    p = prefix
    rules = [Rule("embed.tokens.weight", f"{p}shared.weight")]
    for stack, n in (("encoder", cfg.n_layers), ("decoder", cfg.decoder_layers)):
        for i in range(n):
            lm, hf = f"{stack}.layers.{i}", f"{p}{stack}.layers.{i}"
            attns = [("self_attn", "self_attn", "attn_norm", "self_attn_layer_norm")]
            if stack == "decoder":
                attns.append(("cross_attn", "encoder_attn", "cross_norm", "encoder_attn_layer_norm"))
            for ours, theirs, our_norm, their_norm in attns:
                for a, b in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "out_proj")):
                    rules += _linear(f"{lm}.{ours}.{a}", f"{hf}.{theirs}.{b}", True)
                rules += _norm(f"{lm}.{our_norm}", f"{hf}.{their_norm}", cfg)
            rules += _linear(f"{lm}.ffn.w_1", f"{hf}.fc1", True)
            rules += _linear(f"{lm}.ffn.w_2", f"{hf}.fc2", True)
            rules += _norm(f"{lm}.ffn_norm", f"{hf}.final_layer_norm", cfg)
    if cfg.head == "seq2seq":
        rules.append(Rule("head.proj.bias", "final_logits_bias", "row"))
    return rules


FAMILY_RULES = {"bert": bert_rules, "gpt2": gpt2_rules, "llama": llama_rules, "qwen2": llama_rules,
                "qwen3": llama_rules, "marian": marian_rules}

# HF class → (family, lmlab head, key prefix of the base model inside the checkpoint)
ARCHITECTURES: dict[str, tuple[str, str, str]] = {
    "BertModel": ("bert", "none", ""),
    "BertForMaskedLM": ("bert", "mlm", "bert."),
    "BertForPreTraining": ("bert", "mlm", "bert."),
    "BertForSequenceClassification": ("bert", "classification", "bert."),
    "BertForQuestionAnswering": ("bert", "span", "bert."),
    "GPT2Model": ("gpt2", "none", ""),
    "GPT2LMHeadModel": ("gpt2", "clm", "transformer."),
    "LlamaModel": ("llama", "none", ""),
    "LlamaForCausalLM": ("llama", "clm", "model."),
    "Qwen2Model": ("qwen2", "none", ""),
    "Qwen2ForCausalLM": ("qwen2", "clm", "model."),
    "Qwen3Model": ("qwen3", "none", ""),
    "Qwen3ForCausalLM": ("qwen3", "clm", "model."),
    "MarianModel": ("marian", "none", ""),
    "MarianMTModel": ("marian", "seq2seq", "model."),
}
# Tensors that some checkpoints carry and that carry no information lmlab needs.
IGNORABLE = ("cls.seq_relationship.", ".attn.bias", ".attn.masked_bias", "embed_positions.weight",
             "rotary_emb.inv_freq", "position_ids")


# --- configs ------------------------------------------------------------------------------------

HF_ACT = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
          "swish": "silu", "silu": "silu"}
LMLAB_ACT = {"gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_new", "silu": "swish"}


def _act(name: str, where: str) -> str:
    if name not in HF_ACT:
        raise ConfigError(f"{where}: activation {name!r} is not supported; lmlab has {sorted(HF_ACT)}")
    return HF_ACT[name]


def _rope_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """RoPE fields of config.json → TransformerConfig fields, read as transformers 5 reads them:
    ``rope_scaling`` (the older name) over ``rope_parameters``; ``rope_theta`` inside the dict,
    else at the top level, else 10000; a top-level ``original_max_position_embeddings`` first."""
    where = "rope_scaling" if hf.get("rope_scaling") else "rope_parameters"
    params = hf.get(where) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"config.json: {where} must be an object, got {params!r}")
    kind = params.get("rope_type", params.get("type", "default"))
    fields: dict[str, Any] = {"rope_theta": float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))}
    if params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ConfigError(f"config.json: {where}.partial_rotary_factor is not supported (lmlab rotates every channel)")
    if kind == "default":
        return fields
    if kind != "llama3":
        raise ConfigError(f"config.json: {where}.rope_type {kind!r} is not supported; lmlab implements "
                          "'default' and 'llama3' rope scaling")
    missing = [k for k in ("factor", "low_freq_factor", "high_freq_factor") if k not in params]
    if missing:
        raise ConfigError(f"config.json: {where} (rope_type 'llama3') lacks {', '.join(missing)}")
    original = hf.get("original_max_position_embeddings") or params.get(
        "original_max_position_embeddings", hf.get("max_position_embeddings", 2048))
    return {**fields, "rope_scaling": "llama3", "rope_factor": float(params["factor"]),
            "rope_low_freq_factor": float(params["low_freq_factor"]),
            "rope_high_freq_factor": float(params["high_freq_factor"]), "rope_original_max_seq_len": int(original)}


def _llama_like_from_hf(hf: dict[str, Any], family: str) -> dict[str, Any]:
    """Llama, Qwen2, Qwen3 config.json → TransformerConfig fields."""
    g = hf.get
    name = {"llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3"}[family]
    if g("hidden_act", "silu") != "silu":
        raise ConfigError(f"config.json: hidden_act must be 'silu' for a {name} model")
    if family == "llama":
        if bool(g("attention_bias", False)) != bool(g("mlp_bias", False)):
            raise ConfigError("config.json: attention_bias and mlp_bias must agree")
        bias, qkv_bias = bool(g("attention_bias", False)), False
    elif family == "qwen2":  # q, k, v always carry biases, o and the MLP never
        bias, qkv_bias = False, True
    else:
        if g("attention_bias", False):
            raise ConfigError("config.json: attention_bias=true is not supported for Qwen3 (biases on q, k, v "
                              "and o without MLP biases)")
        bias, qkv_bias = False, False
    if family != "llama":
        sliding = [i for i, t in enumerate(g("layer_types") or []) if t != "full_attention"]
        if g("use_sliding_window", False) and g("max_window_layers", 28) < hf["num_hidden_layers"]:
            sliding = sliding or list(range(g("max_window_layers", 28), hf["num_hidden_layers"]))
        if sliding:
            raise ConfigError(f"config.json: use_sliding_window/layer_types: layers {sliding[:4]} use sliding-window "
                              "attention, which lmlab does not implement")
    # transformers' default head width: hidden / heads, except Qwen3Config's 128
    head_dim = g("head_dim") or (128 if family == "qwen3" else hf["hidden_size"] // hf["num_attention_heads"])
    return dict(arch="decoder", vocab_size=hf["vocab_size"], d_model=hf["hidden_size"],
                n_heads=hf["num_attention_heads"], n_kv_heads=g("num_key_value_heads"),
                head_dim=None if head_dim * hf["num_attention_heads"] == hf["hidden_size"] else head_dim,
                n_layers=hf["num_hidden_layers"], d_ff=hf["intermediate_size"],
                max_seq_len=g("max_position_embeddings", 2048), position="rope", **_rope_from_hf(hf),
                norm="rmsnorm", norm_eps=g("rms_norm_eps", 1e-6), norm_position="pre", final_norm=True,
                activation="swiglu", bias=bias, qkv_bias=qkv_bias, qk_norm=family == "qwen3",
                attn_dropout=g("attention_dropout", 0.0), tie_embeddings=bool(g("tie_word_embeddings", False)),
                pad_token_id=g("pad_token_id"))


def config_from_hf(hf: dict[str, Any], family: str, head: str) -> TransformerConfig:
    """HF config.json (as a dict) → TransformerConfig."""
    g = hf.get
    if family == "bert":
        if g("position_embedding_type", "absolute") != "absolute":
            raise ConfigError("config.json: position_embedding_type must be 'absolute'")
        fields = dict(arch="encoder", vocab_size=hf["vocab_size"], d_model=hf["hidden_size"],
                      n_heads=hf["num_attention_heads"], n_layers=hf["num_hidden_layers"],
                      d_ff=hf["intermediate_size"], max_seq_len=hf["max_position_embeddings"],
                      position="learned", norm="layernorm", norm_eps=g("layer_norm_eps", 1e-12),
                      norm_position="post", embedding_norm=True, final_norm=False,
                      activation=_act(g("hidden_act", "gelu"), "hidden_act"),
                      dropout=g("hidden_dropout_prob", 0.1), attn_dropout=g("attention_probs_dropout_prob", 0.1),
                      type_vocab_size=g("type_vocab_size", 2), pooler=head in ("none", "classification"),
                      classifier_dropout=g("classifier_dropout"), pad_token_id=g("pad_token_id", 0))
    elif family == "gpt2":
        for flag, want in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                           ("reorder_and_upcast_attn", False)):
            if g(flag, want) != want:
                raise ConfigError(f"config.json: {flag}={g(flag)} is not supported (lmlab needs {want})")
        if not g("tie_word_embeddings", True):
            raise ConfigError("config.json: GPT-2 with untied output embeddings is not supported")
        d = hf["n_embd"]
        fields = dict(arch="decoder", vocab_size=hf["vocab_size"], d_model=d, n_heads=hf["n_head"],
                      n_layers=hf["n_layer"], d_ff=g("n_inner") or 4 * d, max_seq_len=hf["n_positions"],
                      position="learned", norm="layernorm", norm_eps=g("layer_norm_epsilon", 1e-5),
                      norm_position="pre", final_norm=True,
                      activation=_act(g("activation_function", "gelu_new"), "activation_function"),
                      dropout=g("resid_pdrop", 0.1), attn_dropout=g("attn_pdrop", 0.1),
                      tie_embeddings=True, pad_token_id=g("pad_token_id"))
    elif family in ("llama", "qwen2", "qwen3"):
        fields = _llama_like_from_hf(hf, family)
    elif family == "marian":
        for a, b in (("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")):
            if hf[a] != hf[b]:
                raise ConfigError(f"config.json: {a} and {b} differ; lmlab needs them equal")
        if g("decoder_vocab_size", hf["vocab_size"]) != hf["vocab_size"] or \
                not g("share_encoder_decoder_embeddings", True):
            raise ConfigError("config.json: separate source/target vocabularies are not supported")
        if g("decoder_start_token_id", g("pad_token_id")) != g("pad_token_id"):
            raise ConfigError(f"config.json: decoder_start_token_id {g('decoder_start_token_id')} differs from "
                              f"pad_token_id {g('pad_token_id')}; lmlab starts a Marian decoder from the pad token")
        fields = dict(arch="encoder-decoder", vocab_size=hf["vocab_size"], d_model=hf["d_model"],
                      n_heads=hf["encoder_attention_heads"], n_layers=hf["encoder_layers"],
                      n_decoder_layers=hf["decoder_layers"], d_ff=hf["encoder_ffn_dim"],
                      max_seq_len=hf["max_position_embeddings"], position="sinusoidal",
                      sinusoidal_layout="concat", norm="layernorm", norm_eps=1e-5, norm_position="post",
                      final_norm=False, scale_embeddings=bool(g("scale_embedding", False)),
                      activation=_act(g("activation_function", "gelu"), "activation_function"),
                      dropout=g("dropout", 0.1), attn_dropout=g("attention_dropout", 0.0),
                      lm_head_bias=True, tie_embeddings=True, pad_token_id=g("pad_token_id"))
    else:
        raise ConfigError(f"unknown family {family!r}")
    if head == "classification":
        fields["n_labels"] = len(g("id2label") or {}) or g("num_labels", 2)
    fields["head"] = head
    try:
        return TransformerConfig.from_dict(fields)
    except ConfigError as e:
        raise ConfigError(f"config.json: {e}") from None


def family_of(cfg: TransformerConfig) -> str:
    """Which HF family can represent this config exactly; a ConfigError says why none can."""
    wants = {
        "bert": dict(arch="encoder", position="learned", norm="layernorm", norm_position="post",
                     embedding_norm=True, final_norm=False, bias=True, scale_embeddings=False,
                     n_kv_heads_free=True),
        "gpt2": dict(arch="decoder", position="learned", norm="layernorm", norm_position="pre",
                     embedding_norm=False, final_norm=True, bias=True, tie_embeddings=True,
                     scale_embeddings=False, type_vocab_size=0),
        "llama": dict(arch="decoder", position="rope", norm="rmsnorm", norm_position="pre",
                      embedding_norm=False, final_norm=True, activation="swiglu", scale_embeddings=False,
                      type_vocab_size=0, qk_norm=False),
        "qwen2": dict(arch="decoder", position="rope", norm="rmsnorm", norm_position="pre",
                      embedding_norm=False, final_norm=True, activation="swiglu", scale_embeddings=False,
                      type_vocab_size=0, bias=False, qkv_bias=True, qk_norm=False),
        "qwen3": dict(arch="decoder", position="rope", norm="rmsnorm", norm_position="pre",
                      embedding_norm=False, final_norm=True, activation="swiglu", scale_embeddings=False,
                      type_vocab_size=0, bias=False, qkv_bias=False, qk_norm=True),
        "marian": dict(arch="encoder-decoder", position="sinusoidal", norm="layernorm",
                       norm_position="post", embedding_norm=False, final_norm=False, bias=True,
                       tie_embeddings=True, type_vocab_size=0),
    }
    reasons = []
    for family, want in wants.items():
        want = {k: v for k, v in want.items() if not k.endswith("_free")}
        bad = [f"{k}={getattr(cfg, k)!r} (needs {v!r})" for k, v in want.items() if getattr(cfg, k) != v]
        llama_like = family in ("llama", "qwen2", "qwen3")
        if not llama_like and cfg.kv_heads != cfg.n_heads:
            bad.append("n_kv_heads (grouped-query attention needs llama)")
        if not llama_like and cfg.activation not in LMLAB_ACT:
            bad.append(f"activation={cfg.activation!r}")
        if not llama_like and (cfg.d_head * cfg.n_heads != cfg.d_model or cfg.qk_norm or cfg.qkv_bias
                               or cfg.rope_scaling != "none"):
            bad.append("head_dim, qk_norm, qkv_bias or rope_scaling set (llama, qwen2 and qwen3 have them)")
        if family == "llama" and cfg.qkv_bias and not cfg.bias:
            bad.append("qkv_bias=True (biases on q, k, v alone: qwen2)")
        if family == "marian" and cfg.head not in ("none", "seq2seq"):
            bad.append(f"head={cfg.head!r}")
        if cfg.copy:
            bad.append("copy=True (a pointer-generator has no Hugging Face counterpart)")
        if family in ("gpt2", "llama", "qwen2", "qwen3") and cfg.head == "classification":
            bad.append("head='classification' (only BERT classification heads export)")
        if not bad:
            return family
        if want["arch"] == cfg.arch:
            reasons.append(f"{family}: {', '.join(bad)}")
    raise ConfigError("no Hugging Face family fits this model: " + "; ".join(reasons or [cfg.arch]))


EXPORT_ARCHITECTURE = {
    ("bert", "none"): "BertModel", ("bert", "mlm"): "BertForMaskedLM",
    ("bert", "classification"): "BertForSequenceClassification", ("bert", "span"): "BertForQuestionAnswering",
    ("gpt2", "none"): "GPT2Model", ("gpt2", "clm"): "GPT2LMHeadModel",
    ("llama", "none"): "LlamaModel", ("llama", "clm"): "LlamaForCausalLM",
    ("qwen2", "none"): "Qwen2Model", ("qwen2", "clm"): "Qwen2ForCausalLM",
    ("qwen3", "none"): "Qwen3Model", ("qwen3", "clm"): "Qwen3ForCausalLM",
    ("marian", "none"): "MarianModel", ("marian", "seq2seq"): "MarianMTModel",
}


def config_to_hf(cfg: TransformerConfig, family: str, architecture: str) -> dict[str, Any]:
    common = dict(architectures=[architecture], vocab_size=cfg.vocab_size, initializer_range=cfg.init_std,
                  pad_token_id=cfg.pad_token_id, tie_word_embeddings=cfg.tie_embeddings, dtype="float32")
    if family == "bert":
        out = dict(model_type="bert", hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
                   num_attention_heads=cfg.n_heads, intermediate_size=cfg.d_ff,
                   hidden_act=LMLAB_ACT[cfg.activation], hidden_dropout_prob=cfg.dropout,
                   attention_probs_dropout_prob=cfg.attn_dropout, max_position_embeddings=cfg.max_seq_len,
                   type_vocab_size=cfg.type_vocab_size, layer_norm_eps=cfg.norm_eps,
                   position_embedding_type="absolute", classifier_dropout=cfg.classifier_dropout)
    elif family == "gpt2":
        out = dict(model_type="gpt2", n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads,
                   n_inner=cfg.d_ff, n_positions=cfg.max_seq_len, activation_function=LMLAB_ACT[cfg.activation],
                   layer_norm_epsilon=cfg.norm_eps, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
                   attn_pdrop=cfg.attn_dropout, bos_token_id=None, eos_token_id=None)
    elif family in ("llama", "qwen2", "qwen3"):
        rope = {"rope_theta": cfg.rope_theta, "rope_type": "default"}
        if cfg.rope_scaling == "llama3":
            rope.update(rope_type="llama3", factor=cfg.rope_factor, low_freq_factor=cfg.rope_low_freq_factor,
                        high_freq_factor=cfg.rope_high_freq_factor,
                        original_max_position_embeddings=cfg.rope_original_max_seq_len)
        out = dict(model_type=family, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
                   num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                   num_key_value_heads=cfg.kv_heads, head_dim=cfg.d_head, hidden_act="silu",
                   max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
                   rope_parameters=rope, rope_theta=cfg.rope_theta,
                   attention_dropout=cfg.attn_dropout, bos_token_id=None, eos_token_id=None)
        if cfg.rope_scaling != "none":  # the name transformers 4 reads
            out["rope_scaling"] = rope
        if family == "llama":
            out.update(attention_bias=cfg.bias, mlp_bias=cfg.bias)
        else:
            out.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.n_layers)
        if family == "qwen3":
            out["attention_bias"] = False
    else:
        pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0
        out = dict(model_type="marian", d_model=cfg.d_model, encoder_layers=cfg.n_layers,
                   decoder_layers=cfg.decoder_layers, encoder_attention_heads=cfg.n_heads,
                   decoder_attention_heads=cfg.n_heads, encoder_ffn_dim=cfg.d_ff, decoder_ffn_dim=cfg.d_ff,
                   activation_function=LMLAB_ACT[cfg.activation], max_position_embeddings=cfg.max_seq_len,
                   scale_embedding=cfg.scale_embeddings, dropout=cfg.dropout, attention_dropout=cfg.attn_dropout,
                   activation_dropout=0.0, decoder_vocab_size=cfg.vocab_size,
                   share_encoder_decoder_embeddings=True, is_encoder_decoder=True,
                   decoder_start_token_id=pad, pad_token_id=pad, eos_token_id=None, forced_eos_token_id=None)
    if cfg.head == "classification":
        out["id2label"] = {str(i): f"LABEL_{i}" for i in range(cfg.n_labels)}
        out["label2id"] = {f"LABEL_{i}": i for i in range(cfg.n_labels)}
    return {**common, **out}


# --- tensors ------------------------------------------------------------------------------------

def _residual_permutation(d_model: int) -> torch.Tensor:
    """perm[j] = interleaved channel that lands at concat channel j: [0, 2, 4, …, 1, 3, 5, …]."""
    return torch.cat((torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)))


def _residual_dim(key: str) -> int | None:
    """Which dimension of an lmlab tensor indexes the residual stream (d_model channels)."""
    if key == "embed.tokens.weight" or key.endswith(("q.weight", "k.weight", "v.weight", "w_1.weight")):
        return 1
    if key.endswith(("o.weight", "o.bias", "w_2.weight", "w_2.bias")) or "norm." in key:
        return 0
    return None


def permute_residual(state: dict[str, torch.Tensor], d_model: int) -> dict[str, torch.Tensor]:
    perm = _residual_permutation(d_model)
    return {k: (v.index_select(dim, perm) if (dim := _residual_dim(k)) is not None else v)
            for k, v in state.items()}


def to_hf_state(state: dict[str, torch.Tensor], cfg: TransformerConfig, family: str,
                prefix: str) -> dict[str, torch.Tensor]:
    if family == "marian" and cfg.sinusoidal_layout == "interleaved":
        state = permute_residual(state, cfg.d_model)
    if family == "marian" and cfg.head == "seq2seq" and "head.proj.bias" not in state:
        state = {**state, "head.proj.bias": torch.zeros(cfg.vocab_size)}
    out, used = {}, set()
    for r in FAMILY_RULES[family](cfg, prefix):
        if r.kind == "qkv":
            parts = [r.lmlab.replace(".qkv.", f".{x}.") for x in "qkv"]
            fused = torch.cat([state[p] for p in parts])
            out[r.hf] = fused.t().contiguous() if fused.dim() == 2 else fused
            used.update(parts)
            continue
        v = state[r.lmlab]
        out[r.hf] = {"copy": v, "t": v.t().contiguous(), "row": v[None, :]}[r.kind].contiguous()
        used.add(r.lmlab)
    left = sorted(set(state) - used)
    if left:
        raise CheckpointMismatch(f"tensors with no Hugging Face counterpart: {', '.join(left)}")
    return out


def from_hf_state(hf: dict[str, torch.Tensor], cfg: TransformerConfig, family: str,
                  prefix: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """HF tensors → lmlab tensors; returns (state, ignored HF keys). Unknown keys are an error."""
    state, used = {}, set()
    missing = []
    for r in FAMILY_RULES[family](cfg, prefix):
        if r.hf not in hf:
            missing.append(r.hf)
            continue
        v = hf[r.hf]
        used.add(r.hf)
        if r.kind == "qkv":
            v = v.t() if v.dim() == 2 else v
            for x, part in zip("qkv", v.split(cfg.d_model, dim=0)):
                state[r.lmlab.replace(".qkv.", f".{x}.")] = part.contiguous()
        else:
            state[r.lmlab] = {"copy": v, "t": v.t(), "row": v.reshape(-1)}[r.kind].contiguous()
    if missing:
        raise CheckpointMismatch(f"the checkpoint lacks tensors: {', '.join(missing[:8])}"
                                 f"{' …' if len(missing) > 8 else ''}")
    # Copies of tied tensors that some checkpoints store: accepted only if really equal.
    tied = {"cls.predictions.decoder.weight": "embed.tokens.weight", "lm_head.weight": "embed.tokens.weight",
            f"{prefix}encoder.embed_tokens.weight": "embed.tokens.weight",
            f"{prefix}decoder.embed_tokens.weight": "embed.tokens.weight",
            "cls.predictions.decoder.bias": "head.proj.bias"}
    ignored = []
    for k in sorted(set(hf) - used):
        if k in tied and tied[k] in state:
            if not torch.equal(hf[k].reshape(state[tied[k]].shape), state[tied[k]]):
                raise CheckpointMismatch(f"checkpoint tensor {k!r} should be tied to {tied[k]} but differs; "
                                         "untied output embeddings are not supported for this family")
            ignored.append(k)
        elif any(s in k for s in IGNORABLE):
            ignored.append(k)
        else:
            raise CheckpointMismatch(f"checkpoint tensor {k!r} has no place in an lmlab {family} model")
    return state, ignored
