"""Faults in a 2-rank `lmlab pretrain` on CPU (gloo), each rank a `rank_worker.py` process:
NaN on one rank (G3), a stopped peer (G5), who writes files (G2), SIGKILL of one rank under
torchrun --max-restarts (G1, slow)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .rank_worker import launch

ROOT = Path(__file__).parents[3]
WORKER = Path(__file__).parent / "rank_worker.py"
FIXTURE = ROOT / "tests" / "fixtures" / "tiny_corpus.txt"
TINY = ["--data.dataset=null", f"--data.inputs=[{FIXTURE}]", "--data.tokenizer_kind=char", "--data.vocab_size=64",
        "--data.block_size=16", "--data.valid_fraction=0.1", "--model.d_model=32", "--model.n_heads=2",
        "--model.n_layers=2", "--model.d_ff=64", "--model.dropout=0.1", "--train.batch_size=4",
        "--train.progress=false", "--train.threads=1", "--train.log_every_steps=1", "--train.eval_every_steps=5",
        "--train.eval_batches=2", "--train.precision=fp32", "--train.peak_flops=1e9", "--optim.warmup_steps=2",
        "--optim.lr=3e-3"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def pretrain_args(out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--out", str(out), *TINY, *extra]


def finish(procs, timeout: float = 120) -> list[int]:
    try:
        return [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def reports(directory: Path) -> list[dict]:
    return [json.loads((directory / f"rank-{r}.json").read_text()) for r in range(2)]


@pytest.mark.dist
@pytest.mark.parametrize("fault, policy", [("--nan=1:3", "stop"), ("--inf-grad=1:3", "skip")])
def test_a_non_finite_step_on_one_rank_is_one_decision_for_all(tmp_path, figure, fault, policy):
    """A NaN loss on rank 1 reaches every rank through the all-reduce; an inf put into rank 1's
    gradients after DDP's all-reduce reaches no other rank, and only the shared verdict keeps
    rank 0 from stepping (or saving) while rank 1 skips or stops. Both ranks must take the same
    action at the same step, exit as documented and not hang."""
    t = time.time()
    procs = launch(tmp_path / "rep", pretrain_args(tmp_path / "run", "--train.max_steps=6",
                                                   "--train.save_every_steps=2", f"--train.nonfinite={policy}",
                                                   "--train.dist_timeout_s=20"), [fault], env=ENV)
    codes = finish(procs)
    seconds = time.time() - t
    r0, r1 = reports(tmp_path / "rep")
    figure(exit_codes=codes, seconds=seconds)
    if policy == "stop":
        assert codes == [3, 3], [(tmp_path / "rep" / f"stderr-{r}.txt").read_text()[-2000:] for r in range(2)]
        assert r0["step"] == r1["step"] == 2  # stopped before the optimizer step of step 3
        for r in range(2):
            err = (tmp_path / "rep" / f"stderr-{r}.txt").read_text()
            assert "error: step 3: non-finite" in err and "Traceback" not in err and "step-00000002" in err
    else:
        assert codes == [0, 0], [(tmp_path / "rep" / f"stderr-{r}.txt").read_text()[-2000:] for r in range(2)]
        assert r0["step"] == r1["step"] == 6 and r0["skipped_steps"] == r1["skipped_steps"] == 1
        assert r0["params_sha256"] == r1["params_sha256"]
    assert seconds < 120


@pytest.mark.dist
def test_a_stopped_peer_ends_the_others_within_the_timeout(tmp_path, figure):
    """SIGSTOP of rank 1 at step 3: rank 0 waits train.dist_timeout_s in its next collective,
    then exits with PeerLost's status (5) and a message that names the stopped rank and what
    to do, no traceback."""
    timeout_s = 5
    procs = launch(tmp_path / "rep", pretrain_args(tmp_path / "run", "--train.max_steps=6",
                                                   "--train.save_every_steps=2",
                                                   f"--train.dist_timeout_s={timeout_s}"), ["--stop=1:3"], env=ENV)
    try:
        code = procs[0].wait(timeout=120)
        ended = time.time()
    finally:
        for p in procs:  # SIGKILL ends a stopped process too
            if p.poll() is None:
                p.kill()
                p.wait()
    stopped = json.loads((tmp_path / "rep" / "stopped-1.json").read_text())["time"]
    err = (tmp_path / "rep" / "stderr-0.txt").read_text()
    figure(seconds_to_exit=ended - stopped, timeout_s=timeout_s)
    assert code == 5, err[-3000:]
    assert err.startswith("error: rank 0: in training step 3: no answer from the other ranks within "
                          f"train.dist_timeout_s={timeout_s} s (rank 1 (pid {procs[1].pid} on ")
    assert "stopped (SIGSTOP" in err and "step-00000002" in err and "Traceback" not in err
    assert ended - stopped <= timeout_s + 10


def finetune_args(out: Path, *extra: str) -> list[str]:
    tasks = ROOT / "tests" / "fixtures" / "tasks"
    return ["finetune", "sentiment", "--train", str(tasks / "sentiment_train.csv"), "--eval",
            str(tasks / "sentiment_dev.csv"), "--out", str(out), "--model.d_model=32", "--model.n_layers=2",
            "--model.n_heads=2", "--model.d_ff=64", "--train.progress=false", "--train.threads=1",
            "--train.batch_size=8", "--optim.warmup_steps=2", "--optim.lr=3e-3", "--task.vocab_size=200",
            "--train.precision=fp32", "--train.eval_every_steps=3", *extra]


@pytest.mark.dist
@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_only_rank_0_writes_and_commits_before_releasing_the_others(tmp_path, figure, stage):
    """Every file operation under OUT in both ranks, from an empty directory (its data or
    tokenizer built too) to the final model: rank 1 writes nothing; it never leaves a save's
    barrier before the step's manifest exists."""
    args = (pretrain_args if stage == "pretrain" else finetune_args)(tmp_path / "run", "--train.max_steps=6",
                                                                     "--train.save_every_steps=2")
    procs = launch(tmp_path / "rep", args, ["--audit"], env=ENV)
    assert finish(procs) == [0, 0], (tmp_path / "rep" / "stderr-1.txt").read_text()[-3000:]
    r0, r1 = reports(tmp_path / "rep")
    figure(rank1_writes=len(r1["writes"]), rank0_writes=len(r0["writes"]),
           manifest_missing=len(r1["manifest_missing_after_save"]))
    assert r1["writes"] == []
    assert r1["saves"] == r0["saves"] == [2, 4, 6] and r1["manifest_missing_after_save"] == []
    phases = {phase for phase, _, _ in r0["writes"]}
    assert {"data", "save", "final"} <= phases  # the audit sees rank 0's writes of every phase
    built = "data/" if stage == "pretrain" else "work/tokenizer"
    assert any(path.startswith(built) or path.startswith("work/.tokenizer") for _, _, path in r0["writes"])
    assert (tmp_path / "run" / "model" / "manifest.json").exists()


@pytest.mark.dist
def test_a_failure_while_rank_0_builds_the_data_ends_the_others(tmp_path):
    """Rank 0 alone builds OUT/data; when it fails (an input that does not exist), rank 1 does
    not wait for it forever but exits too, pointing to rank 0's message."""
    args = pretrain_args(tmp_path / "run", "--train.max_steps=2")
    args[args.index(f"--data.inputs=[{FIXTURE}]")] = f"--data.inputs=[{tmp_path / 'missing.txt'}]"
    codes = finish(launch(tmp_path / "rep", args, env=ENV), timeout=60)
    errors = [(tmp_path / "rep" / f"stderr-{r}.txt").read_text() for r in range(2)]
    assert codes == [2, 2], errors
    assert "missing.txt" in errors[0] and "Traceback" not in errors[0]
    assert errors[1].startswith("error: rank 1: rank 0 failed building") and "Traceback" not in errors[1]


def _torchrun(out: Path, faults: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           "--max-restarts=3", "--monitor-interval=0.5", str(WORKER), str(out / "rep"), *faults,
                           "--", *pretrain_args(out / "run", "--train.max_steps=10", "--train.save_every_steps=2")],
                          env=ENV, capture_output=True, text=True, timeout=400)


@pytest.mark.slow
@pytest.mark.dist
def test_sigkill_of_one_rank_under_torchrun_restarts_resumes_bitwise(tmp_path, figure):
    """torchrun --max-restarts=3: rank 1 SIGKILLed at step 7 (first attempt only); torchrun
    restarts both ranks, they resume from step-00000006 and end with the weights and losses of
    an uninterrupted 2-rank run, bit for bit (dropout on)."""
    from safetensors.torch import load_file

    ref = _torchrun(tmp_path / "ref", [])
    assert ref.returncode == 0, ref.stderr[-3000:]
    run = _torchrun(tmp_path / "killed", ["--kill=1:7"])
    assert run.returncode == 0, run.stderr[-3000:]
    assert reports(tmp_path / "killed" / "rep")[1]["restart"] == 1  # the run did restart
    a = load_file(tmp_path / "ref" / "run" / "model" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "run" / "model" / "model.safetensors")
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    losses = [[json.loads(x)["train_loss"] for x in (d / "run" / "metrics.jsonl").read_text().splitlines()]
              for d in (tmp_path / "ref", tmp_path / "killed")]
    figure(max_param_diff=diff)
    assert diff == 0.0 and losses[0] == losses[1] and len(losses[0]) == 10
