"""torchrun with 2 CPU processes (gloo), DDP or FSDP, equals 1 process with 2× gradient accumulation
(with adversarial training too: two backward passes a micro-batch)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

WORKER = Path(__file__).parent / "ddp_worker.py"


@pytest.mark.dist
@pytest.mark.parametrize("parallel,adversarial", [("ddp", "0"), ("fsdp", "0"), ("ddp", "0.3")])
def test_two_ranks_match_one_rank_with_double_accumulation(tmp_path, figure, parallel, adversarial):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3] / "src"), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(WORKER), str(tmp_path / "one"), "2", str(tmp_path / "one.st"), "ddp",
                    adversarial],
                   check=True, env=env, capture_output=True, timeout=300)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        str(WORKER), str(tmp_path / "two"), "1", str(tmp_path / "two.st"), parallel, adversarial],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = load_file(tmp_path / "one.st"), load_file(tmp_path / "two.st")
    diff = max((one[k] - two[k]).abs().max().item() for k in one)
    figure(max_param_diff=diff)
    assert diff < 1e-5
    # only rank 0 wrote checkpoints, and they are complete
    assert (tmp_path / "two" / "checkpoints" / "step-00000005" / "manifest.json").exists()
