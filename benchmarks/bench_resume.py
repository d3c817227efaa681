"""Exact resume under kill -9: N trials, each killed at a random step ~ U(1, 200)
of training and restarted with --train.resume=auto; the figure is the largest |Δloss| over every
step against an uninterrupted run, and the largest |Δparameter| at the end.

    python benchmarks/bench_resume.py --trials 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fixtures" / "tiny_corpus.txt"


def cli(out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "lmlab", "pretrain", "--out", str(out), f"--data.inputs=[{CORPUS}]",
            "--data.dataset=null", "--data.tokenizer_kind=char", "--data.vocab_size=64", "--data.block_size=32",
            "--model.d_model=64", "--model.n_heads=4", "--model.n_layers=2", "--model.d_ff=128", "--model.dropout=0.1",
            f"--train.max_steps={steps}", "--train.save_every_steps=10", "--train.batch_size=8",
            "--train.log_every_steps=1", "--train.eval_every_steps=50", "--train.eval_batches=2",
            "--train.progress=false", "--train.threads=1", "--train.precision=fp32", "--train.peak_flops=1e9",
            "--data.valid_fraction=0.1"]


def losses(out: Path) -> list[float]:
    return [json.loads(x)["train_loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--work", default="/tmp/lmlab-bench-resume")
    a = p.parse_args()
    from lmlab.machine import header

    print(header(), flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run(cli(work / "ref", a.steps), check=True, env=env, capture_output=True)
    from lmlab.artifacts import load_tensors, verify
    from lmlab.train.checkpoint import list_checkpoints

    ref_loss, ref_w = losses(work / "ref"), load_tensors(work / "ref" / "model" / "model.safetensors")
    rng = random.Random(0)
    worst_loss, worst_param, failed_verify, kills = 0.0, 0.0, 0, []
    for trial in range(a.trials):
        out = work / f"t{trial}"
        # the data stages are cached in OUT/data: copy them so that the kill lands in training
        shutil.copytree(work / "ref" / "data", out / "data")
        proc = subprocess.Popen(cli(out, a.steps), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kill_at = rng.randint(1, a.steps - 1)  # kill step ~ U(1, steps): when that step has been logged
        metrics = out / "metrics.jsonl"
        while proc.poll() is None:
            if metrics.exists() and metrics.read_bytes().count(b"\n") >= kill_at:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = len(losses(out)) if (out / "metrics.jsonl").exists() else 0
        kills.append(done)
        resumed = subprocess.run(cli(out, a.steps), env=env, capture_output=True, text=True)
        if resumed.returncode != 0:
            raise SystemExit(f"trial {trial}: resume failed:\n{resumed.stderr[-3000:]}")
        got = losses(out)
        worst_loss = max([worst_loss] + [abs(x - y) for x, y in zip(got, ref_loss)] +
                         ([float("inf")] if len(got) != len(ref_loss) else []))
        w = load_tensors(out / "model" / "model.safetensors")
        worst_param = max(worst_param, max((w[k] - ref_w[k]).abs().max().item() for k in ref_w))
        for _, ckpt in list_checkpoints(out / "checkpoints"):
            try:
                verify(ckpt)
            except Exception:
                failed_verify += 1
        print(json.dumps({"trial": trial, "killed_after_logged_steps": done, "max_abs_loss_diff": worst_loss}),
              flush=True)
    print(json.dumps({"trials": a.trials, "steps": a.steps, "kill_steps": kills,
                      "max_abs_loss_diff": worst_loss, "max_abs_param_diff": worst_param,
                      "checkpoints_failing_verify": failed_verify}))


if __name__ == "__main__":
    main()
