"""Numerical guard: a non-finite loss or gradient is caught before the optimizer step.

Policy ``skip`` drops the step (parameters and optimizer state untouched) and counts it;
``stop`` ends the run. Either way `max_consecutive_bad` bad steps in a row end the run, with
the last good checkpoint named. Under torchrun the check is taken together: a step that went
non-finite on any rank is bad on every rank (one all-reduced flag, `distributed.all_true`), so all
ranks skip it, or all stop, at the same step.
"""

from __future__ import annotations

import math

from lmlab.errors import LmlabError


class TrainingDiverged(LmlabError):
    exit_code = 3


class NonFiniteGuard:
    def __init__(self, policy: str, max_consecutive_bad: int):
        self.policy, self.max_bad = policy, max_consecutive_bad
        self.skipped_steps = 0
        self.consecutive = 0

    def check(self, step: int, loss: float, grad_norm: float, last_checkpoint: str | None,
              finite_everywhere: bool = True) -> bool:
        """True: take the optimizer step. False: skip it. Raises TrainingDiverged to stop.
        finite_everywhere: False when another rank saw a non-finite loss or gradient norm."""
        finite_here = math.isfinite(loss) and math.isfinite(grad_norm)
        if finite_here and finite_everywhere:
            self.consecutive = 0
            return True
        self.consecutive += 1
        if finite_here:
            what = f"step {step}: non-finite loss or gradient norm on another rank"
        else:
            what = f"step {step}: non-finite {'loss' if not math.isfinite(loss) else 'gradient norm'} " \
                   f"(loss={loss}, grad_norm={grad_norm})"
        resume = f"; last good checkpoint: {last_checkpoint}" if last_checkpoint else "; no checkpoint saved yet"
        if self.policy == "stop" or self.consecutive >= self.max_bad:
            reason = "" if self.policy == "stop" else f" ({self.consecutive} bad steps in a row)"
            raise TrainingDiverged(f"{what}{reason}; stopped before the optimizer step{resume}. "
                                   "Lower the learning rate or check the data, then resume.")
        self.skipped_steps += 1
        return False

    def state_dict(self) -> dict:
        return {"skipped_steps": self.skipped_steps, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict) -> None:
        self.skipped_steps, self.consecutive = state["skipped_steps"], state["consecutive"]
