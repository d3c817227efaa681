"""GPU throughput: lmlab's training step and decode loop on CUDA against transformers' GPT-2 of the
same shape, in the same run. One short script (about a minute on an H100; well under 8 minutes on
any recent GPU); on a machine without CUDA it prints the machine line and exits with status 2.

Training: GPT-2 small's shape (12 layers, d_model 768, 12 heads, vocabulary 50257, 1024 tokens,
batch 8, no dropout): lmlab's `Transformer` against `transformers.GPT2LMHeadModel` (its SDPA
attention). A step is forward, loss, backward and the same fused AdamW step on both sides, timed
between CUDA synchronisations. Precisions: fp32 (TF32 off, torch's default), and the one
`lmlab.machine` chooses for the device (bf16 autocast from compute capability 8.0, else fp16
autocast with a grad scaler). MFU = tokens/s × training FLOPs per token (`lmlab.model.summary`)
÷ the datasheet peak of `lmlab cost` for a device it names.

Generation: the same shape at 16 + 256 tokens, built by lmlab and exported with
`lmlab.hf.convert.export_hf`, so both sides hold the same weights, in the device's generation
dtype (`lmlab.machine`); greedy, 256 new tokens with no end token, batch 1 and 8, rounds
alternating between the two; the greedy tokens of both sides are compared.

    python benchmarks/bench_gpu.py                   # everything above
    python benchmarks/bench_gpu.py --steps 3 --new-tokens 32 --rounds 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from lmlab import machine

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def timed(fn, device) -> float:
    torch.cuda.synchronize(device)
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize(device)
    return time.perf_counter() - t


def datasheet_peak(name: str, precision: str) -> float | None:
    from lmlab.train.cost import DEVICES

    for key, peaks in DEVICES.items():
        if key in name.lower().replace(" ", ""):
            return peaks.get(precision)
    return None


# -- training ----------------------------------------------------------------------------------


def training_models(a, device):
    import transformers

    from lmlab.model import Transformer, preset

    torch.manual_seed(0)
    cfg = preset("gpt2-base", vocab_size=a.vocab, max_seq_len=a.seq, dropout=0.0, attn_dropout=0.0)
    ours = Transformer(cfg).to(device).train()
    hf_cfg = transformers.GPT2Config(vocab_size=a.vocab, n_embd=cfg.d_model, n_layer=cfg.n_layers,
                                     n_head=cfg.n_heads, n_positions=a.seq, resid_pdrop=0, embd_pdrop=0,
                                     attn_pdrop=0, bos_token_id=None, eos_token_id=None, attn_implementation="sdpa")
    hf = transformers.GPT2LMHeadModel(hf_cfg).to(device).train()
    return cfg, ours, hf


def train_step_fn(side: str, model, optimizer, scaler, ids, precision: str, device):
    dtype = DTYPES[precision]
    # lmlab is given shifted targets; transformers shifts its labels inside
    targets = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -100)], 1) if side == "lmlab" else ids

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(input_ids=ids, labels=targets).loss
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    return step


def bench_training(a, m, device) -> list[dict]:
    from lmlab.model.summary import flops_per_token
    from lmlab.train.optim import OptimConfig, build_optimizer

    cfg, ours, hf = training_models(a, device)
    flops = flops_per_token(cfg, a.seq, training=True)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq), generator=torch.Generator().manual_seed(0)).to(device)
    optimizers = {"lmlab": build_optimizer(ours, OptimConfig()),  # fused, as lmlab.machine chooses on CUDA
                  "transformers": torch.optim.AdamW(hf.parameters(), lr=1e-3, fused=True)}
    models = {"lmlab": ours, "transformers": hf}
    rows = []
    for precision in ("fp32", m.precision(device)):
        scalers = {s: torch.amp.GradScaler("cuda", enabled=precision == "fp16") for s in models}
        steps = {s: train_step_fn(s, models[s], optimizers[s], scalers[s], ids, precision, device) for s in models}
        times = {s: [] for s in models}
        for r in range(a.warmup + a.steps):
            for s in (("lmlab", "transformers") if r % 2 == 0 else ("transformers", "lmlab")):
                t = timed(steps[s], device)
                if r >= a.warmup:
                    times[s].append(t)
        tokens = a.batch * a.seq
        tps = {s: tokens / statistics.median(v) for s, v in times.items()}
        peak = datasheet_peak(m.cuda_name, precision)
        row = {"training": f"gpt2 {cfg.n_layers} layers d {cfg.d_model}, batch {a.batch} × {a.seq}",
               "precision": precision, "lmlab_tokens_per_s": round(tps["lmlab"]),
               "transformers_tokens_per_s": round(tps["transformers"]),
               "ratio": round(tps["lmlab"] / tps["transformers"], 3),
               "lmlab_step_ms": round(1e3 * statistics.median(times["lmlab"]), 2),
               "transformers_step_ms": round(1e3 * statistics.median(times["transformers"]), 2),
               "lmlab_mfu": round(tps["lmlab"] * flops / peak, 3) if peak else None,
               "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    del ours, hf, optimizers, models
    torch.cuda.empty_cache()
    return rows


# -- generation --------------------------------------------------------------------------------


def generation_models(a, work: Path, dtype: torch.dtype, device):
    import transformers

    from lmlab.hf.convert import export_hf
    from lmlab.model import Transformer, preset, save_model

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = preset("gpt2-base", vocab_size=a.vocab, max_seq_len=a.prompt_len + a.new_tokens, dropout=0.0,
                 attn_dropout=0.0)
    ours = Transformer(cfg).eval()
    with torch.no_grad():  # less flat logits: greedy choices are not decided by rounding
        ours.embed.tokens.weight.mul_(10)
    save_model(ours, work / "lm")
    export_hf(work / "lm", work / "hf")
    hf = transformers.GPT2LMHeadModel.from_pretrained(work / "hf", use_safetensors=True,
                                                      attn_implementation="sdpa").eval()
    return ours.to(device, dtype), hf.to(device, dtype)


def run_ours(model, prompts, n):
    from lmlab.generate import DecodeLoop, GenerationConfig

    loop = DecodeLoop(model, prompts.tolist(), GenerationConfig(temperature=0, max_new_tokens=n, stop_token_ids=[]))
    for _ in loop:
        pass
    return torch.tensor(loop.generated)


def run_hf(model, prompts, n):
    with torch.inference_mode():
        out = model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, num_beams=1, use_cache=True, pad_token_id=0, eos_token_id=None)
    return out[:, prompts.size(1):].cpu()


def bench_generation(a, m, device) -> list[dict]:
    dtype_name = m.generation_dtype(device)
    with tempfile.TemporaryDirectory() as tmp:
        ours, hf = generation_models(a, Path(tmp), getattr(torch, dtype_name), device)
    rows = []
    for b in a.gen_batch:
        prompts = torch.randint(0, a.vocab, (b, a.prompt_len), generator=torch.Generator().manual_seed(b)).to(device)
        run_ours(ours, prompts, 8), run_hf(hf, prompts, 8)  # warm-up both
        times, tokens = {"lmlab": [], "transformers": []}, {}
        for r in range(a.rounds):
            for name, fn, model in ((("lmlab", run_ours, ours), ("transformers", run_hf, hf)) if r % 2 == 0
                                    else (("transformers", run_hf, hf), ("lmlab", run_ours, ours))):
                out = {}
                times[name].append(timed(lambda: out.setdefault("t", fn(model, prompts, a.new_tokens)), device))
                tokens[name] = out["t"]
        tps = {k: b * a.new_tokens / statistics.median(v) for k, v in times.items()}
        row = {"generation": f"gpt2 12 layers d 768, batch {b}, {a.prompt_len} + {a.new_tokens} tokens, greedy",
               "dtype": dtype_name, "lmlab_tokens_per_s": round(tps["lmlab"], 1),
               "transformers_tokens_per_s": round(tps["transformers"], 1),
               "ratio": round(tps["lmlab"] / tps["transformers"], 3),
               "ms_per_step": {k: round(1e3 * statistics.median(v) / a.new_tokens, 3) for k, v in times.items()},
               "greedy_tokens_equal_fraction": round((tokens["lmlab"] == tokens["transformers"]).float().mean().item(),
                                                     4)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def attention_check(m, device) -> dict:
    """Whether lmlab's bf16/fp16 training forward runs with the flash kernel alone (no fallback)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from lmlab.model import Transformer, preset

    kernels = m.attention_kernels(device)
    out = {"attention_kernels": list(kernels)}
    if "flash" in kernels:
        model = Transformer(preset("gpt2-tiny", vocab_size=128, max_seq_len=64)).to(device)
        ids = torch.randint(0, 128, (2, 64), device=device)
        try:
            dtype = DTYPES[m.precision(device)]
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast(device.type, dtype=dtype):
                model(input_ids=ids, labels=ids).loss.backward()
            out["flash_alone"] = "ran"
        except RuntimeError as e:
            out["flash_alone"] = f"failed: {str(e).splitlines()[0]}"
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8, help="training sequences per step")
    p.add_argument("--seq", type=int, default=1024, help="training tokens per sequence")
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--steps", type=int, default=10, help="timed training steps per side and precision")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--gen-batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3, help="generation rounds per side and batch")
    a = p.parse_args(argv)
    print(machine.header(), flush=True)
    m = machine.detect()
    if not m.cuda_devices:
        print(f"bench_gpu: no CUDA device on this machine (torch {torch.__version__}, CUDA build: "
              f"{torch.version.cuda or 'no'}); run it where `lmlab info` shows a CUDA device", file=sys.stderr)
        return 2
    device = torch.device("cuda", 0)
    t0 = time.perf_counter()
    results = {"machine": machine.header(), "choices": m.describe()["chosen"], **attention_check(m, device)}
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}), flush=True)
    results["training"] = bench_training(a, m, device)
    results["generation"] = bench_generation(a, m, device)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
