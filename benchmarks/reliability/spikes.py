"""D4: the loss-spike detector on a clean tiny pretraining run with losses ×10 at 5 random steps."""

from __future__ import annotations

import json
import random
from pathlib import Path

from .table import row
from .runs import cli, data_args, forked, tiny_args

FACTOR, WINDOW, WARMUP = 3.0, 100, 50  # the TrainConfig defaults: train.spike_factor, _window_steps, _warmup_steps


def spiked_run(argv: list[str], spiked: set[int]) -> int:
    """`lmlab pretrain` with the loss of the given steps (numbered from 1, as metrics.jsonl) multiplied by 10,
    gradient included, as a bad batch would make it."""
    from lmlab.train.loop import Trainer

    real = Trainer.train_step

    def train_step(self):
        if self.step + 1 not in spiked:
            return real(self)
        runner = self.runner

        def scaled(*args, **kwargs):
            out = runner(*args, **kwargs)
            out.loss = out.loss * 10.0
            return out
        self.runner = scaled
        try:
            return real(self)
        finally:
            self.runner = runner
    Trainer.train_step = train_step
    return cli(argv)


def clean_margin(losses: list[float], spiked: set[int], policy: str) -> float:
    """The largest loss / running median over the clean judged steps, replayed from the logged losses (under
    skip a spike stays out of the window, under warn it goes in): how far the clean run stays from the factor."""
    from lmlab.train.spike import SpikeDetector

    d = SpikeDetector(policy, FACTOR, WINDOW, WARMUP, max_consecutive_bad=1 << 30)
    worst = 0.0
    for step, loss in enumerate(losses, 1):
        ref = d.reference()
        if ref is not None and step not in spiked:
            worst = max(worst, loss / ref)
        d.check(step, loss, None)
    return worst


def campaign_d4(work: Path, quick: bool) -> list[dict]:
    steps = 300 if quick else 2000
    rng = random.Random(2024)
    out = []
    for policy in ("warn", "skip"):
        spiked = set(rng.sample(range(WARMUP + 1, steps + 1), 5))  # nothing is judged during the warm-up
        run = work / f"d4-{policy}"
        argv = tiny_args(run, steps, steps, (f"--train.spike={policy}",)) + data_args(work)
        code = forked(spiked_run, argv, spiked, log=work / f"d4-{policy}.log")
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()] if code == 0 else []
        found = {r["step"] for r in rows if "spike_ratio" in r}
        tp, fp = len(found & spiked), len(found - spiked)
        ratios = sorted(r["spike_ratio"] for r in rows if "spike_ratio" in r and r["step"] in spiked)
        margin = clean_margin([r["train_loss"] for r in rows], spiked, policy) if rows else float("nan")
        lost = (f"train.spike={policy}: true positives {tp}/5, false positives {fp} of {steps - WARMUP - 5} clean "
                f"judged steps; spike ratios {', '.join(f'{x:.1f}' for x in ratios)}; the largest clean loss / "
                f"median {margin:.2f} (factor {FACTOR:g}); exit code {code}")
        out.append(row("D4", 5, (5 - tp) + fp + int(code != 0), lost,
                       f"campaign D4 (a {steps}-step tiny `lmlab pretrain`, 20k parameters, losses ×10 at 5 random "
                       f"steps after the {WARMUP}-step warm-up: {sorted(spiked)})",
                       policy=policy, true_positives=tp, false_positives=fp, clean_max_ratio=margin))
    return out
