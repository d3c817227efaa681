"""`lmlab cost`: what training a model on D tokens costs — FLOPs, memory, time, money.

Compute (Kaplan et al. 2020; PaLM, Chowdhery et al. 2022, App. B):
    C = 6·N·D + 12·L·T·d·D        N non-embedding matmul weights (+ vocabulary projection),
                                   D tokens, L layers, T context, d width
    (`lmlab.model.summary.flops_per_token(training=True)` per token, times D.)
Time per step, on a named device: FLOPs per step / (datasheet peak × MFU × devices), MFU an
assumption (default 0.45). On this machine (``device="measure"``) one MFU figure does not fit:
narrow models reach a smaller share of the GEMM peak and spend more on element-wise work, so
the step is profiled instead — the model at 1 and at 3 layers (same width, vocabulary, head and
precision) runs a few training steps (forward, backward, lmlab's AdamW), and
    step(L) = [fb₁ + (L−1)·(fb₃ − fb₁)/2] · b/b′  +  opt₁ + (L−1)·(opt₃ − opt₁)/2
(fb: forward+backward seconds at a batch b′ ≤ b of at most PROFILE_FLOPS, or more sequences where
a step of the 3-layer model takes under PROFILE_STEP_S; opt: the AdamW step)
extrapolates layer by layer — two layers apart, not one, because the per-layer time is a
difference of two medians and a deep model multiplies its noise by L−1. The MFU this implies
is reported. A width whose single sequence is too large to profile in about a second falls back
to the timed GEMM peak × ``CPU_MFU``; an explicit ``mfu`` always uses the formula.
Memory per device, mixed precision with AdamW (Rajbhandari et al. 2020, ZeRO §3):
    weights 4N (fp32 master) · gradients 4N · Adam moments 8N
    activations per layer ≈ T·b·d·(34 + 5·h·T/d) bytes with 16-bit activations
    (Korthikanti et al. 2022, eq. 2; ×2 in fp32; only 2·T·b·d per layer with activation
    checkpointing) plus the logits, 4·T·b·V: an upper bound, since lmlab's loss keeps only
    softmax − onehot in the compute dtype, in blocks of at most 2²⁷ entries.
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
# The fallback when a model is too wide to profile: bf16 steps of 10–30 M-parameter models reached
# ~0.55 of a timed bf16 GEMM on the 2-core AVX-512 CPU of BENCHMARKS.md (benchmarks/bench_cost.py),
# plus ~20 ms per step of fixed work. The fp32 figure is an assumption.
CPU_MFU = {"bf16": 0.55, "fp32": 0.45}
CPU_STEP_OVERHEAD_S = 0.02
GPU_MFU = 0.45
MLM_SCORED = 0.15  # a masked-LM head computes logits only at the masked positions
PROFILE_FLOPS = 6e10  # training FLOPs of one profiled step of the 3-layer model: ~0.2-0.5 s on 2 cores
# A faster machine profiles a larger batch (up to the real one), as long as a step of the 3-layer model
# stays under this: one sequence per step costs more per sequence than a batch does (on a 2-core AMX CPU,
# 30 % more at 512 tokens than 4 sequences), and a profile at batch 1 overestimates the step by as much.
PROFILE_STEP_S = 0.5
PROFILE_LAYERS = (1, 3)


def _config(model: str) -> TransformerConfig:
    if Path(model).is_dir():
        from lmlab.model.pretrained import read_model_config, require_transformer

        return require_transformer(read_model_config(model), model, "lmlab cost")
    return preset(model)


def _training_flops_per_token(cfg: TransformerConfig, seq_len: int) -> int:
    return flops_per_token(cfg, seq_len, training=True, scored_fraction=MLM_SCORED if cfg.head == "mlm" else 1.0)


def _profile_inputs(cfg: TransformerConfig, batch: int, seq: int, device) -> dict:
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=g).to(device)
    if cfg.arch == "encoder-decoder":
        return {"input_ids": ids, "decoder_input_ids": ids, "labels": ids}
    if cfg.head == "mlm":  # 15 % of positions scored, as the MLM objective does
        labels = torch.where(torch.rand(batch, seq, generator=g).to(device) < MLM_SCORED, ids, -100)
        return {"input_ids": ids, "labels": labels}
    if cfg.head == "classification":
        return {"input_ids": ids, "labels": torch.zeros(batch, dtype=torch.long, device=device)}
    if cfg.head == "span":
        return {"input_ids": ids, "labels": torch.zeros(batch, 2, dtype=torch.long, device=device)}
    return {"input_ids": ids, "labels": ids}


def profile_step(cfg: TransformerConfig, batch_size: int, seq_len: int, precision: str,
                 reps: int = 5, optimizer: str = "adamw") -> dict | None:
    """Seconds of one training step of `cfg` on this machine, extrapolated from the model at 1 and 3
    layers (see the module docstring); None when one sequence of the 3-layer model is too large,
    or for an encoder–decoder whose two stacks differ in depth (one layer count cannot scale both)."""
    import dataclasses
    import statistics
    import time

    import torch

    from lmlab import machine
    from lmlab.model import Transformer
    from lmlab.train.optim import OptimConfig, build_optimizer

    dev = torch.device(machine.detect().device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if cfg.arch == "encoder-decoder" and cfg.decoder_layers != cfg.n_layers:
        return None
    small = [dataclasses.replace(cfg, n_layers=k, n_decoder_layers=k if cfg.arch == "encoder-decoder" else None,
                                 max_seq_len=max(cfg.max_seq_len, seq_len)) for k in PROFILE_LAYERS]
    per_seq = _training_flops_per_token(small[1], seq_len) * seq_len
    if per_seq > PROFILE_FLOPS:
        return None
    batch = max(1, min(batch_size, int(PROFILE_FLOPS // per_seq)))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def timed_steps(c: TransformerConfig, b: int, n: int) -> tuple[list[float], list[float]]:
        model = Transformer(c).to(dev)
        opt_step = build_optimizer(model, OptimConfig(name=optimizer))
        inputs = _profile_inputs(c, b, seq_len, dev)
        t_fb, t_opt = [], []
        for i in range(n + 2):  # two warm-up steps first: allocator, kernels, optimizer state
            sync()
            t0 = time.perf_counter()
            with torch.autocast(dev.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss = model(**inputs).loss
            loss.backward()
            sync()
            t1 = time.perf_counter()
            opt_step.step()
            opt_step.zero_grad(set_to_none=True)
            sync()
            if i >= 2:
                t_fb.append(t1 - t0)
                t_opt.append(time.perf_counter() - t1)
        return t_fb, t_opt

    if batch < batch_size:  # as many of the real batch's sequences as PROFILE_STEP_S allows
        probe = timed_steps(small[1], batch, 1)[0][0]
        batch = min(batch_size, max(batch, int(batch * PROFILE_STEP_S / max(probe, 1e-9))))
    fb, opt = [], []
    for c in small:
        t_fb, t_opt = timed_steps(c, batch, reps)
        fb.append(statistics.median(t_fb))
        opt.append(statistics.median(t_opt))
    return {**extrapolate(fb, opt, cfg.n_layers, batch_size / batch), "profiled_batch": batch, "device": dev.type}


def extrapolate(fb: list[float], opt: list[float], layers: int, batch_scale: float,
                at: tuple[int, int] = PROFILE_LAYERS) -> dict:
    """Step seconds of `layers` layers from the forward+backward and optimizer seconds measured at
    `at` layers; the forward+backward part scales with the batch, the optimizer's does not."""
    span = at[1] - at[0]
    forward_backward = (fb[0] + (layers - at[0]) * max(fb[1] - fb[0], 0.0) / span) * batch_scale
    optimizer_s = opt[0] + (layers - at[0]) * max(opt[1] - opt[0], 0.0) / span
    return {"step_seconds": forward_backward + optimizer_s, "forward_backward_s": forward_backward,
            "optimizer_s": optimizer_s}


def memory_bytes(cfg: TransformerConfig, batch_size: int, seq_len: int, precision: str,
                 activation_checkpointing: bool = False, optimizer: str = "adamw") -> dict[str, int]:
    params = count_parameters(cfg)
    n = params["parameters"]
    layers = cfg.n_layers + (cfg.decoder_layers if cfg.arch == "encoder-decoder" else 0)
    t, b, d, h = seq_len, batch_size, cfg.d_model, cfg.n_heads
    if activation_checkpointing:
        per_layer = 2 * t * b * d
    else:
        per_layer = t * b * d * (34 + 5 * h * t / d)
    act_scale = 2 if precision == "fp32" else 1
    logits = 4 * t * b * cfg.vocab_size if cfg.head in ("clm", "mlm", "seq2seq") else 0
    # AdamW keeps two fp32 moments per parameter; Muon one momentum per hidden-matrix entry
    # (≈ the non-embedding parameters) and AdamW's two for the rest.
    hidden = params["non_embedding_parameters"] if optimizer == "muon" else 0
    mem = {"weights": 4 * n, "gradients": 4 * n, "optimizer": 8 * (n - hidden) + 4 * hidden,
           "activations": int(layers * per_layer * act_scale + logits)}
    mem["total"] = sum(mem.values())
    return mem


def auto_precision(device: str = "measure") -> str:
    """`--precision auto`: the machine's training precision, or a named device's 16-bit format."""
    if device == "measure":
        from lmlab import machine

        m = machine.detect()
        return m.precision(m.device)
    return "bf16" if "bf16" in DEVICES.get(device, {"bf16": 0}) else "fp16"


def estimate_cost(model: str = "gpt2-small", tokens: float = 1e9, batch_size: int = 8, seq_len: int | None = None,
                  device: str = "measure", precision: str = "auto", mfu: float | None = None, devices: int = 1,
                  price_per_hour: float = 0.0, activation_checkpointing: bool = False,
                  optimizer: str = "adamw") -> dict:
    """A cost sheet for training `model` (preset or model directory) on `tokens` tokens with
    `optimizer` (adamw, or muon: the training's optim.name). precision auto: what training's
    `train.precision=auto` takes on this machine (`lmlab.machine`: bf16 only where it is native),
    or on a named device bf16 where its datasheet has it, else fp16."""
    cfg = _config(model)
    if precision not in ("auto", "bf16", "fp16", "fp32"):
        raise ConfigError(f"precision: unknown {precision!r}; use auto, bf16, fp16 or fp32")
    if precision == "auto":
        precision = auto_precision(device)
    if optimizer not in ("adamw", "muon"):
        raise ConfigError(f"optimizer: unknown {optimizer!r}; use adamw or muon")
    t = seq_len or cfg.max_seq_len
    if tokens <= 0 or batch_size < 1 or devices < 1:
        raise ConfigError("tokens, batch_size and devices must be positive")
    per_token = _training_flops_per_token(cfg, t)
    total_flops = per_token * tokens
    step_tokens = batch_size * t * devices
    profile = None
    if device == "measure":
        import torch

        from lmlab import machine
        from lmlab.train.loop import measure_peak_flops

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
        dev = torch.device(machine.detect().device)
        if precision == "fp16" and dev.type != "cuda":
            raise ConfigError("precision: fp16 trains only on CUDA (train.precision refuses it on the CPU); "
                              "use auto, bf16 or fp32, or name a GPU with --device")
        peak = measure_peak_flops(dev, dtype)
        default_mfu = GPU_MFU if dev.type == "cuda" else CPU_MFU.get(precision, 0.45)
        overhead = 0.0 if dev.type == "cuda" else CPU_STEP_OVERHEAD_S
        device_name = f"measured {dev.type} GEMM"
        if mfu is None:
            profile = profile_step(cfg, batch_size, t, precision, optimizer=optimizer)
    else:
        if device not in DEVICES:
            raise ConfigError(f"unknown device {device!r}; use one of {', '.join(sorted(DEVICES))} or 'measure'")
        if precision not in DEVICES[device]:
            raise ConfigError(f"{device} has no {precision} figure; use one of {sorted(DEVICES[device])}")
        peak, default_mfu, device_name, overhead = DEVICES[device][precision], GPU_MFU, device, 0.0
    if profile is not None:  # devices run their shares in parallel: the step is one device's step
        step_seconds, overhead = profile["step_seconds"], 0.0
        mfu = per_token * batch_size * t / (step_seconds * peak)
        method = f"profiled on this {profile['device']} (the model at 1 and 3 layers, extrapolated)"
    else:
        mfu = mfu if mfu is not None else default_mfu
        step_seconds = per_token * step_tokens / (peak * mfu * devices) + overhead
        method = "FLOPs / (peak × MFU)"
    seconds = step_seconds * tokens / step_tokens
    params = count_parameters(cfg)
    n = params["parameters"]
    c_budget = 6 * n * tokens
    n_opt = math.sqrt(c_budget / 120)
    return {
        "model": model, "optimizer": optimizer, "parameters": n,
        "non_embedding_parameters": params["non_embedding_parameters"],
        "tokens": tokens, "seq_len": t, "training_flops_per_token": per_token, "total_flops": total_flops,
        "device": device_name, "precision": precision, "peak_flops_per_s": peak,
        "mfu": mfu,  # assumed by the formula, or implied by a profiled step
        "step_time_method": method, "profile": profile, "devices": devices,
        "hours": seconds / 3600, "step_seconds": step_seconds, "step_overhead_s": overhead,
        "cost": seconds / 3600 * price_per_hour * devices if price_per_hour else None,
        "memory_gib_per_device": {k: round(v / 2**30, 3) for k, v in
                                  memory_bytes(cfg, batch_size, t, precision, activation_checkpointing,
                                               optimizer).items()},
        "chinchilla": {"tokens_per_parameter": tokens / n, "compute_optimal_parameters": int(n_opt),
                       "compute_optimal_tokens": int(20 * n_opt)},
    }
