"""Few-row weight products of a decode step: F.linear vs lmlab's routes (thread split, packed).

The 25 weights of a 6-layer, d_model-384 GPT-2 decode step (fused QKV, output, two FFN, and an
8,000-token head), multiplied by 1 and 8 rows: median milliseconds for all 25, and the GB/s of
weights that implies; "read" is one pass over all the weights (a sum), the memory-bandwidth
bound of any product. lmlab's pack multiplies float32 by MKL on Wᵀ on Intel CPUs (oneDNN's packed
weights elsewhere: `machine.blas_float32`) and bf16 by oneDNN's packed weights; oneDNN's packed
float32 is shown for comparison. Also the fixed cost of one packed call on a 64×64 weight, where
the arithmetic is negligible.

    python benchmarks/bench_linear.py [--threads N]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from lmlab import machine
from lmlab.model.linear import PackedWeights, linear

SHAPES = [(1152, 384), (384, 384), (1536, 384), (384, 1536)] * 6 + [(8000, 384)]


def median_ms(fn, reps: int = 30) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[reps // 2] * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(machine.header(), flush=True)
    torch.manual_seed(0)
    w32 = [torch.randn(o, i) * 0.02 for o, i in SHAPES]
    b32 = [torch.randn(o) * 0.02 for o, _ in SHAPES]
    w16, b16 = [w.bfloat16() for w in w32], [b.bfloat16() for b in b32]
    mb_bf16 = sum(w.numel() for w in w32) * 2 / 1e6
    out = {"packable": sorted(str(d) for d in machine.detect().packed_dtypes)}
    with torch.inference_mode():
        for m in (1, 8):
            x32 = [torch.randn(m, i) for _, i in SHAPES]
            x16 = [x.bfloat16() for x in x32]
            onednn = torch.ops.mkldnn._linear_pointwise
            w32_onednn = [torch.ops.mkldnn._reorder_linear_weight(w) for w in w32]
            flat32 = torch.cat([w.flatten() for w in w32])
            flat16 = flat32.bfloat16()
            routes = {
                "F.linear bf16": lambda: [F.linear(x, w, b) for x, w, b in zip(x16, w16, b16)],
                "F.linear fp32": lambda: [F.linear(x, w, b) for x, w, b in zip(x32, w32, b32)],
                "split fp32": lambda: [linear(x, w, b) for x, w, b in zip(x32, w32, b32)],
                "oneDNN packed fp32": lambda: [onednn(x, w, b, "none", [], "")
                                               for x, w, b in zip(x32, w32_onednn, b32)],
                "read fp32": lambda: flat32.sum(),  # every weight read once: the memory-bandwidth bound
                "read bf16": lambda: flat16.sum(),
            }
            pack = PackedWeights()

            def packed(xs, ws, bs):
                with pack:
                    return [linear(x, w, b) for x, w, b in zip(xs, ws, bs)]
            packed(x32, w32, b32)  # transposes once, untimed
            routes["pack fp32"] = lambda: packed(x32, w32, b32)
            if torch.bfloat16 in machine.detect().packed_dtypes:
                packed(x16, w16, b16)  # packs once, untimed
                routes["pack bf16 (oneDNN)"] = lambda: packed(x16, w16, b16)
            for name, fn in routes.items():
                ms = median_ms(fn)
                gb = mb_bf16 * (2 if "fp32" in name else 1) / ms
                out[f"rows_{m} {name}"] = {"ms": round(ms, 3), "GB_per_s": round(gb, 1)}
        if torch.bfloat16 in machine.detect().packed_dtypes:
            w, x = torch.randn(64, 64).bfloat16(), torch.randn(1, 64).bfloat16()
            pack = PackedWeights()
            with pack:
                linear(x, w)
                per_call = median_ms(lambda: [linear(x, w) for _ in range(100)]) * 10  # µs per call
            out["packed bf16 64x64 per call (us)"] = round(per_call, 1)
            out["F.linear bf16 64x64 per call (us)"] = round(
                median_ms(lambda: [F.linear(x, w) for _ in range(100)]) * 10, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
