"""`TransformerConfig`: every architectural choice of the three stacks, and the size presets.

One config describes the encoder (BERT), the decoder (GPT-2, Llama) and the encoder–decoder
(Vaswani et al. 2017, Marian). Families differ only in these switches:

| family      | arch            | position   | norm      | norm_position | activation | bias |
|-------------|-----------------|------------|-----------|---------------|------------|------|
| bert        | encoder         | learned    | layernorm | post          | gelu       | yes  |
| gpt2        | decoder         | learned    | layernorm | pre           | gelu_tanh  | yes  |
| llama       | decoder         | rope       | rmsnorm   | pre           | swiglu     | no   |
| qwen2       | decoder         | rope       | rmsnorm   | pre           | swiglu     | qkv  |
| qwen3       | decoder         | rope       | rmsnorm   | pre           | swiglu     | no   |

Qwen2 adds biases to the q, k, v projections only (`qkv_bias`); Qwen3 normalises each head's
queries and keys before the rotation (`qk_norm`) and may set the head width apart from
d_model / n_heads (`head_dim`). Llama 3.1 rewrites the rotary frequencies for long contexts
(`rope_scaling="llama3"`, position.py).
| transformer | encoder-decoder | sinusoidal | layernorm | post          | relu       | yes  |
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from lmlab.config import check, from_dict
from lmlab.errors import ConfigError

Arch = Literal["encoder", "decoder", "encoder-decoder"]
Head = Literal["none", "mlm", "clm", "classification", "span", "seq2seq"]


@dataclass
class TransformerConfig:
    arch: Arch = "decoder"
    head: Head = "clm"  # output head on top of the stack (see heads.py)
    vocab_size: int = 256  # tokens
    d_model: int = 128  # model width (embedding size)
    n_heads: int = 4  # attention heads
    head_dim: int | None = None  # width d_head of one head; None = d_model / n_heads
    n_kv_heads: int | None = None  # key/value heads (grouped-query attention); None = n_heads
    n_layers: int = 4  # layers of the encoder or decoder stack
    n_decoder_layers: int | None = None  # encoder-decoder only; None = n_layers
    d_ff: int = 512  # feed-forward inner width
    max_seq_len: int = 256  # tokens; size of learned/sinusoidal position tables
    position: Literal["sinusoidal", "learned", "rope", "none"] = "learned"
    sinusoidal_layout: Literal["interleaved", "concat"] = "interleaved"
    # interleaved: PE(pos,2i)=sin, PE(pos,2i+1)=cos, as printed in the paper.
    # concat: [sin | cos] halves, as tensor2tensor and Marian lay them out.
    rope_theta: float = 10000.0  # RoPE base: θ_i = rope_theta^(−2i/d_head)
    rope_scaling: Literal["none", "llama3"] = "none"  # llama3: long-context rewrite of θ_i (position.py)
    rope_factor: float = 8.0  # llama3: low frequencies are divided by this
    rope_low_freq_factor: float = 1.0  # llama3: wavelengths above original_max_seq_len / this are scaled
    rope_high_freq_factor: float = 4.0  # llama3: wavelengths below original_max_seq_len / this are kept
    rope_original_max_seq_len: int = 8192  # llama3: the context length of pretraining (tokens)
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    norm_position: Literal["pre", "post"] = "pre"
    embedding_norm: bool = False  # LayerNorm after summing embeddings (BERT)
    final_norm: bool = True  # norm after the last layer (pre-norm stacks need it)
    scale_embeddings: bool = False  # multiply token embeddings by √d_model (Vaswani, Marian)
    activation: Literal["relu", "gelu", "gelu_tanh", "silu", "swiglu"] = "gelu_tanh"
    bias: bool = True  # biases in attention and feed-forward projections
    qkv_bias: bool = False  # biases on the q, k, v projections even when bias is False (Qwen2)
    qk_norm: bool = False  # norm over each head's d_head channels of q and k, before RoPE (Qwen3)
    dropout: float = 0.0  # on embeddings and residual branches
    attn_dropout: float = 0.0  # on attention weights
    type_vocab_size: int = 0  # segment (token type) embeddings; 0 = none
    pooler: bool = False  # BERT pooler: tanh(W·h[CLS] + b)
    tie_embeddings: bool = True  # output projection shares the token embedding matrix
    lm_head_bias: bool = False  # bias on the vocabulary projection (Marian's final_logits_bias)
    n_labels: int = 2  # classification head outputs
    copy: bool = False  # seq2seq: pointer-generator, copies source tokens (See et al. 2017; heads.py)
    classifier_dropout: float | None = None  # None = dropout
    pad_token_id: int | None = 0
    attention_impl: Literal["formula", "fused"] = "fused"
    # formula: softmax(QKᵀ/√d_k + M)V written out (returns the weights, for visualisation);
    # fused: torch.nn.functional.scaled_dot_product_attention. Tested equal.
    unpad: bool = True  # encoders skip a padded batch's padding outside attention (model/unpad.py; same results)
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_heads", "n_layers", "d_ff", "max_seq_len"):
            check(getattr(self, name) > 0, name, "must be positive")
        if self.head_dim is None:
            check(self.d_model % self.n_heads == 0, "d_model",
                  f"{self.d_model} is not divisible by n_heads={self.n_heads} (or set head_dim)")
        else:
            check(self.head_dim > 0, "head_dim", "must be positive (or null: d_model / n_heads)")
        kv = self.n_kv_heads or self.n_heads
        check(self.n_heads % kv == 0, "n_kv_heads", f"n_heads={self.n_heads} is not a multiple of {kv}")
        if self.position == "rope":
            check(self.d_head % 2 == 0, "head_dim" if self.head_dim else "d_model",
                  "rotary positions need an even head dimension")
        if self.rope_scaling == "llama3":
            check(self.position == "rope", "rope_scaling", "llama3 scaling needs position='rope'")
            check(self.rope_factor > 0, "rope_factor", "must be positive")
            check(0 < self.rope_low_freq_factor < self.rope_high_freq_factor, "rope_low_freq_factor",
                  "needs 0 < rope_low_freq_factor < rope_high_freq_factor")
            check(self.rope_original_max_seq_len > 0, "rope_original_max_seq_len", "must be positive")
        if self.position == "sinusoidal":
            check(self.d_model % 2 == 0, "d_model", "sinusoidal positions need an even d_model")
        check(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        check(0.0 <= self.attn_dropout < 1.0, "attn_dropout", "must be in [0, 1)")
        check(self.norm_eps > 0, "norm_eps", "must be positive")
        check(self.n_labels > 0, "n_labels", "must be positive")
        heads_for_arch = {
            "encoder": {"none", "mlm", "classification", "span"},
            "decoder": {"none", "clm", "classification"},
            "encoder-decoder": {"none", "seq2seq"},
        }[self.arch]
        check(self.head in heads_for_arch, "head",
              f"{self.head!r} does not fit arch {self.arch!r}; choose one of {sorted(heads_for_arch)}")
        check(not self.copy or self.head == "seq2seq", "copy",
              "copying source tokens needs an encoder-decoder with the seq2seq head")
        if self.pad_token_id is not None:
            check(0 <= self.pad_token_id < self.vocab_size, "pad_token_id", "must be a valid token id")

    @property
    def d_head(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def decoder_layers(self) -> int:
        return self.n_decoder_layers or self.n_layers

    @property
    def causal(self) -> bool:
        return self.arch == "decoder"

    def replace(self, **changes) -> "TransformerConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict) -> "TransformerConfig":
        return from_dict(cls, data)


FAMILIES: dict[str, dict] = {
    "bert": dict(arch="encoder", head="mlm", position="learned", norm="layernorm", norm_eps=1e-12,
                 norm_position="post", embedding_norm=True, final_norm=False, activation="gelu",
                 type_vocab_size=2, pooler=True, dropout=0.1, attn_dropout=0.1, vocab_size=30522,
                 max_seq_len=512),
    "gpt2": dict(arch="decoder", head="clm", position="learned", norm="layernorm", norm_eps=1e-5,
                 norm_position="pre", final_norm=True, activation="gelu_tanh", vocab_size=50257,
                 max_seq_len=1024, pad_token_id=None),
    "llama": dict(arch="decoder", head="clm", position="rope", norm="rmsnorm", norm_eps=1e-6,
                  norm_position="pre", final_norm=True, activation="swiglu", bias=False,
                  tie_embeddings=False, vocab_size=32000, max_seq_len=2048, pad_token_id=None),
    "transformer": dict(arch="encoder-decoder", head="seq2seq", position="sinusoidal",
                        norm="layernorm", norm_position="post", final_norm=False,
                        scale_embeddings=True, activation="relu", dropout=0.1, vocab_size=32000,
                        max_seq_len=512),
}

SIZES: dict[str, dict] = {
    # d_ff = 4·d_model except llama, whose SwiGLU keeps parameters equal at ≈ 8/3·d_model.
    "tiny": dict(d_model=128, n_heads=4, n_layers=4, d_ff=512),
    "small": dict(d_model=384, n_heads=6, n_layers=6, d_ff=1536),
    "base": dict(d_model=768, n_heads=12, n_layers=12, d_ff=3072),  # BERT-base, GPT-2 124M
}


def preset(name: str, **overrides) -> TransformerConfig:
    """``preset("gpt2-small", vocab_size=65)``: a family's switches at a named size."""
    family, _, size = name.partition("-")
    size = size or "tiny"
    if family not in FAMILIES or size not in SIZES:
        raise ConfigError(
            f"unknown preset {name!r}; use FAMILY-SIZE with FAMILY in {sorted(FAMILIES)} "
            f"and SIZE in {sorted(SIZES)}"
        )
    fields = {**FAMILIES[family], **SIZES[size]}
    if family == "llama":
        fields["d_ff"] = 256 * ((8 * fields["d_model"] // 3 + 255) // 256)
    fields.update(overrides)
    return from_dict(TransformerConfig, fields)
