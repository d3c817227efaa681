"""Generation throughput: lmlab's decode loop vs `transformers`' `generate`, same weights, same run.

The model is a GPT-2-family decoder (6 layers, d_model 384, 6 heads, vocab 8000), initialised
once by lmlab, saved, and exported with `lmlab.hf.convert.export_hf`; transformers loads the
export with `GPT2LMHeadModel.from_pretrained`. Both sides decode greedily with their KV cache,
256 new tokens from the same prompts (no end token, so every row runs the full length), at
batch 1 and batch 8. Rounds alternate lmlab / transformers so that machine noise hits both;
figures are medians over rounds, and the greedy tokens of both sides are compared.

On a shared machine wall time mostly measures the neighbours, so each run also records the
process's CPU time (``time.process_time``, all threads): tokens per CPU-second is the steadier
figure there, and with ``--threads 1`` it is the single-core throughput. ``gemm_floor`` is the
time per step of the weight products alone, through the kernels of lmlab's decode step, and
``read_floor`` the time to read those weights once from memory (what any implementation pays
at batch 1): transformers' step time divided by it bounds the ratio any implementation can reach.

    python benchmarks/bench_generate.py                        # fp32 both sides, batch 1 and 8
    python benchmarks/bench_generate.py --dtype bfloat16       # both sides in bf16 weights
    python benchmarks/bench_generate.py --dtype bfloat16 --hf-dtype float32   # lmlab bf16 vs HF default
    python benchmarks/bench_generate.py --rounds 1 --new-tokens 32 --batch 1   # a quick look
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


def build(a, work: Path):
    import transformers

    from lmlab.hf.convert import export_hf
    from lmlab.model import Transformer, preset, save_model

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = preset("gpt2-small", vocab_size=a.vocab, d_model=a.d_model, n_heads=a.heads, n_layers=a.layers,
                 d_ff=4 * a.d_model, max_seq_len=a.prompt_len + a.new_tokens, dropout=0.0, attn_dropout=0.0)
    ours = Transformer(cfg).eval()
    with torch.no_grad():  # less flat logits: greedy choices are not decided by rounding
        ours.embed.tokens.weight.mul_(10)
    save_model(ours, work / "lm")
    export_hf(work / "lm", work / "hf")
    hf = transformers.GPT2LMHeadModel.from_pretrained(work / "hf", use_safetensors=True).eval()
    return ours.to(getattr(torch, a.dtype)), hf.to(getattr(torch, a.hf_dtype or a.dtype))


def gemm_floor(model, batch: int, steps: int = 16) -> float:
    """Seconds per decode step spent in the weight products alone (QKV, output, FFN, vocabulary),
    through the kernels lmlab's decode step uses (`FusedStep`'s route for this dtype)."""
    from lmlab.model.fused_step import FusedStep
    from lmlab.model.linear import PackedWeights

    with torch.inference_mode():
        step = FusedStep(model, PackedWeights(), rows=batch)  # as a generation of ≥ 32 new tokens builds it
        dtype = next(model.parameters()).dtype
        xs = {p.in_features: torch.randn(batch, p.in_features, dtype=dtype) for p in step.products}
        for p in step.products:
            p(xs[p.in_features])  # untimed: the first call of each shape
        t = time.perf_counter()
        for _ in range(steps):
            for p in step.products:
                p(xs[p.in_features])
    return (time.perf_counter() - t) / steps


def read_floor(model, steps: int = 16) -> float:
    """Seconds to read every weight of a decode step once (a sum over one contiguous copy, all
    threads): the memory-bandwidth bound of any implementation at batch 1."""
    vocab = model.head.proj.matrix(model.embed.tokens.weight)  # [V, C]
    flat = torch.cat([p.detach().flatten() for p in model.decoder.parameters() if p.dim() == 2] + [vocab.flatten()])
    flat.sum()
    t = time.perf_counter()
    for _ in range(steps):
        flat.sum()
    return (time.perf_counter() - t) / steps


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
    return out[:, prompts.size(1):]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--d-model", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="lmlab's weights")
    p.add_argument("--hf-dtype", choices=["float32", "bfloat16"], default=None,
                   help="transformers' weights (default: same as --dtype)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ours, hf = build(a, Path(tmp))
    from lmlab.machine import header

    results = {"machine": header(), "config": {k: v for k, v in vars(a).items()}}
    print(results["machine"], file=sys.stderr, flush=True)  # stdout is the JSON alone
    for b in a.batch:
        g = torch.Generator().manual_seed(b)
        prompts = torch.randint(0, a.vocab, (b, a.prompt_len), generator=g)
        run_ours(ours, prompts, 8), run_hf(hf, prompts, 8)  # warm-up both
        times = {"lmlab": [], "transformers": []}
        cpu = {"lmlab": [], "transformers": []}
        floor, reads = [], []
        tokens = {}
        for _ in range(a.rounds):
            for name, fn, model in (("lmlab", run_ours, ours), ("transformers", run_hf, hf)):
                t, c = time.perf_counter(), time.process_time()
                tokens[name] = fn(model, prompts, a.new_tokens)
                times[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
            with torch.no_grad():
                floor.append(gemm_floor(ours, b))
                reads.append(read_floor(ours))
        tps = {k: b * a.new_tokens / statistics.median(v) for k, v in times.items()}
        per_cpu = {k: b * a.new_tokens / statistics.median(v) for k, v in cpu.items()}
        same = (tokens["lmlab"] == tokens["transformers"]).float().mean().item()
        results[f"batch_{b}"] = {"lmlab_tokens_per_s": round(tps["lmlab"], 1),
                                 "transformers_tokens_per_s": round(tps["transformers"], 1),
                                 "ratio": round(tps["lmlab"] / tps["transformers"], 2),
                                 "lmlab_tokens_per_cpu_s": round(per_cpu["lmlab"], 1),
                                 "transformers_tokens_per_cpu_s": round(per_cpu["transformers"], 1),
                                 "ratio_cpu_time": round(per_cpu["lmlab"] / per_cpu["transformers"], 2),
                                 "greedy_tokens_equal_fraction": round(same, 4),
                                 "ms_per_step": {k: round(1e3 * statistics.median(v) / a.new_tokens, 2)
                                                 for k, v in times.items()},
                                 "gemm_floor_ms_per_step": round(1e3 * statistics.median(floor), 2),
                                 "read_floor_ms_per_step": round(1e3 * statistics.median(reads), 2),
                                 "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()}}
        print(json.dumps({f"batch_{b}": results[f"batch_{b}"]}), file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
