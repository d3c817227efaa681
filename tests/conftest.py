"""Shared fixtures. `figure` records a measured figure per test into reports/reliability.json,
so that a run of the suite reports numbers (max |Δ|, rates), not only pass/fail."""

import json
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
_FIGURES: dict[str, dict] = {}


def data_root() -> Path:
    return Path(os.environ.get("LMLAB_DATA", ROOT.parent / "shared" / "data"))


torch.set_num_threads(1)  # tiny models: one thread is fastest and immune to a busy neighbour


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def figure(request):
    """figure(name=value, ...) stores figures under the current test's id."""
    def record(**values):
        _FIGURES.setdefault(request.node.nodeid, {}).update(
            {k: (float(v) if hasattr(v, "item") else v) for k, v in values.items()})
    return record


@pytest.fixture
def another_run():
    """another_run(directory): a context in which a second process holds `directory`'s run lock,
    as a concurrent `lmlab` run would (the lock is re-entrant within one process)."""
    import contextlib
    import subprocess
    import sys

    code = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.pwrite(fd, str(os.getpid()).encode(), 0); "
            "print('held', flush=True); sys.stdin.read()")

    @contextlib.contextmanager
    def hold(directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", code, str(directory / ".lock")],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "held"
            yield proc.pid
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)
    return hold


def pytest_sessionfinish(session, exitstatus):
    if not _FIGURES:
        return
    out = ROOT / "reports" / "reliability.json"
    out.parent.mkdir(exist_ok=True)
    old = json.loads(out.read_text()) if out.exists() else {}
    old.update(_FIGURES)
    out.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
