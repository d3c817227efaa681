"""A1 A4 A5 (faults injected into checkpoint writes) and A3 (truncation and bit flips of a
committed checkpoint)."""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
import signal
import traceback
from pathlib import Path

from .table import row
from .runs import ckpt_state, cli, data_args, forked, losses, max_param_diff, tiny_args


# -- A1 A4 A5: faults injected into checkpoint writes --------------------------------------------------

def install_faults(root: Path, at: int, mode: str, seed: int, log: Path) -> dict:
    """Count file operations under `root`; at the `at`-th, SIGKILL (mode kill) or raise ENOSPC
    (mode enospc). Counted: each write() (cut at a random byte when it is the one), fsync, and in
    kill mode also rename and rmtree (cut after a random subset of its files). Logs each op kind
    and each committed step to `log`."""
    import builtins
    import io

    import safetensors.torch as st

    rng = random.Random(seed)
    root_s = str(root.resolve())
    state = {"n": 0, "fired": None}
    real_open, real_fsync, real_replace, real_rmtree = builtins.open, os.fsync, os.replace, shutil.rmtree
    logf = real_open(log, "a", buffering=1)

    def inside(p) -> bool:
        try:
            return os.path.abspath(os.fspath(p)).startswith(root_s)
        except TypeError:
            return False

    def tick(kind: str) -> bool:
        state["n"] += 1
        logf.write(f"op {state['n']} {kind}\n")
        if state["n"] == at:
            state["fired"] = kind
            logf.write(f"fire {kind}\n")
            return True
        return False

    def die():
        if mode == "kill":
            logf.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(errno.ENOSPC, "No space left on device")

    class Faulty:
        def __init__(self, f):
            self._f = f

        def write(self, data):
            if tick("write"):
                self._f.write(data[:rng.randint(0, len(data))])
                self._f.flush()
                die()
            return self._f.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

        def __getattr__(self, name):
            return getattr(self._f, name)

    def fopen(file, mode="r", *a, **kw):
        f = real_open(file, mode, *a, **kw)
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and inside(file):
            return Faulty(f)
        return f

    def fsync(fd):
        if tick("fsync"):
            die()
        return real_fsync(fd)

    def replace(src, dst, *a, **kw):
        if inside(dst) and mode == "kill" and tick("rename-retention" if ".deleting-" in os.fspath(dst)
                                                   else "rename"):
            die()
        real_replace(src, dst, *a, **kw)
        m = re.fullmatch(r"step-(\d{8})", Path(dst).name)
        if m and Path(src).name.startswith("."):
            logf.write(f"committed {int(m.group(1))}\n")

    def rmtree(path, *a, **kw):
        if inside(path) and mode == "kill" and tick("rmtree"):
            files = [p for p in Path(path).rglob("*") if p.is_file()]
            for p in rng.sample(files, rng.randint(0, len(files))):
                p.unlink()
            die()
        return real_rmtree(path, *a, **kw)

    def save_file(tensors, filename, metadata=None):
        data = st.save(tensors, metadata=metadata)
        with fopen(filename, "wb") as f:
            f.write(data)

    builtins.open = io.open = fopen
    os.fsync, os.replace, shutil.rmtree, st.save_file = fsync, replace, rmtree, save_file
    return state


def faulted_run(argv, root, at, mode, seed, log) -> int:
    state = install_faults(root, at, mode, seed, log)
    code = cli(argv)
    with open(log, "a") as f:
        f.write(f"total {state['n']}\n")
    return code


def read_fault_log(log: Path) -> dict:
    ops, committed, fired, total = [], [], None, None
    for line in log.read_text().splitlines() if log.exists() else []:
        parts = line.split()
        if parts[0] == "op":
            ops.append(parts[2])
        elif parts[0] == "committed":
            committed.append(int(parts[1]))
        elif parts[0] == "fire":
            fired = parts[1]
        elif parts[0] == "total":
            total = int(parts[1])
    return {"ops": ops, "committed": committed, "fired": fired, "total": total}


def campaign_checkpoint_faults(work: Path, quick: bool) -> list[dict]:
    """A1 (kill at a random op), A4 (ENOSPC at a random write/fsync), A5 (kill during retention)."""
    # The faulted run stops at 10 steps, its resumption goes on to 12 (one schedule of 12 steps for
    # both), so that every trial ends with a save after the fault: leftovers must be gone by then.
    steps, final, save_every, keep = 10, 12, 2, 3
    data = data_args(work)
    extra = (f"--train.keep_last={keep}", f"--optim.decay_steps={final}")
    ref = work / "a1-ref"
    assert forked(cli, tiny_args(ref, final, save_every, extra) + data, log=work / "a1-ref.log") == 0
    ref_losses = losses(ref)
    count_run = work / "a1-count"
    forked(faulted_run, tiny_args(count_run, steps, save_every, extra) + data, count_run / "checkpoints", 0,
           "kill", 0, work / "count-kill.log", log=work / "count.out")
    kill_ops = read_fault_log(work / "count-kill.log")["ops"]
    shutil.rmtree(count_run)
    forked(faulted_run, tiny_args(count_run, steps, save_every, extra) + data, count_run / "checkpoints", 0,
           "enospc", 0, work / "count-enospc.log", log=work / "count.out")
    nospace_ops = read_fault_log(work / "count-enospc.log")["ops"]
    retention_ops = [i + 1 for i, k in enumerate(kill_ops) if k in ("rmtree", "rename-retention")]
    plans = [("A1", "kill", list(range(1, len(kill_ops) + 1)), 10 if quick else 50),
             ("A4", "enospc", list(range(1, len(nospace_ops) + 1)), 4 if quick else 30),
             ("A5", "kill", retention_ops, 4 if quick else 20)]
    rng = random.Random(1)
    rows = []
    for item, mode, candidates, trials in plans:
        tally = {"partial_loaded": 0, "previous_lost": 0, "leftover_after_next_save": 0, "bad_step_dirs": 0,
                 "resume_failed": 0, "complete_after": [], "exit_codes": {}, "tracebacks": 0,
                 "tmp_left_after_failure": 0, "fired": {}}
        for t in range(trials):
            run = work / f"{item}-{t}"
            log = work / f"{item}-{t}.faults"
            at = rng.choice(candidates)
            code = forked(faulted_run, tiny_args(run, steps, save_every, extra) + data, run / "checkpoints", at,
                          mode, t, log, log=work / f"{item}-{t}.out")
            info = read_fault_log(log)
            tally["fired"][info["fired"]] = tally["fired"].get(info["fired"], 0) + 1
            tally["exit_codes"][code] = tally["exit_codes"].get(code, 0) + 1
            out_text = (work / f"{item}-{t}.out").read_text(errors="replace")
            tally["tracebacks"] += "Traceback" in out_text
            after = ckpt_state(run / "checkpoints")
            tally["tmp_left_after_failure"] += mode == "enospc" and bool(after["hidden"])
            last = max(info["committed"], default=None)
            if last is not None and max(after["good"], default=-1) < last:
                tally["previous_lost"] += 1
            tally["bad_step_dirs"] += len(after["bad"])
            resumed = forked(cli, tiny_args(run, final, save_every, extra) + data, log=work / f"{item}-{t}.resume")
            if resumed != 0:
                tally["resume_failed"] += 1
            elif losses(run) != ref_losses or max_param_diff(run / "model", ref / "model") != 0.0:
                tally["partial_loaded"] += 1
            end = ckpt_state(run / "checkpoints")
            tally["leftover_after_next_save"] += bool(end["hidden"])
            tally["bad_step_dirs"] += len(end["bad"])
            tally["complete_after"].append(len(end["good"]))
            shutil.rmtree(run, ignore_errors=True)
        complete = sorted(set(tally["complete_after"]))
        if item == "A1":
            fails = tally["partial_loaded"] + tally["previous_lost"] + tally["leftover_after_next_save"] \
                + tally["resume_failed"]
            lost = (f"resumed to other losses or weights: {tally['partial_loaded']}; previous complete "
                    f"checkpoint lost: {tally['previous_lost']}; tmp dirs left after the next save: "
                    f"{tally['leftover_after_next_save']}; resume failed: {tally['resume_failed']}")
        elif item == "A4":
            ok_codes = {c: n for c, n in tally["exit_codes"].items()}
            fails = tally["previous_lost"] + tally["tmp_left_after_failure"] + tally["tracebacks"] \
                + tally["resume_failed"] + tally["partial_loaded"]
            lost = (f"previous checkpoint lost: {tally['previous_lost']}; tmp dirs left after the failure: "
                    f"{tally['tmp_left_after_failure']}; exit codes {ok_codes}; tracebacks instead of a message: "
                    f"{tally['tracebacks']}; resume after it failed: {tally['resume_failed']}")
        else:
            fails = tally["previous_lost"] + tally["bad_step_dirs"] + tally["resume_failed"] \
                + sum(c != keep for c in tally["complete_after"])
            lost = (f"complete checkpoints after the next save: {complete} (keep_last={keep}); newest verified "
                    f"one missing: {tally['previous_lost']}; half-deleted dirs in the step- namespace: "
                    f"{tally['bad_step_dirs']}; resume failed: {tally['resume_failed']}")
        rows.append(row(item, trials, fails, lost, f"campaign A1/A4/A5 ({len(kill_ops)} kill points, "
                        f"{len(nospace_ops)} ENOSPC points, {len(retention_ops)} in retention; {steps} steps, "
                        f"save every {save_every}; resumed to {final}, compared bitwise with an uninterrupted run)",
                        fired=tally["fired"], exit_codes=tally["exit_codes"]))
    return rows


# -- A3: truncation and bit flips of a committed checkpoint ----------------------------------------

def campaign_a3(work: Path, quick: bool) -> list[dict]:
    from lmlab.errors import ArtifactCorrupt, LmlabError

    data = data_args(work)
    run = work / "a3"
    assert forked(cli, tiny_args(run, 4, 4) + data, log=work / "a3.log") == 0
    ckpt = run / "checkpoints" / "step-00000004"
    files = sorted(p.name for p in ckpt.iterdir() if p.is_file())
    rng = random.Random(3)
    trials = 40 if quick else 200
    typed = untyped = silent = crashes = benign = 0
    examples = []

    def load_one(path: Path) -> int:
        from lmlab.train.checkpoint import load_checkpoint
        from lmlab.model import load_model
        from lmlab.train.optim import OptimConfig, build_optimizer

        model = load_model(run / "model")
        opt = build_optimizer(model, OptimConfig())
        try:
            load_checkpoint(path, model, opt)
        except ArtifactCorrupt:
            return 10
        except LmlabError:
            return 11
        except Exception:
            traceback.print_exc()
            return 12
        return 13

    for t in range(trials):
        bad = work / "a3-bad" / "step-00000004"
        shutil.rmtree(bad.parent, ignore_errors=True)
        shutil.copytree(ckpt, bad)
        name = rng.choice(files)
        size = (bad / name).stat().st_size
        offset = rng.randrange(max(size, 1))
        if rng.random() < 0.5:
            os.truncate(bad / name, offset)
            what = f"truncate {name} at {offset}"
        else:
            with open(bad / name, "r+b") as f:
                f.seek(offset)
                byte = f.read(1)
                f.seek(offset)
                f.write(bytes([byte[0] ^ (1 << rng.randrange(8))]))
            what = f"flip a bit of {name} at {offset}"
        code = forked(load_one, bad, log=work / "a3-load.log")
        if code == 10:
            typed += 1
        elif code == 11:
            typed += 1
        elif code == 13 and name == "manifest.json":
            benign += 1  # a flipped bit outside the hashes (timestamp, versions): the data loaded is intact
        elif code == 13:
            silent += 1
            examples.append(what)
        elif code < 0:
            crashes += 1
            examples.append(what)
        else:
            untyped += 1
            examples.append(what)
    return [row("A3", trials, untyped + silent + crashes,
                f"typed ArtifactCorrupt/LmlabError: {typed}/{trials}; untyped errors: {untyped}; crashes: {crashes}; "
                f"silent loads: {silent}" + (f" (e.g. {examples[:3]})" if examples else "")
                + (f"; intact loads after a flip in manifest.json outside its hashes: {benign}" if benign else ""),
                "campaign A3 (load_checkpoint of a committed step, hashes verified)")]
