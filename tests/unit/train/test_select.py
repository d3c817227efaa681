"""Evaluation hook, best-weights selection and early stopping in the one training loop."""

import json

import pytest
import torch

from lmlab.artifacts import load_tensors
from lmlab.config import from_dict
from lmlab.errors import ConfigError
from lmlab.model import load_model
from lmlab.train.loop import TrainConfig

from .helpers import make_trainer, stop_after

SCORES = {2: 1.0, 4: 3.0, 6: 2.0, 8: 2.5, 10: 9.0}  # step → task metric; best at 4, then 2 worse


def _trainer(out, **kw):
    tr = make_trainer(out, max_steps=10, eval_every_steps=2, save_every_steps=2, keep_last=0,
                      select_metric="val_score", patience=2, **kw)
    tr.eval_hook = lambda: {"val_score": SCORES[tr.step]}
    return tr


def test_best_kept_and_early_stop(tmp_path):
    s = _trainer(tmp_path).fit()
    assert s["early_stopped"] and s["steps"] == 8  # evaluations at 6 and 8 did not beat step 4
    assert s["best"] == {"metric": "val_score", "value": 3.0, "step": 4, "bad_evals": 2}
    best = load_tensors(tmp_path / "best" / "model.safetensors")
    at4 = load_tensors(tmp_path / "checkpoints" / "step-00000004" / "model.safetensors")
    after = load_tensors(tmp_path / "checkpoints" / "step-00000008" / "model.safetensors")
    assert all(torch.equal(best[k], at4[k]) for k in at4)
    assert any(not torch.equal(best[k], after[k]) for k in at4)
    load_model(tmp_path / "best")  # a loadable model directory
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["val_score"], r["best_step"]) for r in rows if "val_score" in r]
    assert evals == [(2, 1.0, 2), (4, 3.0, 4), (6, 2.0, 4), (8, 2.5, 4)]
    assert all("val_loss" in r for r in rows if "val_score" in r)  # hook metrics join the loss


def test_min_mode_and_no_patience_runs_to_the_end(tmp_path):
    tr = make_trainer(tmp_path, max_steps=6, eval_every_steps=2, select_metric="val_loss", select_mode="min")
    s = tr.fit()
    assert s["steps"] == 6 and not s["early_stopped"]
    assert s["best"]["metric"] == "val_loss" and (tmp_path / "best" / "best.json").exists()


def test_resume_keeps_the_selection_state(tmp_path):
    assert stop_after(_trainer(tmp_path), 6).fit()["steps"] == 6
    s = _trainer(tmp_path).fit()
    assert s["early_stopped"] and s["steps"] == 8 and s["best"]["step"] == 4


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="train.patience"):
        from_dict(TrainConfig, {"patience": 3})
    tr = make_trainer(tmp_path, max_steps=2, eval_every_steps=2, select_metric="val_accuracy")
    with pytest.raises(ConfigError, match="val_accuracy.*val_loss"):
        tr.fit()
