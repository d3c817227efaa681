"""Loss-spike detector (D4): losses multiplied by 10 at random steps of a clean run are all found and no
clean step is flagged; skip drops exactly the spike's optimizer step; stop and a run of skipped spikes end
the run; the detector's state rides in the checkpoint, so resume stays bitwise exact."""

import json
import random

import pytest
import torch

from lmlab.errors import ConfigError
from lmlab.train.guard import TrainingDiverged
from lmlab.train.loop import TrainConfig
from lmlab.train.spike import SpikeDetector

from .helpers import losses, make_trainer, stop_after, tiny_model


def inject(tr, steps: set[int], factor: float = 10.0):
    """Multiply the loss of the given optimizer steps (numbered from 1, as metrics.jsonl) by `factor`,
    gradient included, as a bad batch would."""
    real = tr.runner

    def run(*args, **kwargs):
        out = real(*args, **kwargs)
        if tr.step + 1 in steps:
            out.loss = out.loss * factor
        return out
    tr.runner = run
    return tr


def rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_injected_spikes_are_found_and_clean_steps_are_not(tmp_path, figure):
    steps = 300
    spiked = set(random.Random(4).sample(range(60, steps + 1), 5))
    tr = inject(make_trainer(tmp_path, max_steps=steps, save_every_steps=steps, log_every_steps=50), spiked)
    summary = tr.fit()
    found = {r["step"] for r in rows(tmp_path) if "spike_ratio" in r}
    ratios = [r["spike_ratio"] for r in rows(tmp_path) if "spike_ratio" in r]
    figure(true_positives=len(found & spiked), injected=len(spiked), false_positives=len(found - spiked),
           min_spike_ratio=min(ratios, default=0.0))
    assert found == spiked, (sorted(found), sorted(spiked))
    assert summary["spikes"] == 5 and rows(tmp_path)[-1]["spikes"] == 5
    assert all(r > 3.0 for r in ratios)


def test_skip_drops_exactly_the_spike_step(tmp_path):
    tr = inject(make_trainer(tmp_path, max_steps=30, save_every_steps=30, spike="skip", spike_warmup_steps=10), {20})
    real_step, moved = tr.train_step, {}

    def step_and_compare():
        before = [p.detach().clone() for p in tr.model.parameters()]
        out = real_step()
        moved[tr.step + 1] = max((p - b).abs().max().item() for p, b in zip(tr.model.parameters(), before))
        return out
    tr.train_step = step_and_compare
    tr.fit()
    assert moved[20] == 0.0 and all(v > 0 for k, v in moved.items() if k != 20)
    assert [r["step"] for r in rows(tmp_path) if "spike_ratio" in r] == [20]


def test_stop_and_consecutive_skipped_spikes_end_the_run(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"step 15: loss spike, .* stopped before the optimizer step; last good"):
        inject(make_trainer(tmp_path / "stop", max_steps=30, spike="stop", spike_warmup_steps=10), {15}).fit()
    with pytest.raises(TrainingDiverged, match=r"step 17: .*\(3 spikes in a row\)"):
        inject(make_trainer(tmp_path / "skip", max_steps=30, spike="skip", spike_warmup_steps=10), {15, 16, 17}).fit()


@pytest.mark.parametrize("steps", [5, 7])
def test_resume_is_bitwise_exact_with_the_detector_on(tmp_path, steps):
    """A short warm-up and window, and spikes soon after the resumed step: a detector that started afresh on
    resume would still be warming up and take those steps; the restored one skips them, as the reference does."""
    kw = dict(spike="skip", spike_warmup_steps=3, spike_window_steps=4, save_every_steps=5)
    spiked = {8, 10}
    ref = inject(make_trainer(tmp_path / "ref", **kw), spiked)
    assert ref.fit()["spikes"] == 2
    assert stop_after(inject(make_trainer(tmp_path / "run", **kw), spiked), steps).fit()["preempted"]
    second = inject(make_trainer(tmp_path / "run", model=tiny_model(seed=9), **kw), spiked)
    assert second.fit()["spikes"] == 2
    assert losses(tmp_path / "run") == losses(tmp_path / "ref")
    assert all(torch.equal(a, b) for a, b in zip(ref.model.state_dict().values(), second.model.state_dict().values()))


def test_detector_rules():
    d = SpikeDetector("skip", factor=3.0, window_steps=3, warmup_steps=2, max_consecutive_bad=2)
    assert d.check(1, 100.0, None) and d.check(2, 1.0, None)  # warm-up: nothing judged
    assert d.reference() == 50.5
    assert d.check(3, 2.0, None) and d.reference() == 2.0  # median of 100, 1, 2
    assert not d.check(4, 6.5, None) and d.reference() == 2.0  # a skipped spike stays out of the window
    assert d.check(5, 5.9, None) and d.consecutive == 0
    off = SpikeDetector("off", 3.0, 3, 1, 2)
    assert all(off.check(i, 10.0 ** i, None) for i in range(1, 6)) and off.spikes == 0
    warn = SpikeDetector("warn", 3.0, 3, 1, 2)
    assert all(warn.check(i, x, None) for i, x in enumerate([1.0, 5.0, 25.0, 125.0], 1)) and warn.spikes == 3
    state = json.loads(json.dumps(d.state_dict()))
    again = SpikeDetector("skip", 3.0, 3, 2, 2)
    again.load_state_dict(state)
    assert again.state_dict() == d.state_dict()
    with pytest.raises(ConfigError, match="train.spike_factor"):
        TrainConfig(spike_factor=1.0)
