"""`lmlab cost`: what training a model on D tokens costs — FLOPs, memory, time, money.

Compute (Kaplan et al. 2020; PaLM, Chowdhery et al. 2022, App. B):
    C = 6·N·D + 12·L·T·d·D        N non-embedding matmul weights (+ vocabulary projection),
                                   D tokens, L layers, T context, d width
    (`lmlab.model.summary.flops_per_token(training=True)` per token, times D.)
Time per step = FLOPs per step / (peak FLOP/s × MFU × devices) + a fixed per-step overhead.
The peak is a named device's datasheet figure or, for "measure", a GEMM timed on this machine
in the chosen precision; MFU is an assumption (default 0.45 on a GPU; on a CPU the defaults
and the overhead are calibrated on lmlab's own runs, see `CPU_MFU` and BENCHMARKS.md).
Memory per device, mixed precision with AdamW (Rajbhandari et al. 2020, ZeRO §3):
    weights 4N (fp32 master) · gradients 4N · Adam moments 8N
    activations per layer ≈ T·b·d·(34 + 5·h·T/d) bytes with 16-bit activations
    (Korthikanti et al. 2022, eq. 2; ×2 in fp32; only 2·T·b·d per layer with activation
    checkpointing) plus the logits, 4·T·b·V (lmlab's chunked loss keeps at most one chunk).
Compute-optimal (Hoffmann et al. 2022, "Chinchilla"): D ≈ 20·N, so for a budget C,
N_opt ≈ √(C/120) and D_opt ≈ 20·N_opt.
"""

from __future__ import annotations

import math
from pathlib import Path

from lmlab.errors import ConfigError
from lmlab.model.config import TransformerConfig, preset
from lmlab.model.summary import count_parameters, flops_per_token

# Dense datasheet peaks, FLOP/s, without sparsity.
DEVICES: dict[str, dict[str, float]] = {
    "h200": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "h100": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "a100": {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},
    "l4": {"bf16": 121e12, "fp16": 121e12, "fp32": 30.3e12},
    "v100": {"fp16": 125e12, "fp32": 15.7e12},
    "t4": {"fp16": 65e12, "fp32": 8.1e12},
}
# Calibrated on lmlab's own training steps on this project's 2-core CPU (benchmarks/bench_cost.py,
# BENCHMARKS.md): bf16 steps of 10–30 M-parameter models reach ~0.55 of a timed bf16 GEMM, plus a
# fixed ~20 ms per optimizer step (Python, AdamW over every tensor) that dominates tiny models.
# The fp32 figure is an assumption, not yet measured.
CPU_MFU = {"bf16": 0.55, "fp32": 0.45}
CPU_STEP_OVERHEAD_S = 0.02
GPU_MFU = 0.45


def _config(model: str) -> TransformerConfig:
    if Path(model).is_dir():
        from lmlab.model.pretrained import read_model_config

        return read_model_config(model)
    return preset(model)


def memory_bytes(cfg: TransformerConfig, batch_size: int, seq_len: int, precision: str,
                 activation_checkpointing: bool = False) -> dict[str, int]:
    n = count_parameters(cfg)["parameters"]
    layers = cfg.n_layers + (cfg.decoder_layers if cfg.arch == "encoder-decoder" else 0)
    t, b, d, h = seq_len, batch_size, cfg.d_model, cfg.n_heads
    if activation_checkpointing:
        per_layer = 2 * t * b * d
    else:
        per_layer = t * b * d * (34 + 5 * h * t / d)
    act_scale = 2 if precision == "fp32" else 1
    logits = 4 * t * b * cfg.vocab_size if cfg.head in ("clm", "mlm", "seq2seq") else 0
    mem = {"weights": 4 * n, "gradients": 4 * n, "optimizer": 8 * n,
           "activations": int(layers * per_layer * act_scale + logits)}
    mem["total"] = sum(mem.values())
    return mem


def estimate_cost(model: str = "gpt2-small", tokens: float = 1e9, batch_size: int = 8, seq_len: int | None = None,
                  device: str = "measure", precision: str = "bf16", mfu: float | None = None, devices: int = 1,
                  price_per_hour: float = 0.0, activation_checkpointing: bool = False) -> dict:
    """A cost sheet for training `model` (preset or model directory) on `tokens` tokens."""
    cfg = _config(model)
    t = seq_len or cfg.max_seq_len
    if tokens <= 0 or batch_size < 1 or devices < 1:
        raise ConfigError("tokens, batch_size and devices must be positive")
    per_token = flops_per_token(cfg, t, training=True)
    total_flops = per_token * tokens
    if device == "measure":
        import torch

        from lmlab.train.loop import measure_peak_flops

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        peak = measure_peak_flops(dev, dtype)
        default_mfu = GPU_MFU if dev.type == "cuda" else CPU_MFU.get(precision, 0.45)
        overhead = 0.0 if dev.type == "cuda" else CPU_STEP_OVERHEAD_S
        device_name = f"measured {dev.type} GEMM"
    else:
        if device not in DEVICES:
            raise ConfigError(f"unknown device {device!r}; use one of {', '.join(sorted(DEVICES))} or 'measure'")
        if precision not in DEVICES[device]:
            raise ConfigError(f"{device} has no {precision} figure; use one of {sorted(DEVICES[device])}")
        peak, default_mfu, device_name, overhead = DEVICES[device][precision], GPU_MFU, device, 0.0
    mfu = mfu if mfu is not None else default_mfu
    step_tokens = batch_size * t * devices
    step_seconds = per_token * step_tokens / (peak * mfu * devices) + overhead
    seconds = step_seconds * tokens / step_tokens
    params = count_parameters(cfg)
    n = params["parameters"]
    c_budget = 6 * n * tokens
    n_opt = math.sqrt(c_budget / 120)
    return {
        "model": model, "parameters": n, "non_embedding_parameters": params["non_embedding_parameters"],
        "tokens": tokens, "seq_len": t, "training_flops_per_token": per_token, "total_flops": total_flops,
        "device": device_name, "precision": precision, "peak_flops_per_s": peak, "assumed_mfu": mfu,
        "devices": devices, "hours": seconds / 3600, "step_seconds": step_seconds, "step_overhead_s": overhead,
        "cost": seconds / 3600 * price_per_hour * devices if price_per_hour else None,
        "memory_gib_per_device": {k: round(v / 2**30, 3) for k, v in
                                  memory_bytes(cfg, batch_size, t, precision, activation_checkpointing).items()},
        "chinchilla": {"tokens_per_parameter": tokens / n, "compute_optimal_parameters": int(n_opt),
                       "compute_optimal_tokens": int(20 * n_opt)},
    }
