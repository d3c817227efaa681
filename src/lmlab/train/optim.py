"""The optimizers (AdamW; Muon on the hidden matrices with AdamW on the rest) and learning-rate schedules.

AdamW (Loshchilov & Hutter 2019): decay applies to the weight matrices of linear layers;
biases, norm gains and embeddings are not decayed (as in GPT-2/BERT practice and nanoGPT,
which decays all ≥2-D tensors; lmlab also exempts embeddings, whose rows are updated
sparsely). The optimizer itself is `torch.optim.AdamW`, tested equal to a hand-built one.

Muon (Jordan et al. 2024; `optim.name: muon`) replaces each hidden weight matrix's update by the
orthogonalised momentum, msign(M) ≈ UVᵀ for M = USVᵀ (Newton–Schulz iterations), scaled by
0.2·√max(out, in) so that its RMS matches AdamW's and one learning rate serves both (Liu et al.
2025, "Muon is scalable"). Embeddings, biases, norm gains and output heads keep AdamW. The update
is `torch.optim.Muon`'s, computed by `lmlab.train.muon` (batched over matrices of one shape, in the
dtype the machine multiplies fastest); `MuonAdamW` only presents the two as one optimizer, so that
the schedule, gradient clipping, the grad scaler and checkpoints see one set of parameter groups
and one state.

Schedules, for step s (0-based) with warmup W, total S (train.max_steps, or optim.decay_steps: a
run may stop before its schedule ends, as at a checkpoint of a longer run), peak η, floor η_min:
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
from lmlab.train.muon import Muon


@dataclass
class OptimConfig:
    name: Literal["adamw", "muon"] = "adamw"  # muon: Muon on the hidden matrices, AdamW on the rest
    lr: float = 1e-3  # peak learning rate
    min_lr: float = 1e-4  # floor of the decay
    schedule: Literal["cosine", "linear", "wsd", "constant"] = "cosine"
    warmup_steps: int = 100  # optimizer steps
    decay_steps: int = 0  # the length S of the schedule (0: train.max_steps); nanoGPT's lr_decay_iters
    decay_fraction: float = 0.2  # wsd: share of steps spent decaying
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    fused: bool = True  # torch's one-kernel AdamW where lmlab.machine offers it (CPU, CUDA): same update up to rounding
    muon_momentum: float = 0.95  # Nesterov momentum of the Muon update
    muon_ns_steps: int = 5  # Newton–Schulz iterations per update

    def __post_init__(self) -> None:
        check(self.lr > 0, "optim.lr", "must be positive")
        check(0 <= self.min_lr <= self.lr, "optim.min_lr", "must be in [0, lr]")
        check(self.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
        check(self.decay_steps >= 0, "optim.decay_steps", "must be >= 0 (0: train.max_steps)")
        check(0 < self.decay_fraction <= 1, "optim.decay_fraction", "must be in (0, 1]")
        check(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
        check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "optim.beta1", "betas must be in [0, 1)")
        check(self.grad_clip >= 0, "optim.grad_clip", "must be >= 0")
        check(0 <= self.muon_momentum < 1, "optim.muon_momentum", "must be in [0, 1)")
        check(1 <= self.muon_ns_steps <= 20, "optim.muon_ns_steps", "must be in [1, 20]")


def is_hidden_matrix(name: str, p: torch.Tensor) -> bool:
    """A weight matrix inside the encoder/decoder layers: what Muon updates (not embeddings, heads
    or LoRA factors, whose shapes are not those of a hidden linear map)."""
    return p.dim() == 2 and ".layers." in f".{name}" and "lora_" not in name


def param_groups(model: torch.nn.Module, weight_decay: float, muon: bool = False) -> list[dict]:
    decay, no_decay, hidden = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if muon and is_hidden_matrix(name, p):
            hidden.append(p)
        elif p.dim() >= 2 and not name.startswith("embed."):
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if muon:
        groups.append({"params": hidden, "weight_decay": weight_decay, "muon": True})
    return groups


class MuonAdamW(torch.optim.Optimizer):
    """Muon (`lmlab.train.muon`) on the groups marked "muon", `torch.optim.AdamW` on the others, as
    one optimizer: both hold the very group dicts and the state of this one."""

    def __init__(self, groups: list[dict], *, lr: float, betas: tuple[float, float], eps: float,
                 momentum: float, ns_steps: int, fused: bool | None):
        groups = [g for g in groups if g["params"]]
        for g in groups:
            g.setdefault("muon", False)
        super().__init__(groups, {"lr": lr})
        placeholder = [{"params": [torch.zeros(1, 1)]}]  # a part with no groups is built on this, then emptied by _link
        self._muon = Muon([g for g in self.param_groups if g["muon"]] or placeholder, lr=lr,
                          momentum=momentum, nesterov=True, ns_steps=ns_steps, adjust_lr_fn="match_rms_adamw")
        self._adamw = torch.optim.AdamW([g for g in self.param_groups if not g["muon"]] or placeholder,
                                        lr=lr, betas=betas, eps=eps, fused=fused)
        self._link()

    def _link(self) -> None:
        """Point both parts at this optimizer's groups and state (again after load_state_dict,
        which replaces them)."""
        self._muon.param_groups = [g for g in self.param_groups if g["muon"]]
        self._adamw.param_groups = [g for g in self.param_groups if not g["muon"]]
        self._muon.state = self._adamw.state = self.state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._link()

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        self._muon.step()
        self._adamw.step()
        return loss


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    # The fused kernel where lmlab.machine offers it for the parameters' device (FSDP's sharded
    # DTensor parameters run it on each shard); elsewhere torch's multi-tensor ("foreach") default.
    from lmlab import machine

    params = list(model.parameters())
    m = machine.detect()
    fused = (cfg.fused and all(m.fused_adamw(p.device) for p in params)) or None
    plain = all(type(p) is torch.nn.Parameter for p in params)
    if cfg.name == "muon":
        # Muon orthogonalises a whole matrix; an FSDP shard is a slice of one.
        check(plain, "optim.name", "muon needs whole (unsharded) parameters: use train.parallel=ddp, or adamw")
        return MuonAdamW(param_groups(model, cfg.weight_decay, muon=True), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                         eps=cfg.eps, momentum=cfg.muon_momentum, ns_steps=cfg.muon_ns_steps, fused=fused)
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                             betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused)


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
