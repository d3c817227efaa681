"""G1 G2 G3 G5: 2-rank `lmlab` runs on CPU (gloo) with a fault in one rank.

Each rank is a process of tests/unit/train/rank_worker.py (the distributed fault tests' worker):
`lmlab` in-process, a fault at a chosen step of a chosen rank, and an audit of every file
operation under OUT. G3 and G5 start the ranks as torchrun would (RANK, WORLD_SIZE, a rendezvous
on 127.0.0.1) so that each rank's exit is timed on its own; G1 runs real torchrun --max-restarts.
    G3  NaN loss, or an inf in one gradient after DDP's all-reduce (seen by that rank alone), on
        rank 1 at a random step, under train.nonfinite=stop and skip
    G5  SIGSTOP of rank 1 or rank 0 at a random step, train.dist_timeout_s=5
    G2  every run above audited, plus pretrain and finetune runs from an empty OUT (data and
        tokenizer built there)
    G1  SIGKILL of rank 0 or 1 at a random step under torchrun --max-restarts=3, vs an
        uninterrupted 2-rank run
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .environment import CORPUS, ROOT
from .table import row
from .runs import data_args, losses, max_param_diff, tiny_args

WORKER = ROOT / "tests" / "unit" / "train" / "rank_worker.py"
TASKS = ROOT / "tests" / "fixtures" / "tasks"
BOUND_S = 180  # a run not over by then hangs


def worker():
    spec = importlib.util.spec_from_file_location("rank_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_ranks(rep: Path, args: list[str], faults: list[str]) -> tuple[list[int | None], float, bool]:
    """(exit codes, seconds, hung): both ranks to the end, or killed after BOUND_S."""
    t0 = time.monotonic()
    procs = worker().launch(rep, args, faults, env=env())
    hung = False
    codes: list[int | None] = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, BOUND_S - (time.monotonic() - t0))))
        except subprocess.TimeoutExpired:
            hung = True
            p.kill()
            codes.append(None)
            p.wait()
    return codes, time.monotonic() - t0, hung


def reports(rep: Path) -> list[dict]:
    out = []
    for r in range(2):
        path = rep / f"rank-{r}.json"
        out.append(json.loads(path.read_text()) if path.exists() else {})
    return out


def stderr(rep: Path, rank: int) -> str:
    path = rep / f"stderr-{rank}.txt"
    return path.read_text(errors="replace") if path.exists() else ""


class Audit:
    """Writes under OUT by rank != 0, and saves that released rank 1 before their manifest existed."""

    def __init__(self):
        self.runs = self.rank0_writes = self.saves = 0
        self.foreign: list[str] = []
        self.early: list[int] = []

    def add(self, reps: list[dict]) -> None:
        if not reps[0] and not reps[1]:
            return
        self.runs += 1
        self.rank0_writes += len(reps[0].get("writes", []))
        self.foreign += [f"{phase} {event} {path}" for phase, event, path in reps[1].get("writes", [])]
        self.saves += len(reps[1].get("saves", []))
        self.early += reps[1].get("manifest_missing_after_save", [])


def campaign_dist_faults(work: Path, quick: bool) -> list[dict]:
    data = data_args(work)
    rng = random.Random(7)
    audit = Audit()
    steps, save_every = 8, 2
    # G3: a non-finite step on rank 1
    trials = 4 if quick else 12
    differ = wrong = hangs = tracebacks = 0
    cases = []
    for t in range(trials):
        kind, policy = ("nan", "inf-grad")[t % 2], ("stop", "skip")[(t // 2) % 2]
        step = rng.randint(1, steps)
        rep, out = work / f"g3-{t}", work / f"g3-{t}-run"
        args = tiny_args(out, steps, save_every, (f"--train.nonfinite={policy}", "--train.dist_timeout_s=30")) + data
        codes, seconds, hung = run_ranks(rep, args, [f"--{kind}=1:{step}"])
        r0, r1 = reports(rep)
        audit.add([r0, r1])
        hangs += hung
        same = codes[0] == codes[1] and r0.get("step") == r1.get("step") \
            and r0.get("skipped_steps") == r1.get("skipped_steps") \
            and (policy == "stop" or r0.get("params_sha256") == r1.get("params_sha256"))
        if policy == "stop":  # both stop before the optimizer step of the bad step
            expected = codes == [3, 3] and r0.get("step") == step - 1
        else:
            expected = codes == [0, 0] and r0.get("step") == steps and r0.get("skipped_steps") == 1
        differ += not same
        wrong += not expected
        tracebacks += sum("Traceback" in stderr(rep, r) for r in range(2))
        cases.append(f"{kind}@{step}/{policy}:{codes[0]},{codes[1]}")
        shutil.rmtree(out, ignore_errors=True)
    rows = [row("G3", trials, differ + wrong + hangs + tracebacks,
                f"runs whose ranks took different actions: {differ}; not the action of the policy (stop: both exit 3 "
                f"before the step; skip: both finish with 1 skipped step, equal weights): {wrong}; hangs (over "
                f"{BOUND_S} s): {hangs}; tracebacks: {tracebacks}",
                f"campaign G3 (2 gloo ranks, {steps} steps; NaN loss or an inf gradient after the all-reduce on rank 1 "
                f"at a random step; (fault@step/policy: exit codes) = {cases})")]
    # G5: one rank stopped
    timeout_s = 5
    trials = 2 if quick else 6
    late = bad_exit = unclear = 0
    waits = []
    for t in range(trials):
        stopped_rank, step = 1 if t % 2 == 0 else 0, rng.randint(1, steps)
        other = 1 - stopped_rank
        rep, out = work / f"g5-{t}", work / f"g5-{t}-run"
        args = tiny_args(out, steps, save_every, (f"--train.dist_timeout_s={timeout_s}",)) + data
        procs = worker().launch(rep, args, [f"--stop={stopped_rank}:{step}"], env=env())
        try:
            code = procs[other].wait(timeout=BOUND_S)
        except subprocess.TimeoutExpired:
            code = None
        ended = time.time()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        marker = rep / f"stopped-{stopped_rank}.json"
        wait = ended - json.loads(marker.read_text())["time"] if marker.exists() and code is not None else float("inf")
        waits.append(round(wait, 1))
        late += wait > timeout_s + 10
        bad_exit += code != 5
        err = stderr(rep, other)
        unclear += not (err.startswith(f"error: rank {other}:") and f"rank {stopped_rank} (pid" in err
                        and "stopped" in err and "dist_timeout_s" in err and "Traceback" not in err)
        audit.add(reports(rep))
        shutil.rmtree(out, ignore_errors=True)
    rows.append(row("G5", trials, late + bad_exit + unclear,
                    f"seconds from SIGSTOP to the other rank's exit: {waits} (bound: train.dist_timeout_s={timeout_s} "
                    f"+ 10); over the bound: {late}; exit status not 5 (PeerLost): {bad_exit}; messages that do not "
                    f"name the stopped rank, its state and train.dist_timeout_s, or hold a traceback: {unclear}",
                    f"campaign G5 (2 gloo ranks; SIGSTOP of rank 1 or 0 at a random step of {steps})",
                    max_seconds=max(waits)))
    # G2: runs from an empty OUT, data or tokenizer built by the run itself
    builds = [("pretrain", tiny_args(work / f"g2-{i}-run", 6, 2, (
        f"--data.inputs=[{CORPUS}]", "--data.dataset=null", "--data.tokenizer_kind=char", "--data.vocab_size=64",
        "--data.valid_fraction=0.1"))) for i in range(1 if quick else 3)]
    builds.append(("finetune", [
        "finetune", "sentiment", "--train", str(TASKS / "sentiment_train.csv"),
        "--eval", str(TASKS / "sentiment_dev.csv"), "--out", str(work / "g2-ft-run"), "--model.d_model=32",
        "--model.n_layers=2", "--model.n_heads=2",
        "--model.d_ff=64", "--train.progress=false", "--train.threads=1", "--train.batch_size=8", "--train.max_steps=6",
        "--train.save_every_steps=2", "--train.eval_every_steps=3", "--task.vocab_size=200", "--train.precision=fp32"]))
    failed = 0
    for i, (stage, args) in enumerate(builds):
        rep = work / f"g2-{i}"
        codes, _, hung = run_ranks(rep, args, ["--audit"])
        failed += codes != [0, 0] or hung
        audit.add(reports(rep))
        shutil.rmtree(args[args.index("--out") + 1], ignore_errors=True)
    examples = f" {audit.foreign[:5]}" if audit.foreign else ""
    rows.append(row("G2", audit.runs, int(bool(audit.foreign)) + len(audit.early) + failed,
                    f"file operations under OUT by rank 1: {len(audit.foreign)}{examples} (rank 0: "
                    f"{audit.rank0_writes}); saves after which rank 1 left the barrier before the step's "
                    f"manifest existed: {len(audit.early)} of {audit.saves}; audited runs that failed: {failed}",
                    f"campaign G2 (every file open for writing, mkdir, rename, remove under OUT in both ranks, by an "
                    f"audit hook: the G3 and G5 runs and {len(builds)} runs from an empty OUT: "
                    f"{', '.join(stage for stage, _ in builds)})",
                    foreign_writes=len(audit.foreign), early_releases=len(audit.early)))
    return rows


def torchrun(work: Path, name: str, args: list[str], faults: list[str]) -> tuple[int | None, Path]:
    rep = work / name
    rep.mkdir(parents=True, exist_ok=True)
    with open(rep / "torchrun.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                                 "--max-restarts=3", "--monitor-interval=0.5", str(WORKER), str(rep), *faults, "--",
                                 *args], env=env(), stdout=log, stderr=log)
        try:
            return proc.wait(timeout=2 * BOUND_S), rep
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None, rep


def campaign_elastic(work: Path, quick: bool) -> list[dict]:
    data = data_args(work)
    steps, save_every = 10, 2
    ref = work / "g1-ref-run"
    code, _ = torchrun(work, "g1-ref", tiny_args(ref, steps, save_every) + data, [])
    assert code == 0, (work / "g1-ref" / "torchrun.log").read_text()[-3000:]
    rng = random.Random(11)
    trials = 3 if quick else 10
    unfinished = unequal = not_restarted = 0
    worst, kills = 0.0, []
    for t in range(trials):
        rank, step = rng.randint(0, 1), rng.randint(1, steps)
        run = work / f"g1-{t}-run"
        code, rep = torchrun(work, f"g1-{t}", tiny_args(run, steps, save_every) + data, [f"--kill={rank}:{step}"])
        kills.append(f"rank {rank}@{step}")
        if code != 0:
            unfinished += 1
            continue
        not_restarted += any(r.get("restart") != 1 for r in reports(rep))
        diff = max_param_diff(run / "model", ref / "model")
        worst = max(worst, diff)
        unequal += diff != 0.0 or losses(run) != losses(ref)
        shutil.rmtree(run, ignore_errors=True)
    return [row("G1", trials, unfinished + unequal + not_restarted,
                f"runs that did not finish: {unfinished}; finished runs whose final weights or losses differ from the "
                f"uninterrupted 2-rank run: {unequal} (max |Δparam| {worst}); runs that did not restart: "
                f"{not_restarted}",
                f"campaign G1 (torchrun --nproc-per-node=2 --max-restarts=3, {steps} steps, save every {save_every}, "
                f"dropout 0.1; SIGKILL of {', '.join(kills)})", max_param_diff=worst)]
