"""AdamW with decoupled weight decay on matrices only, and learning-rate schedules.

AdamW (Loshchilov & Hutter 2019): decay applies to the weight matrices of linear layers;
biases, norm gains and embeddings are not decayed (as in GPT-2/BERT practice and nanoGPT,
which decays all ≥2-D tensors; lmlab also exempts embeddings, whose rows are updated
sparsely). The optimizer itself is `torch.optim.AdamW`, tested equal to a hand-built one.

Schedules, for step s (0-based) with warmup W, total S, peak η, floor η_min:
    warmup:  η·(s+1)/(W+1) for s < W  (never exactly zero)
    cosine:  η_min + ½(η − η_min)(1 + cos(π·p)),  p = (s − W)/(S − W)
    linear:  η − (η − η_min)·p
    wsd:     warmup, stable at η, then linear decay to η_min over the last `decay_fraction`
    constant: η after warmup
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from lmlab.config import check


@dataclass
class OptimConfig:
    lr: float = 1e-3  # peak learning rate
    min_lr: float = 1e-4  # floor of the decay
    schedule: Literal["cosine", "linear", "wsd", "constant"] = "cosine"
    warmup_steps: int = 100  # optimizer steps
    decay_fraction: float = 0.2  # wsd: share of steps spent decaying
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    fused: bool = True  # torch's one-kernel AdamW (same update up to float rounding; ~3x faster on CPU)

    def __post_init__(self) -> None:
        check(self.lr > 0, "optim.lr", "must be positive")
        check(0 <= self.min_lr <= self.lr, "optim.min_lr", "must be in [0, lr]")
        check(self.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
        check(0 < self.decay_fraction <= 1, "optim.decay_fraction", "must be in (0, 1]")
        check(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
        check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "optim.beta1", "betas must be in [0, 1)")
        check(self.grad_clip >= 0, "optim.grad_clip", "must be >= 0")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.dim() >= 2 and not name.startswith("embed."):
            decay.append(p)
        else:
            no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    # The fused kernel takes plain CPU/CUDA tensors; sharded (FSDP DTensor) or other parameters
    # keep the multi-tensor ("foreach") implementation.
    fused = cfg.fused and all(type(p) is torch.nn.Parameter and p.device.type in ("cpu", "cuda")
                              for p in model.parameters())
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                             betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused or None)


def lr_at(step: int, total_steps: int, cfg: OptimConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "wsd":
        decay_start = total_steps - max(1, int(cfg.decay_fraction * total_steps))
        if step < decay_start:
            return cfg.lr
        p = (step - decay_start + 1) / max(1, total_steps - decay_start)
        return cfg.lr - (cfg.lr - cfg.min_lr) * min(1.0, p)
    p = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    if cfg.schedule == "linear":
        return cfg.lr - (cfg.lr - cfg.min_lr) * p
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * p))
