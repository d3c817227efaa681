"""The campaigns' environment: the project's paths and fixtures, the process set-up (one thread,
tokenizers not forking) and the imports a forked run needs warm."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # children are forked

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
CORPUS = ROOT / "tests" / "fixtures" / "tiny_corpus.txt"
MIXED = ROOT / "tests" / "fixtures" / "text" / "mixed.txt"
REPORTS = ROOT / "reports"

torch.set_num_threads(1)


def warm_imports() -> None:
    """Import once in the parent what every forked run would import (torch._dynamo through the
    optimizer, matplotlib for the loss plot): a fork then starts training at once."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import torch._dynamo  # noqa: F401

    import lmlab.cli  # noqa: F401
    import lmlab.train.pretrain  # noqa: F401
