"""Parameter counts and FLOPs per token, from the config alone (no weights needed).

FLOPs count multiply-adds as 2. Per token, forward:
    2·(weights of every matrix multiply) + 4·n_layers·T·d_attn  (QKᵀ and A·V over T keys)
(Kaplan et al. 2020, Table 1; the attention term as in PaLM, Chowdhery et al. 2022, App. B,
without halving for causal masks). Training costs 3× the forward pass (backward = 2×).
"""

from __future__ import annotations

from pathlib import Path

from lmlab.model.config import TransformerConfig, preset


def _layer_matmul_weights(cfg: TransformerConfig, cross: bool) -> int:
    d, attn = cfg.d_model, cfg.n_heads * cfg.d_head
    kv = cfg.kv_heads * cfg.d_head
    self_attn = d * attn + 2 * d * kv + attn * d
    ffn = d * cfg.d_ff * (3 if cfg.activation == "swiglu" else 2)
    return self_attn + (self_attn if cross else 0) + ffn


def count_parameters(cfg: TransformerConfig) -> dict[str, int]:
    """Exact count, by building the model on the meta device (no memory is allocated)."""
    import torch

    from lmlab.model.transformer import Transformer

    with torch.device("meta"):
        model = Transformer(cfg)
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for n, p in model.named_parameters() if n.startswith("embed."))
    return {"parameters": total, "non_embedding_parameters": total - embedding}


def flops_per_token(cfg: TransformerConfig, seq_len: int | None = None, training: bool = False,
                    scored_fraction: float = 1.0) -> int:
    """Matmul FLOPs per token (2 per multiply-add; ×3 with the backward pass). `scored_fraction`:
    the share of positions whose vocabulary logits are computed — lmlab's masked LM scores only
    the masked ones (0.15), so counting its head at every position would overstate MFU."""
    t = seq_len or cfg.max_seq_len
    attn = cfg.n_heads * cfg.d_head
    if cfg.arch == "encoder-decoder":
        n_enc, n_dec = cfg.n_layers, cfg.decoder_layers
        weights = n_enc * _layer_matmul_weights(cfg, False) + n_dec * _layer_matmul_weights(cfg, True)
        attention = 4 * t * attn * (n_enc + 2 * n_dec)  # decoder: self and cross
    else:
        weights = cfg.n_layers * _layer_matmul_weights(cfg, False)
        attention = 4 * cfg.n_layers * t * attn
    if cfg.head in ("mlm", "clm", "seq2seq"):
        head = cfg.d_model * cfg.vocab_size + (cfg.d_model ** 2 if cfg.head == "mlm" else 0)
        weights += head * scored_fraction
    forward = int(2 * weights + attention)
    return 3 * forward if training else forward


def model_info(source: str = "gpt2-tiny", seq_len: int | None = None) -> dict:
    """`lmlab model info`: a preset name or an lmlab model directory."""
    if Path(source).is_dir():
        from lmlab.model.pretrained import read_model_config, require_transformer

        cfg = require_transformer(read_model_config(source), source, "lmlab model info")
    else:
        cfg = preset(source)
    t = seq_len or cfg.max_seq_len
    return {
        "source": source,
        "arch": cfg.arch,
        **count_parameters(cfg),
        "seq_len": t,
        "forward_flops_per_token": flops_per_token(cfg, t),
        "training_flops_per_token": flops_per_token(cfg, t, training=True),
    }
