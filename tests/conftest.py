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


def pytest_sessionfinish(session, exitstatus):
    if not _FIGURES:
        return
    out = ROOT / "reports" / "reliability.json"
    out.parent.mkdir(exist_ok=True)
    old = json.loads(out.read_text()) if out.exists() else {}
    old.update(_FIGURES)
    out.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
