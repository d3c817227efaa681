"""y = x·Wᵀ + b, with a faster route for the few-row products of incremental decoding.

During generation each step multiplies a handful of rows (batch × 1 new token) by every
weight matrix: matrix–vector products, bound by reading W from memory. For float32 on CPU,
torch hands such a product to a BLAS sgemv that runs on one thread, so one core streams all
the weights while the others wait. Splitting the output rows of W into one block per thread
and running the blocks as a single batched product (`torch.baddbmm`, batch = threads) lets
torch put each block on its own core:

    W [O, I] → view [n, O/n, I] → transpose [n, I, O/n]    (no copy)
    y = baddbmm(b [n, 1, O/n], x [n, M, I], Wᵀ-blocks) → [n, M, O/n] → [M, O]

The arithmetic per output is the same dot product, so results equal `F.linear` up to float32
summation order (tested ≤ 1e-5). On the project's 2-core machine this halves the weight GEMMs
of a 6-layer d_model 384 decode step at batch 1 (benchmarks/bench_generate.py). Training,
autograd, other dtypes (bf16's kernel already uses every thread) and larger M go to `F.linear`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEW_ROWS = 16  # up to this many rows the product is a stack of matrix–vector products


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., I], weight [O, I], bias [O] → [..., O]."""
    n = torch.get_num_threads()
    out_features, in_features = weight.shape
    rows = x.numel() // in_features if in_features else 0
    if (n < 2 or rows == 0 or rows > FEW_ROWS or out_features % n or x.dtype != torch.float32
            or x.device.type != "cpu" or torch.is_grad_enabled() or not weight.is_contiguous()
            or weight.dtype != x.dtype):
        return F.linear(x, weight, bias)
    blocks = weight.view(n, out_features // n, in_features).transpose(1, 2)  # [n, I, O/n]
    x3 = x.reshape(1, rows, in_features).expand(n, rows, in_features)
    if bias is None:
        y = torch.bmm(x3, blocks)
    else:
        y = torch.baddbmm(bias.view(n, 1, out_features // n), x3, blocks)  # [n, M, O/n]
    return y.transpose(0, 1).reshape(*x.shape[:-1], out_features)


class Linear(nn.Linear):
    """`nn.Linear` (same parameters, same state-dict keys) whose forward is `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
