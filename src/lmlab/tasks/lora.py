"""LoRA: low-rank adaptation of linear layers (Hu et al. 2021), written in lmlab.

    h = W₀x + (α/r)·B·A·x        A: [r, in] (Kaiming-uniform), B: [out, r] (zeros: starts as W₀)

W₀ is frozen; only A, B (and the new task head and pooler) are trained. After training the
update is merged, W = W₀ + (α/r)·B·A, so the served model has no extra cost and is a plain
lmlab model directory; the adapter (A, B and the trained head) is also saved on its own as
``adapter.safetensors`` next to it, with its `LoRAConfig` and base model in ``task.json``
(``"lora"``); `attach_adapter` puts it back on the base model.

Why not ``peft``: peft wraps Hugging Face ``PreTrainedModel`` classes and targets modules by
their HF names; lmlab's Transformer is not one, and the whole method is the 40 lines below.
`LoRALinear` exposes ``weight`` (W₀ + ΔW) and ``bias`` like ``nn.Linear``, so code that reads
a projection's weight directly (the fused QKV product of attention) sees the adapted weight.
A LoRA run resumes like any other: `finetune` wraps the model before the trainer loads the
latest checkpoint, whose weights include A and B and whose optimizer state covers exactly the
trainable tensors; the LoRA config is part of the run's identity, so resuming with another
rank (or targets, alpha …) is refused by the field's name (``lora.rank: 4 there, 8 here``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.config import check


@dataclass
class LoRAConfig:
    rank: int = 0  # r; 0 = full fine-tuning (no LoRA)
    alpha: float = 16.0  # scale α/r of the update
    dropout: float = 0.0  # on the adapter's input
    targets: list[str] = field(default_factory=lambda: ["q", "v"])  # linear layers by name: q k v o w_1 w_2 w_3
    train_also: list[str] = field(default_factory=lambda: ["head.", "pooler."])  # trained in full (prefixes)

    def __post_init__(self) -> None:
        check(self.rank >= 0, "lora.rank", "must be >= 0")
        check(self.alpha > 0, "lora.alpha", "must be positive")
        check(0 <= self.dropout < 1, "lora.dropout", "must be in [0, 1)")
        check(bool(self.targets), "lora.targets", "name at least one linear layer (e.g. q, v)")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))  # [r, in]
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))  # [out, r]
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale = alpha / rank
        self.drop = nn.Dropout(dropout)

    @property
    def weight(self) -> torch.Tensor:  # W₀ + (α/r)·B·A, [out, in]
        return self.base.weight + self.scale * (self.lora_b @ self.lora_a)

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * F.linear(F.linear(self.drop(x), self.lora_a), self.lora_b)

    def merged(self) -> nn.Linear:
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        with torch.no_grad():
            out.weight.copy_(self.weight)
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


def apply_lora(model: nn.Module, cfg: LoRAConfig) -> dict:
    """Freeze `model`, wrap the target linears in place; → counts of trainable parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child_name in cfg.targets:
                setattr(module, child_name, LoRALinear(child, cfg.rank, cfg.alpha, cfg.dropout))
                wrapped += 1
    if not wrapped:
        raise ValueError(f"lora.targets {cfg.targets}: no linear layer of the model has these names")
    for name, p in model.named_parameters():
        if name.startswith(tuple(cfg.train_also)):
            p.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    return {"wrapped_layers": wrapped, "trainable_parameters": trainable, "base_parameters": total,
            "trainable_fraction": round(trainable / total, 5)}


def lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter: every trainable tensor (A, B, and the fully trained head/pooler)."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def attach_adapter(model: nn.Module, adapter: dict[str, torch.Tensor], cfg: LoRAConfig) -> nn.Module:
    """The inverse of saving: wrap `model` (the base, with the task head) as in training and load
    the adapter's tensors; `merge_lora` then gives the fine-tuned model."""
    apply_lora(model, cfg)
    return load_adapter(model, adapter)


def load_adapter(model: nn.Module, adapter: dict[str, torch.Tensor]) -> nn.Module:
    """Copy the adapter's tensors into a model already wrapped by `apply_lora` (names and shapes checked)."""
    own = dict(model.named_parameters())
    missing = sorted(set(adapter) - set(own))
    if missing:
        raise ValueError(f"adapter tensors {missing[:5]} have no place in this model (another base or lora.targets?)")
    with torch.no_grad():
        for name, tensor in adapter.items():
            if own[name].shape != tensor.shape:
                raise ValueError(f"adapter tensor {name}: shape {tuple(tensor.shape)} vs {tuple(own[name].shape)}")
            own[name].copy_(tensor)
    return model


def merged_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict `merge_lora(model)` would have, without changing `model`."""
    wrapped = {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    state = {}
    for key, value in model.state_dict().items():
        owner = key.rpartition(".")[0]
        while owner and owner not in wrapped:  # "…q.base.weight" / "…q.lora_a" belong to "…q"
            owner = owner.rpartition(".")[0]
        if not owner:
            state[key] = value
            continue
        m = wrapped[owner]
        state[f"{owner}.weight"] = m.weight.detach()  # W₀ + (α/r)·B·A
        if m.base.bias is not None:
            state[f"{owner}.bias"] = m.base.bias.detach()
    return state


def export_best(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """What OUT/best holds for a LoRA run: the merged model (loadable on its own) and the adapter."""
    return merged_state(model), {"adapter.safetensors": lora_state(model)}


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every LoRALinear by the equivalent nn.Linear (W₀ + ΔW); returns the model."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, child_name, child.merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return model
