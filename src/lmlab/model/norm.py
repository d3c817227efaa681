"""Normalisation over the last dimension: LayerNorm and RMSNorm.

LayerNorm(x) = γ·(x − μ)/√(σ² + ε) + β          (Ba et al. 2016)
RMSNorm(x)   = γ·x/√(mean(x²) + ε)                (Zhang & Sennrich 2019; Llama)

Layers normalise the residual stream (width d_model); Qwen3's QK-norm normalises each head's
queries and keys (width d_head).
"""

from __future__ import annotations

import torch
from torch import nn

from lmlab.model.config import TransformerConfig


class RMSNorm(nn.Module):
    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Statistics in float32 even under bf16, as Llama computes them.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def make_norm(cfg: TransformerConfig, width: int | None = None) -> nn.Module:
    """The config's norm over `width` channels (default d_model)."""
    width = width or cfg.d_model
    if cfg.norm == "rmsnorm":
        return RMSNorm(width, cfg.norm_eps)
    return nn.LayerNorm(width, eps=cfg.norm_eps)
