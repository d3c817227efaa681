"""The position-wise feed-forward network, and one Transformer layer (norms: norm.py).

FFN(x)       = W₂·φ(W₁x + b₁) + b₂                (Vaswani et al. 2017, eq. 2)
SwiGLU(x)    = W₂·(SiLU(W_gate·x) ⊙ W₁x)          (Shazeer 2020; Llama)

A layer is post-norm, x ← Norm(x + Sublayer(x)) as in the original Transformer and BERT, or
pre-norm, x ← x + Sublayer(Norm(x)) as in GPT-2 and Llama. Decoder layers of an
encoder–decoder add cross-attention between self-attention and the feed-forward network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.model.attention import KVCache, MultiHeadAttention
from lmlab.model.config import TransformerConfig
from lmlab.model.linear import Linear
from lmlab.model.norm import RMSNorm, make_norm
from lmlab.model.unpad import Unpadding

__all__ = ["ACTIVATIONS", "FeedForward", "RMSNorm", "TransformerLayer", "make_norm"]


ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact, with erf (BERT)
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's "gelu_new"
    "silu": F.silu,  # a.k.a. swish (Marian)
}


class FeedForward(nn.Module):
    """Position-wise FFN; with activation "swiglu" the gated variant of Llama."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.gated = cfg.activation == "swiglu"
        self.act = F.silu if self.gated else ACTIVATIONS[cfg.activation]
        self.w_1 = Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.w_gate = Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias) if self.gated else None
        self.w_2 = Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, C] → [B, T, C]
        h = self.w_1(x)  # [B, T, d_ff]
        h = self.act(self.w_gate(x)) * h if self.gated else self.act(h)
        return self.w_2(h)  # dropout follows in the residual branch


class TransformerLayer(nn.Module):
    """Self-attention (+ cross-attention) + feed-forward, each with residual and norm."""

    def __init__(self, cfg: TransformerConfig, cross_attention: bool = False):
        super().__init__()
        self.pre_norm = cfg.norm_position == "pre"
        self.self_attn = MultiHeadAttention(cfg)
        self.attn_norm = make_norm(cfg)
        self.cross_attn = MultiHeadAttention(cfg, cross=True) if cross_attention else None
        self.cross_norm = make_norm(cfg) if cross_attention else None
        self.ffn = FeedForward(cfg)
        self.ffn_norm = make_norm(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def _sublayer(self, x: torch.Tensor, norm: nn.Module, fn) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.pre_norm:  # x + Sublayer(Norm(x))
            out, weights = fn(norm(x))
            return x + (self.dropout(out) if self.training else out), weights
        out, weights = fn(x)  # Norm(x + Sublayer(x))
        return norm(x + (self.dropout(out) if self.training else out)), weights

    def forward(
        self,
        x: torch.Tensor,  # [B, T, C]
        self_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        memory: torch.Tensor | None = None,  # [B, S, C]
        memory_mask: torch.Tensor | None = None,
        rotary=None,
        cache: KVCache | None = None,
        layer: int = 0,
        need_weights: bool = False,
        unpadded: Unpadding | None = None,  # x is [N, C], the real tokens of a padded batch (unpad.py)
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        weights = {}
        x, weights["self"] = self._sublayer(x, self.attn_norm, lambda h: self.self_attn(
            h, attn_mask=self_mask, is_causal=is_causal, rotary=rotary, cache=cache, layer=layer,
            need_weights=need_weights, unpadded=unpadded))
        if self.cross_attn is not None:
            x, weights["cross"] = self._sublayer(x, self.cross_norm, lambda h: self.cross_attn(
                h, memory=memory, attn_mask=memory_mask, cache=cache, layer=layer,
                need_weights=need_weights))
        x, _ = self._sublayer(x, self.ffn_norm, lambda h: (self.ffn(h), None))
        return x, weights
