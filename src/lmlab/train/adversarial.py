"""Adversarial training on the embeddings (Miyato, Dai & Goodfellow 2017, "Adversarial training
methods for semi-supervised text classification"): each micro-batch is learnt twice, as it is and
pushed a small step in the direction that raises its loss most,

    loss = L(e) + L(e + r),   r = ε · ‖e‖ · g / ‖g‖₂,   g = ∂L/∂e   (r held constant)

e: [B, T, C], the output of the embedding module (the first layer's input); ‖g‖₂ is taken per
example over all its positions, so the perturbation goes where the loss is most sensitive (a
"not", a "great") rather than evenly; ‖e‖ is the root-mean-square norm of one position's
embedding in the batch, which makes ε a fraction of a token's norm (Miyato et al. normalise the
embeddings to unit variance for the same reason: so that the model cannot make the step
negligible by growing its embeddings). Their ε = 5 on 256-dimensional unit-variance embeddings is
5/16 ≈ 0.3 of a token. Costs a second forward and backward pass per micro-batch. Measured
(BENCHMARKS.md): fine-tuning en-bert, ε = 0.3 lifts SST-2 by 0.8 points and SQuAD by 5 F1; an
encoder-decoder trained from scratch (both embedding calls perturbed) did not learn at all.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Callable, Iterator

import torch
from torch import nn

from lmlab.errors import ConfigError


def embedding_module(model: nn.Module) -> nn.Module:
    embed = getattr(model, "embed", None)
    if not isinstance(embed, nn.Module):
        raise ConfigError(f"train.adversarial: perturbs a Transformer's embeddings; a {type(model).__name__} "
                          "has none (set train.adversarial=0)")
    return embed


def perturbation(e: torch.Tensor, g: torch.Tensor, eps: float) -> torch.Tensor:
    """r = ε · ‖e‖ · g / ‖g‖₂ per example; e, g: [B, T, C] → [B, T, C]."""
    e, g = e.detach().float(), g.detach().float()
    token_norm = e.pow(2).sum(-1).mean().sqrt()
    per_example = g.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *([1] * (g.dim() - 1)))
    return eps * token_norm * g / per_example


@contextlib.contextmanager
def adversarial(model: nn.Module, eps: float) -> Iterator[Callable[[], None]]:
    """Inside: the forward passes record the embedding outputs; ``perturb()`` (after the clean
    loss's backward) turns their gradients into r, which every later forward pass adds to the
    embeddings, call by call (an encoder-decoder embeds twice per forward)."""
    embed = embedding_module(model)
    seen: list[torch.Tensor] = []  # embedding outputs of the clean pass, in call order
    steps: list[torch.Tensor] = []  # their perturbations r, once `perturb` has run
    call = itertools.count()

    def hook(module, args, out):
        if steps:
            return out + steps[next(call) % len(steps)].to(out.dtype)
        if out.requires_grad:
            out.retain_grad()
        seen.append(out)
        return out

    def perturb() -> None:
        for e in seen:
            g = e.grad if e.grad is not None else torch.zeros_like(e)
            steps.append(perturbation(e, g, eps))
        seen.clear()

    handle = embed.register_forward_hook(hook)
    try:
        yield perturb
    finally:
        handle.remove()
