"""Training runs for the campaigns: the CLI in a forked child or a `python -m lmlab` subprocess,
the tiny pretraining run and its shards, and what a run left behind (losses, checkpoints,
weights)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from .environment import CORPUS, ROOT


def forked(fn, *args, log: Path | None = None) -> int:
    """Run fn(*args) in a forked child; its exit code (negative: killed by that signal). An
    exception in the child prints its traceback to the child's stderr and exits 1, as the
    interpreter would."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if log is not None:
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
            code = fn(*args) or 0
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def cli(argv: list[str]) -> int:
    from lmlab.cli import main

    return main(argv)


def tiny_args(out: Path, steps: int, save_every: int, extra: tuple[str, ...] = ()) -> list[str]:
    """`lmlab pretrain` of a 20k-parameter GPT on the project's tiny corpus (char tokenizer)."""
    return ["pretrain", "--out", str(out), "--data.block_size=16", f"--train.max_steps={steps}",
            f"--train.save_every_steps={save_every}", "--model.dropout=0.1", "--model.d_model=32",
            "--model.n_heads=2", "--model.n_layers=2", "--model.d_ff=64", "--train.batch_size=4",
            "--train.progress=false", "--train.threads=1", "--train.log_every_steps=1",
            "--train.eval_every_steps=1000", "--train.eval_batches=1", "--train.precision=fp32",
            "--train.peak_flops=1e9", "--optim.warmup_steps=2", "--optim.lr=3e-3", *extra]


def data_args(work: Path) -> list[str]:
    """Shards made once (char tokenizer on the tiny corpus), shared by every run of a campaign."""
    shards = work / "prep" / "data" / "shards"
    if not shards.exists():
        code = forked(cli, [*tiny_args(work / "prep", 1, 1), f"--data.inputs=[{CORPUS}]", "--data.dataset=null",
                            "--data.tokenizer_kind=char", "--data.vocab_size=64", "--data.valid_fraction=0.1"],
                      log=work / "prep.log")
        assert code == 0, (work / "prep.log").read_text()[-2000:]
    return ["--data.dataset=null", f"--data.shards={shards}"]


def losses(run: Path) -> list[float]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(x)["train_loss"] for x in path.read_text().splitlines() if x.strip()]


def ckpt_state(root: Path) -> dict:
    """Checkpoint directories: committed steps that verify, step-* that do not, hidden leftovers."""
    from lmlab.errors import LmlabError
    from lmlab.train.checkpoint import KIND, list_checkpoints
    from lmlab.artifacts import verify

    good, bad = [], []
    for step, path in list_checkpoints(root):
        try:
            verify(path, kind=KIND)
            good.append(step)
        except LmlabError:
            bad.append(step)
    hidden = sorted(p.name for p in root.iterdir() if p.name.startswith(".") and p.name != ".lock") \
        if root.is_dir() else []
    return {"good": good, "bad": bad, "hidden": hidden}


def max_param_diff(a: Path, b: Path) -> float:
    from lmlab.artifacts import load_tensors

    x, y = load_tensors(a / "model.safetensors"), load_tensors(b / "model.safetensors")
    if x.keys() != y.keys():
        return float("inf")
    return max((x[k].double() - y[k].double()).abs().max().item() for k in x)


def subprocess_run(argv: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "lmlab", *argv], env=env, stdout=f, stderr=f)


def wait_for_step(run: Path, proc: subprocess.Popen, step: int, timeout: float = 120.0) -> int:
    """Poll metrics.jsonl until `step` rows are written (or the process ends); the rows seen."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline and proc.poll() is None:
        path = run / "metrics.jsonl"
        if path.exists():
            seen = path.read_bytes().count(b"\n")
            if seen >= step:
                break
        time.sleep(0.002)
    return seen
