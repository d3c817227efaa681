"""A2 B1 G4: real `python -m lmlab pretrain` subprocesses killed (SIGKILL, SIGTERM) at a random step."""

from __future__ import annotations

import random
import shutil
import signal
from pathlib import Path

from .table import row
from .runs import data_args, losses, max_param_diff, subprocess_run, tiny_args, wait_for_step


def campaign_kill_and_term(work: Path, quick: bool) -> list[dict]:
    from lmlab.artifacts import verify
    from lmlab.errors import LmlabError

    steps, save_every = 200, 10
    data = data_args(work)
    refs = []
    for name in ("a2-ref", "a2-ref2"):
        proc = subprocess_run(tiny_args(work / name, steps, save_every) + data, work / f"{name}.log")
        assert proc.wait() == 0, (work / f"{name}.log").read_text()[-2000:]
        refs.append(losses(work / name))
    ref = work / "a2-ref"
    b1_diff = max(abs(a - b) for a, b in zip(*refs)) if len(refs[0]) == len(refs[1]) else float("inf")
    rows = [row("B1", 1, int(refs[0] != refs[1]), f"max |Δloss| over {len(refs[0])} steps: {b1_diff}",
                "campaign A2 (two uninterrupted `python -m lmlab pretrain` runs, same seed)",
                max_abs_loss_diff=b1_diff)]
    rng = random.Random(2)
    # A2: SIGKILL at a random step
    trials = 2 if quick else 20
    worst_loss = worst_param = 0.0
    unverified = resume_failed = unequal = 0
    kill_steps = []
    for t in range(trials):
        run = work / f"a2-{t}"
        k = rng.randint(1, steps)
        proc = subprocess_run(tiny_args(run, steps, save_every) + data, work / f"a2-{t}.log")
        seen = wait_for_step(run, proc, k)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kill_steps.append(seen)
        for step_dir in (run / "checkpoints").glob("step-*"):
            try:
                verify(step_dir)
            except LmlabError:
                unverified += 1
        proc = subprocess_run(tiny_args(run, steps, save_every) + data, work / f"a2-{t}.log")
        if proc.wait() != 0:
            resume_failed += 1
            continue
        got = losses(run)
        if len(got) != len(refs[0]):
            unequal += 1
            worst_loss = float("inf")
        else:
            worst_loss = max(worst_loss, max(abs(a - b) for a, b in zip(got, refs[0])))
            unequal += got != refs[0]
        worst_param = max(worst_param, max_param_diff(run / "model", ref / "model"))
        shutil.rmtree(run, ignore_errors=True)
    rows.append(row("A2", trials, unequal + resume_failed + unverified + (worst_param != 0.0),
                    f"max |Δloss| {worst_loss}; max |Δparam| {worst_param}; runs with unequal losses {unequal}; "
                    f"checkpoints failing verify {unverified}; resume failed {resume_failed}",
                    f"campaign A2 (SIGKILL after steps {sorted(kill_steps)} of {steps}, save every {save_every})",
                    max_abs_loss_diff=worst_loss, max_param_diff=worst_param))
    # G4: SIGTERM at a random step
    trials = 1 if quick else 6
    late = bad_code = unequal = resume_failed = 0
    codes, lags = {}, []
    for t in range(trials):
        run = work / f"g4-{t}"
        k = rng.randint(1, steps - 1)
        proc = subprocess_run(tiny_args(run, steps, save_every) + data, work / f"g4-{t}.log")
        seen = wait_for_step(run, proc, k)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait()
        codes[code] = codes.get(code, 0) + 1
        bad_code += code != 0
        committed = max((int(p.name[5:]) for p in (run / "checkpoints").glob("step-*")), default=0)
        lags.append(committed - seen)
        late += not 0 <= committed - seen <= 1
        proc = subprocess_run(tiny_args(run, steps, save_every) + data, work / f"g4-{t}.log")
        if proc.wait() != 0:
            resume_failed += 1
            continue
        equal = losses(run) == refs[0] and max_param_diff(run / "model", ref / "model") == 0.0
        unequal += not equal
        shutil.rmtree(run, ignore_errors=True)
    rows.append(row("G4", trials, late + bad_code + unequal + resume_failed,
                    f"checkpoint not within 1 step of the signal: {late} (steps after the signal: {lags}); exit codes "
                    f"{codes}; resumed runs not bitwise equal: {unequal}; resume failed {resume_failed}",
                    f"campaign G4 (SIGTERM to `python -m lmlab pretrain` at a random step of {steps})"))
    return rows
