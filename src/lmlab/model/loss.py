"""Cross-entropy over a vocabulary projection, without materialising float32 logits.

loss = −(1/N) Σₙ log softmax(W·hₙ + b)[yₙ], over the N positions whose target is not ignored.

For a GPT-2-sized vocabulary the [B·T, V] logits, their float32 copy and the softmax's
backward dominate memory traffic on a CPU. `linear_cross_entropy` computes the gradient in
the forward pass, from its closed form ∂loss/∂logits = (softmax − onehot(y))/N:

* rows are taken in small slices (ROWS_PER_SLICE) whose logits stay in cache: logits, one
  fused softmax, the loss terms and softmax − onehot are computed slice by slice, and only
  G = softmax − onehot is kept, in the compute dtype (bf16 under autocast);
* ∂h = G·W and ∂W = Gᵀ·h are then two large GEMMs over a block of rows, which run
  faster than per-slice GEMMs; a block holds at most BLOCK_ELEMENTS entries of G, which
  bounds the memory.

The backward pass only scales the stored gradients (and writes ∂W in W's layout). Tested equal
(forward and gradients) to ``F.cross_entropy(F.linear(h, W, b), y)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
# Measured on the 2-core AVX-512 CPU of BENCHMARKS.md: oneDNN's bf16 GEMMs run fastest on
# 128-row slices (13 MB of logits at a 50k vocabulary, cache-sized) and with ∂Wᵀ = hᵀ·G;
# float32 ones on 512-row slices and with ∂W = Gᵀ·h.
ROWS_PER_SLICE = {2: 128, 4: 512, 8: 512}  # by the compute dtype's item size
BLOCK_ELEMENTS = 1 << 27  # entries of G per block: 256 MiB in bf16


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, targets, need_h, need_w, need_b):  # h: [N, C], weight: [V, C], targets: [N]
        valid = targets != IGNORE_INDEX
        n_valid = valid.sum().clamp(min=1)
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else h.dtype
        acc = torch.promote_types(dtype, torch.float32)  # softmax and sums: float32 at least
        h_c, w_c = h.to(dtype), weight.to(dtype)
        n, vocab = h.size(0), weight.size(0)
        y_safe = targets.clamp(min=0)
        total = torch.zeros((), dtype=acc, device=h.device)
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = None  # ∂Wᵀ [C, V] in half precision, ∂W [V, C] otherwise
        transposed = torch.finfo(dtype).bits == 16
        slice_rows = ROWS_PER_SLICE[torch.finfo(dtype).bits // 8]
        grad_b = torch.zeros_like(bias, dtype=acc) if need_b else None
        block = max(slice_rows, BLOCK_ELEMENTS // vocab // slice_rows * slice_rows)
        for b0 in range(0, n, block):
            rows = min(block, n - b0)
            g = torch.empty(rows, vocab, dtype=dtype, device=h.device) if need_h or need_w or need_b else None
            for s0 in range(0, rows, slice_rows):
                i, j = b0 + s0, b0 + min(s0 + slice_rows, rows)
                logits = h_c[i:j] @ w_c.t()  # [r, V]
                if bias is not None:
                    logits = logits.to(acc) + bias.to(acc)
                # One fused softmax, written straight into G when there is a G and the dtypes
                # agree. Its largest entry gives log Σ exp: lse = max(x) − log max(p), with
                # max(p) ≥ 1/V. In bf16 that rounding (≤ 2⁻⁹ relative) is below the bf16
                # rounding of the logits themselves; without a G, p is float32.
                gs = g[s0:s0 + j - i] if g is not None else None
                into_g = gs is not None and logits.dtype == dtype
                if into_g:
                    p = torch.softmax(logits, dim=-1, out=gs)
                else:
                    p = torch.softmax(logits, dim=-1, dtype=acc)
                    if gs is not None:
                        gs.copy_(p)
                lse = logits.amax(-1).to(acc) - p.amax(-1).to(acc).log()
                y, ok = y_safe[i:j], valid[i:j]
                r = torch.arange(j - i, device=h.device)
                x_y = logits[r, y].to(acc)
                total += ((lse - x_y) * ok).sum()
                if gs is None:
                    continue
                gs[r, y] = ((x_y - lse).exp() - 1.0).to(dtype)  # − onehot(y), from float32
                if not bool(ok.all()):
                    gs[~ok] = 0  # ignored rows contribute nothing
                if grad_b is not None and into_g:  # G is float32 or wider here
                    grad_b += gs.sum(0)
                elif grad_b is not None:  # from the float32 softmax, not from G rounded to bf16
                    grad_b += p[ok].sum(0)
                    grad_b.index_add_(0, y[ok], torch.full_like(x_y[ok], -1.0))
            if need_h:
                grad_h[b0:b0 + rows] = g @ w_c
            if need_w:
                part = h_c[b0:b0 + rows].t() @ g if transposed else g.t() @ h_c[b0:b0 + rows]
                grad_w = part if grad_w is None else grad_w.to(acc) + part
        # Gradients are stored unscaled; backward applies grad_out / N.
        ctx.save_for_backward(grad_h, grad_w, grad_b.to(bias.dtype) if grad_b is not None else None, n_valid)
        ctx.weight_dtype, ctx.transposed = weight.dtype, transposed
        return total / n_valid

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, grad_b, n_valid = ctx.saved_tensors
        scale = grad_out / n_valid
        if grad_w is not None:  # one pass: to [V, C] in W's dtype and layout, scaled
            grad_w = grad_w.t() if ctx.transposed else grad_w
            grad_w = torch.mul(grad_w, scale.to(ctx.weight_dtype),
                               out=torch.empty(grad_w.shape, dtype=ctx.weight_dtype, device=grad_w.device))
        return (None if grad_h is None else grad_h * scale.to(grad_h.dtype), grad_w,
                None if grad_b is None else grad_b * scale.to(grad_b.dtype), None, None, None, None)


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of softmax(h·Wᵀ + b) against `targets` (−100 = ignore).

    h: [..., C], weight: [V, C], bias: [V] or None, targets: [...] → scalar.
    """
    h2, y = h.reshape(-1, h.size(-1)), targets.reshape(-1)
    grad = torch.is_grad_enabled()
    return _LinearCrossEntropy.apply(h2, weight, bias, y, grad and h.requires_grad, grad and weight.requires_grad,
                                     grad and bias is not None and bias.requires_grad)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Plain cross-entropy on computed logits (small vocabularies, classification)."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX)
