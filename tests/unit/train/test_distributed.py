"""torchrun with 2 CPU processes (gloo), DDP or FSDP2, equals 1 process with 2× gradient accumulation
(with adversarial training too: two backward passes a micro-batch), in losses and weights; an FSDP2
run stopped and resumed from its full-state checkpoint equals the uninterrupted one bit for bit."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .helpers import losses

WORKER = Path(__file__).parent / "ddp_worker.py"
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3] / "src"), "OMP_NUM_THREADS": "1"}


def one_process(out: Path, result: Path, adversarial: str = "0") -> None:
    subprocess.run([sys.executable, str(WORKER), str(out), "2", str(result), "ddp", adversarial],
                   check=True, env=ENV, capture_output=True, timeout=300)


def two_ranks(out: Path, result: Path, parallel: str, adversarial: str = "0", stop: int = 0) -> None:
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        str(WORKER), str(out), "1", str(result), parallel, adversarial, str(stop)],
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.dist
@pytest.mark.parametrize("parallel,adversarial", [("ddp", "0"), ("fsdp", "0"), ("ddp", "0.3")])
def test_two_ranks_match_one_rank_with_double_accumulation(tmp_path, figure, parallel, adversarial):
    one_process(tmp_path / "one", tmp_path / "one.st", adversarial)
    two_ranks(tmp_path / "two", tmp_path / "two.st", parallel, adversarial)
    one, two = load_file(tmp_path / "one.st"), load_file(tmp_path / "two.st")
    diff = max((one[k] - two[k]).abs().max().item() for k in one)
    loss_diff = max(abs(a - b) for a, b in zip(losses(tmp_path / "one"), losses(tmp_path / "two"), strict=True))
    figure(max_param_diff=diff, max_loss_diff=loss_diff)
    assert diff < 1e-5 and loss_diff < 1e-5
    # only rank 0 wrote checkpoints, and they are complete
    assert (tmp_path / "two" / "checkpoints" / "step-00000005" / "manifest.json").exists()


@pytest.mark.dist
def test_fsdp_resumes_exactly(tmp_path):
    """Sharded weights and AdamW moments go through the full-state safetensors checkpoint and back
    into each rank's shard: the resumed run is the uninterrupted run, bit for bit."""
    two_ranks(tmp_path / "straight", tmp_path / "straight.st", "fsdp")
    two_ranks(tmp_path / "resumed", tmp_path / "unused.st", "fsdp", stop=3)
    assert [p.name for p in sorted((tmp_path / "resumed" / "checkpoints").iterdir())] == ["step-00000003"]
    two_ranks(tmp_path / "resumed", tmp_path / "resumed.st", "fsdp")
    straight, resumed = load_file(tmp_path / "straight.st"), load_file(tmp_path / "resumed.st")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    moments = load_file(tmp_path / "resumed" / "checkpoints" / "step-00000005" / "optimizer.safetensors")
    assert any(k.endswith("::exp_avg_sq") for k in moments)  # whole (gathered) moments, by parameter name


@pytest.mark.dist
def test_a_ddp_checkpoint_resumes_under_fsdp(tmp_path):
    """Checkpoints hold full weights whichever way the model was spread: a run begun under DDP
    goes on sharded."""
    one_process(tmp_path / "one", tmp_path / "one.st")
    two_ranks(tmp_path / "switched", tmp_path / "unused.st", "ddp", stop=3)
    two_ranks(tmp_path / "switched", tmp_path / "switched.st", "fsdp")
    one, switched = load_file(tmp_path / "one.st"), load_file(tmp_path / "switched.st")
    assert max((one[k] - switched[k]).abs().max().item() for k in one) < 1e-5
