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
summation order (tested ≤ 1e-5). On the 2-core AVX-512 CPU of BENCHMARKS.md this halves the weight
GEMMs of a 6-layer d_model 384 decode step at batch 1 (benchmarks/bench_generate.py). Training,
autograd and larger M go to `F.linear`.

Decoding goes faster still through weights laid out once for the product. torch's few-row
bf16 `F.linear` on CPU works from W's plain layout at every call: 2.25 ms for the 25 products
of that decode step. A `PackedWeights` reorders each bf16 weight once into oneDNN's blocked
layout (``torch.ops.mkldnn._reorder_linear_weight``, what inductor's CPU freezing pass does) and
multiplies with the packed copy: 1.05 ms, bit-identical to `F.linear`. A float32 weight on an
Intel CPU it leaves as it is: MKL's few-row product on W itself (``addmm(b, x, Wᵀ)`` on the
transposed view, which is `F.linear`) is faster there than oneDNN's packed float32 weights, whose
every call costs ~15 µs before any arithmetic, and than a transposed copy of W (no faster to read,
and 55 MB to write per generation); elsewhere float32 is packed as bf16 is (`machine.blas_float32`;
equal to `F.linear` up to summation order, tested; benchmarks/bench_linear.py). The decode loop
holds one for each generation (the weights cannot change during it) and activates it around its
forward passes:

    with pack:              # a context variable: `linear` looks the weights up in it
        logits = model(ids, cache=cache)

A server holds one per model for all its requests (`lmlab.serve.registry`), so a pack must not
grow with the requests it serves: it refers to the weights it packed weakly (a tensor made for
one request takes its packed copy with it when it dies), and a weight stacked from several
parameters (attention's [Wq; Wk; Wv]) is built once per pack by `stacked`, not once per request.

Nor must the kernels grow. A bf16 (or fp16) product of many rows goes to oneDNN, which builds a
kernel for each new row count and keeps it in a cache of 1,024: about 0.6 MB and milliseconds
each (d_model 36 on an AMX CPU), so a server's prefills of every batch size × prompt length would
fill that cache (600 MiB) and then evict and rebuild kernels for good. A server's pack
(``bucket_rows=True``) pads such a product to `bucket_length` rows (2^k or 1.5·2^k) and drops the
padding rows of the result: two row counts per octave, at most half again the rows. float32
products go to BLAS, which keeps nothing per shape, and are left as they are. Attention builds
kernels per shape too (bf16 flash attention's AMX kernels, per batch × length), so the decode
loop under such a pack left-pads its prompts to a bucketed length as well (`padded_length`).
"""

from __future__ import annotations

import contextvars
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmlab import machine

FEW_ROWS = 16  # up to this many rows the product is a stack of matrix–vector products
HALF = (torch.bfloat16, torch.float16)  # dtypes whose CPU products of many rows oneDNN builds a kernel for per shape

_ACTIVE_PACK: contextvars.ContextVar["PackedWeights | None"] = contextvars.ContextVar("lmlab_packed_weights",
                                                                                       default=None)


_LINEAR_POINTWISE = getattr(torch.ops.mkldnn, "_linear_pointwise", None)


def bucket_length(n: int, limit: int | None = None) -> int:
    """The smallest 2^k or 3·2^(k−1) that is ≥ n (1, 2, 3, 4, 6, 8, 12, 16, 24, …), at most
    `limit` and never below n: a length padded so that lengths from anywhere fall on few values."""
    k = max(n - 1, 0).bit_length()
    half = 3 << (k - 2) if k >= 2 else 0  # 3/4 of 2^k
    bucket = half if half >= n else 1 << k
    return max(n, bucket if limit is None else min(bucket, limit))


class PackedWeights:
    """Weights in the layout of their fastest few-row product, made at first use; active inside
    ``with pack:``. The machine's `packed_dtypes` (bf16 where native, float32 where MKL does not
    take it): oneDNN's blocked layout; float32 on an Intel CPU (`machine.blas_float32`): W itself.

    Holds its copies (the memory of the weights once more) and weak references to the weights
    they were made from: an entry whose weight has died is dropped at the next conversion, and an
    id reused by a new tensor is converted afresh. `bucket_rows`: half-precision products of many
    rows are padded to `bucket_length` rows (module docstring).
    """

    def __init__(self, bucket_rows: bool = False):
        self.bucket_rows = bucket_rows
        self._packed: dict[int, tuple[weakref.ref, torch.Tensor | None]] = {}
        self._stacked: dict[tuple[int, ...], tuple[tuple[torch.Tensor, ...], torch.Tensor]] = {}
        self._tokens: list[contextvars.Token] = []

    def __enter__(self) -> "PackedWeights":
        self._tokens.append(_ACTIVE_PACK.set(self))
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE_PACK.reset(self._tokens.pop())

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
        """x·Wᵀ + b through the packed copy of W (bf16) or MKL on W (float32 on an Intel CPU), or
        None where neither applies."""
        if torch.is_grad_enabled() or x.numel() == 0:
            return None
        if x.numel() > FEW_ROWS * x.size(-1):
            return self._bucketed(x, weight, bias)
        if x.dtype != weight.dtype or (bias is not None and bias.dtype != x.dtype):
            return None
        if x.dtype == torch.float32 and x.device.type == "cpu" and machine.detect().blas_float32:
            return F.linear(x, weight, bias)  # MKL, on every thread (not `linear`'s split)
        packed = self.packed(weight)
        if packed is None:
            return None
        return _LINEAR_POINTWISE.default(x, packed, bias, "none", [], "")

    def packed(self, weight: torch.Tensor) -> torch.Tensor | None:
        """The packed copy of `weight` (made at the first call), or None where packing does not apply."""
        entry = self._packed.get(id(weight))
        if entry is None or entry[0]() is not weight:
            _drop_dead(self._packed)
            entry = self._packed[id(weight)] = (weakref.ref(weight), self._pack(weight))
        return entry[1]

    def stacked(self, tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """torch.cat(tensors) along dim 0, made once: [Wq; Wk; Wv] of a fused QKV product. Held here
        so that its packed copy is made once too (a concatenation per call would be a new weight,
        packed and kept again every generation)."""
        key = tuple(id(t) for t in tensors)
        entry = self._stacked.get(key)
        if entry is None or any(a is not b for a, b in zip(entry[0], tensors)):
            with torch.no_grad():
                entry = self._stacked[key] = (tensors, torch.cat(tensors))
        return entry[1]

    def padded_length(self, n: int, dtype: torch.dtype, device: torch.device, limit: int | None = None) -> int:
        """The length a computation of n rows (or positions) in `dtype` runs at under this pack:
        `bucket_length(n, limit)` for half precision on a CPU under a server's pack, else n."""
        if self.bucket_rows and dtype in HALF and device.type == "cpu":
            return bucket_length(n, limit)
        return n

    def _bucketed(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
        """F.linear over x padded with zero rows to `bucket_length` rows, the padding rows dropped."""
        rows = x.numel() // x.size(-1)
        padded = self.padded_length(rows, x.dtype, x.device)
        if padded == rows:
            return None
        y = F.linear(F.pad(x.reshape(rows, x.size(-1)), (0, 0, 0, padded - rows)), weight, bias)  # [padded, O]
        return y[:rows].view(*x.shape[:-1], y.size(-1))

    def _pack(self, weight: torch.Tensor) -> torch.Tensor | None:
        if weight.dtype not in machine.detect().packed_dtypes or weight.device.type != "cpu":
            return None
        try:
            return torch.ops.mkldnn._reorder_linear_weight(weight)
        except RuntimeError:  # a layout or CPU oneDNN refuses: this weight keeps F.linear
            return None


def _drop_dead(entries: dict[int, tuple[weakref.ref, Any]]) -> None:
    """Forget the entries whose tensor has died (their ids may be reused)."""
    for key in [k for k, (ref, _) in entries.items() if ref() is None]:
        del entries[key]


def active_pack() -> PackedWeights | None:
    """The `PackedWeights` of the innermost ``with pack:`` block, or None."""
    return _ACTIVE_PACK.get()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., I], weight [O, I], bias [O] → [..., O]."""
    pack = _ACTIVE_PACK.get()
    if pack is not None:
        y = pack.linear(x, weight, bias)
        if y is not None:
            return y
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
