"""Positional information: sinusoidal, learned absolute, rotary (RoPE).

Sinusoidal (Vaswani et al. 2017, §3.5):
    PE(pos, 2i)   = sin(pos / 10000^(2i/d_model))
    PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model))
The paper interleaves sin and cos; tensor2tensor and Marian concatenate the two halves
([sin | cos]), which is the same set of features in another channel order. Both layouts are
offered so that Marian checkpoints load exactly.

Rotary (Su et al. 2021, RoFormer): rotate each pair of query/key channels by the angle
pos·θ_i with θ_i = base^(-2i/d_head), so that ⟨R_m q, R_n k⟩ depends only on m − n. Channels
are paired as (i, i + d_head/2), the "rotate half" convention of GPT-NeoX and Llama.

Llama 3.1 rewrites the frequencies ω_i = θ_i for contexts longer than pretraining's L (Meta's
reference code, `apply_scaling`; transformers' `_compute_llama3_parameters`): with the
wavelength λ_i = 2π/ω_i, factor s, and the bounds λ_high = L/high_freq_factor <
λ_low = L/low_freq_factor,
    λ_i < λ_high:   ω_i            (high frequencies, local order: kept)
    λ_i > λ_low:    ω_i / s        (low frequencies: interpolated, as position interpolation)
    otherwise:      (1 − γ)·ω_i/s + γ·ω_i,  γ = (L/λ_i − low_freq_factor) / (high_freq_factor − low_freq_factor)
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_table(n_positions: int, d_model: int, layout: str = "interleaved") -> torch.Tensor:
    """[n_positions, d_model] table of PE(pos, ·), computed in float64 then rounded once."""
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]  # [P, 1]
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # [d/2]: the 2i of the formula
    angle = pos / (10000.0 ** (two_i / d_model))  # [P, d/2]
    pe = torch.empty(n_positions, d_model, dtype=torch.float64)
    if layout == "interleaved":
        pe[:, 0::2] = torch.sin(angle)
        pe[:, 1::2] = torch.cos(angle)
    elif layout == "concat":
        pe[:, : d_model // 2] = torch.sin(angle)
        pe[:, d_model // 2 :] = torch.cos(angle)
    else:
        raise ValueError(f"unknown sinusoidal layout {layout!r}")
    return pe.float()


class SinusoidalPositions(nn.Module):
    """Fixed table (not a parameter, not saved): positions → [T, d_model]."""

    def __init__(self, max_seq_len: int, d_model: int, layout: str = "interleaved"):
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_seq_len, d_model, layout), persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table[positions]


class LearnedPositions(nn.Embedding):
    """Learned absolute positions (BERT, GPT-2): an embedding row per position."""

    def __init__(self, max_seq_len: int, d_model: int):
        super().__init__(max_seq_len, d_model)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x₁, x₂) → (−x₂, x₁) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def llama3_frequencies(inv_freq: torch.Tensor, factor: float, low_freq_factor: float, high_freq_factor: float,
                       original_max_seq_len: int) -> torch.Tensor:
    """ω [D/2] → Llama 3.1's rewritten ω [D/2] (see the module docstring), in ω's dtype."""
    wavelen = 2 * math.pi / inv_freq  # λ_i
    low_freq_wavelen = original_max_seq_len / low_freq_factor  # λ_low
    high_freq_wavelen = original_max_seq_len / high_freq_factor  # λ_high
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    gamma = (original_max_seq_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - gamma) * scaled / factor + gamma * scaled
    medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for RoPE; `rotate(x, positions)` applies R_pos to x: [B, H, T, D].

    `llama3`: the keyword arguments of `llama3_frequencies` (factor, low_freq_factor,
    high_freq_factor, original_max_seq_len), or None for the plain θ_i."""

    def __init__(self, d_head: int, max_seq_len: int, base: float = 10000.0, llama3: dict | None = None):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, d_head, 2, dtype=torch.int64).float() / d_head))  # θ_i, [D/2]
        if llama3 is not None:
            inv_freq = llama3_frequencies(inv_freq, **llama3)
        angle = torch.arange(max_seq_len, dtype=torch.float32)[:, None] * inv_freq[None, :]  # [P, D/2]
        angle = torch.cat((angle, angle), dim=-1)  # [P, D]: channel i and i + D/2 share θ_i
        self.register_buffer("cos", angle.cos(), persistent=False)
        self.register_buffer("sin", angle.sin(), persistent=False)

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        cos, sin = self.cos[positions].to(x.dtype), self.sin[positions].to(x.dtype)  # [T, D] | [B, T, D]
        if positions.dim() == 2:  # per-sequence positions (left padding): broadcast over heads
            cos, sin = cos[:, None], sin[:, None]  # [B, 1, T, D]
        return x * cos + rotate_half(x) * sin
