"""Run metrics: ``metrics.jsonl`` (one object per logged step), a progress bar, a loss plot.

With the `tensorboard` package installed the same scalars also go to ``tensorboard/``.
Each line holds at least ``step``, ``elapsed_s`` (training wall time so far, evaluation and
checkpointing excluded), ``train_loss`` and ``lr``; evaluation lines add ``val_loss``,
``val_perplexity`` and ``val_bits_per_byte``. ``spikes`` counts the loss spikes so far
(`lmlab.train.spike`); a spike's own step always gets a line, with ``spike_ratio`` (its loss
over the running median). On resume the file is cut back to the resumed step, so it always
describes one consistent history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled
        self.tensorboard = None
        if enabled:
            try:  # optional: TensorBoard event files next to metrics.jsonl when tensorboard is installed
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(path.parent / "tensorboard"))
            except ImportError:
                pass

    def truncate_after(self, step: int) -> None:
        if not (self.enabled and self.path.exists()):
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill mid-write
                continue
            if row.get("step", 0) <= step:
                keep.append(line)
        self.path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            if self.tensorboard is not None:
                for key, value in row.items():
                    if key != "step" and isinstance(value, (int, float)):
                        self.tensorboard.add_scalar(key, value, row["step"])
                self.tensorboard.flush()

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_losses(metrics: Path, out_png: Path, title: str = "") -> Path | None:
    """Train and validation loss against step, as a PNG; None when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = MetricsLog(metrics).rows()
    train = [(r["step"], r["train_loss"]) for r in rows if "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation", lw=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
