"""benchmarks/bench_gpu.py on a machine without CUDA: the machine line, then a clear message and
exit status 2, never a traceback (CPU CI runs this; a GPU machine runs the benchmark itself)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmlab import machine

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(bool(machine.detect().cuda_devices), reason="this machine has CUDA: run the benchmark itself")
def test_without_cuda_it_says_so_and_exits_2():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stdout.startswith("machine: ") and "no CUDA device" in r.stderr and "Traceback" not in r.stderr
