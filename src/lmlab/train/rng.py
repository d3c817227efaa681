"""Every random stream a run draws from, captured and restored without pickle.

Python's `random`, NumPy's global generator and torch's CPU (and CUDA) generators are
saved as JSON-safe integers or uint8 tensors for safetensors. Data order and masking do not
depend on these (they are counter-based: see `lmlab.data.samplers`), but dropout does.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from lmlab import machine


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """→ (JSON part, tensor part)."""
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {"python": [version, list(state), gauss],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    tensors = {"rng.torch": torch.get_rng_state()}
    if machine.detect().cuda_devices:
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return meta, tensors


def restore(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng.torch"])
    if machine.detect().cuda_devices:
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if states:
            torch.cuda.set_rng_state_all(states)
