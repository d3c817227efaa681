"""Time to validation loss ≤ 1.886 on tinyshakespeare characters, against nanoGPT's recipe.

Runs, in one sequence so that the ratio holds on a noisy machine:
  1. the reference: ../shared/reference/nanogpt_recipe_hf.py (nanoGPT's CPU recipe with
     transformers' GPT2LMHeadModel: 2000 iterations, batch 12, block 64), its training wall time;
  2. lmlab with the same recipe (configs/pretrain/shakespeare-char.yaml): throughput and loss;
  3. lmlab's faster recipe (configs/pretrain/shakespeare-char-fast.yaml).
For lmlab the time is `elapsed_s` (training wall time, evaluation excluded, as the reference
counts it) at the first evaluation whose validation loss (on the whole validation split) is
≤ 1.886, nanoGPT's documented result.

    LMLAB_DATA=../shared/data python benchmarks/bench_pretrain.py [--skip-reference]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.886


def run_lmlab(recipe: Path, out: Path, extra: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)  # this benchmark's own scratch directory: a fresh run each time
    cmd = [sys.executable, "-m", "lmlab", "pretrain", "--config", str(recipe), "--out", str(out),
           "--train.progress=false", "--train.resume=never", *extra]
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, stdout=subprocess.DEVNULL)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_loss" in r]
    hit = next((r for r in evals if r["val_loss"] <= TARGET), None)
    tps = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r]
    return {"recipe": recipe.name, "final_val_loss": evals[-1]["val_loss"], "train_wall_s": rows[-1]["elapsed_s"],
            "seconds_to_target": hit["elapsed_s"] if hit else None, "step_at_target": hit["step"] if hit else None,
            "median_tokens_per_s": sorted(tps)[len(tps) // 2] if tps else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("LMLAB_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--out", default="/tmp/lmlab-bench-pretrain")
    p.add_argument("--skip-reference", action="store_true")
    a = p.parse_args()
    from lmlab.machine import header

    print(header(), flush=True)
    os.environ["LMLAB_DATA"] = a.data
    text = Path(a.data) / "tinyshakespeare" / "input.txt"
    results = {}
    if not a.skip_reference:
        ref = subprocess.run([sys.executable, str(ROOT.parent / "shared" / "reference" / "nanogpt_recipe_hf.py"),
                              str(text)], check=True, capture_output=True, text=True)
        results["reference"] = json.loads(ref.stdout.strip().splitlines()[-1])
        print(json.dumps({"reference": results["reference"]}), flush=True)
    out = Path(a.out)
    for name, extra in (("shakespeare-char.yaml", ["--train.eval_every_steps=250"]),
                        ("shakespeare-char-fast.yaml", [])):
        r = run_lmlab(ROOT / "configs" / "pretrain" / name, out / name.split(".")[0], extra)
        results[name] = r
        print(json.dumps(r), flush=True)
    if "reference" in results:
        fast = results["shakespeare-char-fast.yaml"]["seconds_to_target"]
        if fast:
            print(json.dumps({"time_to_target_ratio_vs_reference": round(fast / results["reference"]["wall_s"], 3)}))


if __name__ == "__main__":
    main()
