"""`lmlab cost` against lmlab's own measured training steps on this machine.

For each shape: the predicted step time of `lmlab cost --device measure` (which profiles the
model at 1 and 3 layers and extrapolates, see lmlab/train/cost.py) next to the median measured
step of the whole model (forward, backward, lmlab's AdamW; MLM scores 15 % of positions as the
objective does); agreement within 30 % is what the estimator promises. ``--formula`` predicts with the old
single-MFU formula instead (timed GEMM peak × CPU_MFU + a fixed overhead), for comparison.

    python benchmarks/bench_cost.py [--precision bf16|fp32] [--held-out] [--formula]
    # an AVX2-only CPU, approximately: torch's and oneDNN's kernels lowered to AVX2, lmlab told so
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 LMLAB_MACHINE=avx2 python benchmarks/bench_cost.py --held-out

SHAPES are the shapes CPU_MFU was fitted on; HELD_OUT are shapes, families and
sequence lengths it never saw.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from lmlab import machine
from lmlab.model import Transformer, preset
from lmlab.train.cost import CPU_MFU, _profile_inputs, auto_precision, estimate_cost
from lmlab.train.optim import OptimConfig, build_optimizer

SHAPES = [("gpt2-tiny", dict(d_model=128, n_heads=4, n_layers=4, d_ff=512), 12, 64, 65),
          ("gpt2-small", dict(), 8, 256, 8000),
          ("bert-small", dict(n_layers=4, d_model=256, n_heads=4, d_ff=1024), 16, 128, 8000)]
HELD_OUT = [("gpt2-small", dict(n_layers=4, d_model=512, n_heads=8, d_ff=2048), 4, 512, 16000),
            ("llama-tiny", dict(d_model=256, n_heads=8, n_layers=6, d_ff=704), 8, 256, 32000),
            ("bert-small", dict(n_layers=2, d_model=192, n_heads=3, d_ff=768), 32, 64, 21128),
            ("gpt2-tiny", dict(d_model=96, n_heads=3, n_layers=3, d_ff=384), 24, 128, 99)]


def measure(name, fields, batch, seq, vocab, precision, steps=8) -> float:
    cfg = preset(name, vocab_size=vocab, max_seq_len=seq, **fields)  # dropout as the preset has it, as in training
    model = Transformer(cfg)
    opt = build_optimizer(model, OptimConfig())
    inputs = _profile_inputs(cfg, batch, seq, torch.device("cpu"))
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precision", choices=["bf16", "fp32"], default=None,
                   help="default: training's automatic precision on this machine (bf16 only where native)")
    p.add_argument("--held-out", action="store_true", help="shapes the defaults were not fitted on")
    p.add_argument("--formula", action="store_true", help="predict with FLOPs / (GEMM peak × CPU_MFU)")
    a = p.parse_args()
    a.precision = a.precision or auto_precision()
    print(machine.header(), f"| precision {a.precision}", flush=True)
    import tempfile

    from lmlab.model import save_model

    for name, fields, batch, seq, vocab in (HELD_OUT if a.held_out else SHAPES):
        with tempfile.TemporaryDirectory() as d:
            cfg = preset(name, vocab_size=vocab, max_seq_len=seq, **fields)
            save_model(Transformer(cfg), f"{d}/m")
            sheet = estimate_cost(f"{d}/m", tokens=batch * seq, batch_size=batch, seq_len=seq, precision=a.precision,
                                  mfu=CPU_MFU[a.precision] if a.formula else None)
        measured = measure(name, fields, batch, seq, vocab, a.precision)
        print(json.dumps({"shape": f"{name} {fields} batch {batch} seq {seq} vocab {vocab}",
                          "method": sheet["step_time_method"], "predicted_step_s": round(sheet["step_seconds"], 4),
                          "measured_step_s": round(measured, 4),
                          "ratio": round(sheet["step_seconds"] / measured, 3)}), flush=True)


if __name__ == "__main__":
    main()
