"""Loss-spike detector: a finite training loss far above the recent ones is a spike.

    spike at step t  ⇔  t ≥ warmup  and  loss_t > k · median(loss of the last W steps taken)

The reference is a running median, not a mean: a few spikes (or a noisy batch) do not move it, so one
spike does not hide the next. Only steps whose optimizer update was taken enter the window: under
``skip`` a spike's loss stays out of the reference, under ``warn`` it goes in (the update happened),
so a real and lasting change of level becomes the new reference after W/2 steps instead of warning
forever. ``skip`` drops the optimizer step as the non-finite guard does (`lmlab.train.guard`), and
`max_consecutive_bad` skipped spikes in a row end the run: a loss that stays high is no longer a spike.
The whole state (window, counters) is JSON, saved in every checkpoint, so a resumed run takes the
same decisions as the uninterrupted one. All ranks see the same all-reduced loss, so they agree.
"""

from __future__ import annotations

import statistics
from collections import deque

from lmlab.train.guard import TrainingDiverged


class SpikeDetector:
    def __init__(self, policy: str, factor: float, window_steps: int, warmup_steps: int, max_consecutive_bad: int):
        self.policy, self.factor, self.warmup, self.max_bad = policy, factor, warmup_steps, max_consecutive_bad
        self.window: deque[float] = deque(maxlen=window_steps)
        self.seen = 0  # losses judged or collected
        self.spikes = 0  # detected, whatever the policy
        self.consecutive = 0  # skipped spikes in a row
        self.last: dict | None = None  # the latest spike: step, loss, reference, ratio

    def reference(self) -> float | None:
        """The median the next loss is compared with; None during the warm-up."""
        return statistics.median(self.window) if self.seen >= self.warmup and self.window else None

    def check(self, step: int, loss: float, last_checkpoint: str | None) -> bool:
        """Judge the finite loss of `step` (numbered from 1, as metrics.jsonl numbers it). True: take the
        optimizer step; False: skip it. Raises TrainingDiverged under ``stop``, or after
        `max_consecutive_bad` skipped spikes in a row."""
        if self.policy == "off":
            return True
        ref = self.reference()
        self.seen += 1
        if ref is None or not loss > self.factor * ref:
            self.window.append(loss)
            self.consecutive = 0
            self.last = None
            return True
        self.spikes += 1
        self.last = {"step": step, "loss": loss, "reference": ref, "ratio": loss / ref if ref > 0 else float("inf")}
        if self.policy == "warn":
            self.window.append(loss)
            return True
        self.consecutive += 1
        if self.policy == "stop" or self.consecutive >= self.max_bad:
            what = (f"step {step}: loss spike, {loss:.4g} is {self.last['ratio']:.3g}x the median {ref:.4g} of the "
                    f"last {len(self.window)} steps (train.spike_factor={self.factor:g})")
            reason = "" if self.policy == "stop" else f" ({self.consecutive} spikes in a row)"
            resume = f"; last good checkpoint: {last_checkpoint}" if last_checkpoint else "; no checkpoint saved yet"
            raise TrainingDiverged(f"{what}{reason}; stopped before the optimizer step{resume}. Lower the learning "
                                   "rate or check the data, then resume; --train.spike=warn only reports spikes")
        return False

    def message(self) -> str:
        s = self.last
        return (f"step {s['step']}: loss spike {s['loss']:.4g} = {s['ratio']:.3g}x the running median "
                f"{s['reference']:.4g}{' (optimizer step skipped)' if self.policy == 'skip' else ''}")

    def state_dict(self) -> dict:
        return {"window": list(self.window), "seen": self.seen, "spikes": self.spikes, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict) -> None:
        self.window.clear()
        self.window.extend(state["window"])
        self.seen, self.spikes, self.consecutive = state["seen"], state["spikes"], state["consecutive"]
