"""B2 B3: resume at every step boundary; a kill inside gradient accumulation."""

from __future__ import annotations

import os
import random
import shutil
import signal
from pathlib import Path

import torch

from .table import row
from .runs import cli, data_args, forked, losses, max_param_diff, tiny_args


def same_checkpoint_tensors(a: Path, b: Path) -> bool:
    from lmlab.artifacts import load_tensors

    for name in ("model.safetensors", "optimizer.safetensors"):
        x, y = load_tensors(a / name), load_tensors(b / name)
        if x.keys() != y.keys() or not all(torch.equal(x[k], y[k]) for k in x):
            return False
    return True


def killed_at_backward(argv: list[str], call: int) -> int:
    """Run `argv`, SIGKILL inside the `call`-th backward (a micro-step of an accumulated step)."""
    real = torch.Tensor.backward
    count = {"n": 0}

    def backward(self, *a, **kw):
        count["n"] += 1
        if count["n"] == call:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, *a, **kw)
    torch.Tensor.backward = backward
    return cli(argv)


def campaign_resume(work: Path, quick: bool) -> list[dict]:
    n = 20
    data = data_args(work)
    extra = (f"--optim.decay_steps={n}", "--train.keep_last=0")
    ref = work / "b2-ref"
    assert forked(cli, tiny_args(ref, n, 5, extra) + data, log=work / "b2.log") == 0
    ref_ckpt = ref / "checkpoints" / f"step-{n:08d}"
    boundaries = [1, 2, 3, 5, 8, 13, 19] if quick else list(range(1, n))
    unequal = []
    for k in boundaries:
        run = work / f"b2-{k}"
        ok = forked(cli, tiny_args(run, k, 5, extra) + data, log=work / "b2.log") == 0
        ok = ok and forked(cli, tiny_args(run, n, 5, extra) + data, log=work / "b2.log") == 0
        if not (ok and losses(run) == losses(ref) and same_checkpoint_tensors(run / "checkpoints" / ref_ckpt.name,
                                                                              ref_ckpt)):
            unequal.append(k)
        shutil.rmtree(run, ignore_errors=True)
    rows = [row("B2", len(boundaries), len(unequal),
                f"boundaries whose final weights, optimizer moments, RNG states or losses differ: {unequal or 0}",
                f"campaign B2 (stop after k of {n} steps, resume; k = {boundaries[0]}..{boundaries[-1]})")]
    # B3: grad_accum 4, SIGKILL inside micro-step 2 of a random step
    accum = ("--train.grad_accum_steps=4", "--optim.decay_steps=8", "--train.keep_last=0")
    ref = work / "b3-ref"
    assert forked(cli, tiny_args(ref, 8, 1, accum) + data, log=work / "b3.log") == 0
    rng = random.Random(4)
    trials = 2 if quick else 6
    bad, where = 0, []
    for t in range(trials):
        run = work / f"b3-{t}"
        s = rng.randint(2, 8)
        code = forked(killed_at_backward, tiny_args(run, 8, 1, accum) + data, (s - 1) * 4 + 2, log=work / "b3.log")
        resumed_from = max((int(p.name[5:]) for p in (run / "checkpoints").glob("step-*")), default=0)
        where.append((s, resumed_from))
        ok = code == -signal.SIGKILL and resumed_from == s - 1
        ok = ok and forked(cli, tiny_args(run, 8, 1, accum) + data, log=work / "b3.log") == 0
        ok = ok and losses(run) == losses(ref) and max_param_diff(run / "model", ref / "model") == 0.0
        bad += not ok
        shutil.rmtree(run, ignore_errors=True)
    rows.append(row("B3", trials, bad, f"resumed runs not bitwise equal to the reference, or not from the last "
                    f"optimizer step: {bad} ((killed step, resumed from) = {where})",
                    "campaign B3 (grad_accum_steps=4, SIGKILL in the 2nd backward of a step, save every step)"))
    return rows
