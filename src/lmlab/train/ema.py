"""An exponential moving average of the weights (Polyak averaging), for evaluation and export.

After every optimizer step t = 1, 2, …

    d_t = min(decay, (1 + t) / (10 + t))        # TensorFlow's ExponentialMovingAverage(num_updates=t)
    ema ← d_t · ema + (1 − d_t) · θ

The warm-up of d_t keeps the first averages from being anchored to the initial weights. Only
trainable parameters are averaged: frozen ones (LoRA's base weights) never move.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from lmlab.errors import CheckpointMismatch


class WeightEMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shadow = [p.detach().clone() for p in self.params]
        self.updates = 0

    def decay_at(self, t: int) -> float:
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - self.decay_at(self.updates))

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block and its own ones after it."""
        own = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, own)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        torch._foreach_copy_(self.params, self.shadow)

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.shadow))

    @torch.no_grad()
    def load(self, tensors: dict[str, torch.Tensor], updates: int) -> None:
        missing = [n for n in self.names if n not in tensors]
        if missing:
            raise CheckpointMismatch(f"the checkpoint has no weight average for {missing[:4]}; it was written "
                                     "without train.ema_decay: resume with the same setting")
        torch._foreach_copy_(self.shadow, [tensors[n].to(s.device, s.dtype) for n, s in zip(self.names, self.shadow)])
        self.updates = updates
