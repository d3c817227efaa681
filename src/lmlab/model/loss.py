"""Cross-entropy over a vocabulary projection, without materialising the logits.

loss = −(1/N) Σₙ log softmax(W·hₙ + b)[yₙ], over the N positions whose target is not ignored.

For a GPT-2-sized vocabulary the [B·T, V] logits (and their float32 copy for the softmax)
dominate memory traffic on a CPU. `linear_cross_entropy` walks the positions in chunks:
for each chunk it computes the logits, the loss and the closed-form gradient
∂loss/∂logits = (softmax − onehot(y))/N, folds that into ∂h, ∂W and ∂b, and drops the chunk.
The backward pass then only scales the stored gradients. Tested equal (forward and
gradients) to ``F.cross_entropy(F.linear(h, W, b), y)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
CHUNK_ELEMENTS = 1 << 26  # logits per chunk: 64 M floats = 256 MiB


def _chunks(n: int, vocab: int) -> range:
    return range(0, n, max(1, CHUNK_ELEMENTS // vocab))


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, targets, need_grad):  # h: [N, C], weight: [V, C], targets: [N]
        n_valid = (targets != IGNORE_INDEX).sum().clamp(min=1)
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else h.dtype
        acc = torch.promote_types(dtype, torch.float32)  # softmax and sums: float32 at least
        h_c, w_c = h.to(dtype), weight.to(dtype)
        step = _chunks(h.size(0), weight.size(0)).step
        total = torch.zeros((), dtype=acc, device=h.device)
        grad_h = torch.empty_like(h) if need_grad else None
        grad_w = torch.zeros_like(weight, dtype=acc) if need_grad else None
        grad_b = torch.zeros_like(bias, dtype=acc) if need_grad and bias is not None else None
        for i in range(0, h.size(0), step):
            hc, y = h_c[i:i + step], targets[i:i + step]
            logits = (hc @ w_c.t()).to(acc)  # [n, V]
            if bias is not None:
                logits += bias.to(acc)
            valid = y != IGNORE_INDEX
            y_safe = y.clamp(min=0)[:, None]
            logp = torch.log_softmax(logits, dim=-1)  # [n, V], one fused kernel
            total -= (logp.gather(1, y_safe).squeeze(1) * valid).sum()
            if need_grad:
                g = logp.exp_()  # softmax, in place
                g.scatter_add_(1, y_safe, torch.full_like(g[:, :1], -1.0))  # − onehot(y)
                g *= (valid.to(acc) / n_valid)[:, None]
                if grad_b is not None:
                    grad_b += g.sum(0)
                g = g.to(dtype)
                grad_h[i:i + step] = (g @ w_c).to(h.dtype)
                grad_w += (g.t() @ hc).to(acc)
        if need_grad:
            ctx.save_for_backward(grad_h, grad_w.to(weight.dtype),
                                  grad_b.to(bias.dtype) if grad_b is not None else None)
        return total / n_valid

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        return (grad_h * grad_out, grad_w * grad_out,
                None if grad_b is None else grad_b * grad_out, None, None)


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of softmax(h·Wᵀ + b) against `targets` (−100 = ignore).

    h: [..., C], weight: [V, C], bias: [V] or None, targets: [...] → scalar.
    """
    h2, y = h.reshape(-1, h.size(-1)), targets.reshape(-1)
    need_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    return _LinearCrossEntropy.apply(h2, weight, bias, y, need_grad)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Plain cross-entropy on computed logits (small vocabularies, classification)."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX)
