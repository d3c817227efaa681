"""Tiny fine-tuning runs shared by the task tests (fixtures in tests/fixtures/tasks)."""

from pathlib import Path

import pytest

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "tasks"
TINY = ["--model.d_model=32", "--model.n_layers=2", "--model.n_heads=2", "--model.d_ff=64",
        "--train.progress=false", "--train.threads=1", "--train.batch_size=16", "--optim.warmup_steps=5",
        "--optim.lr=3e-3", "--task.vocab_size=200", "--train.precision=fp32"]


def tiny(*extra: str) -> list[str]:
    return TINY + list(extra)


def preempted_at(step: int):
    """A `Trainer.train_step` that stops the run after optimizer step `step` as SIGTERM does
    (checkpoint, then exit); patch it in with monkeypatch.setattr(Trainer, "train_step", ...)."""
    from lmlab.train.loop import Trainer

    original = Trainer.train_step

    def train_step(self):
        out = original(self)
        if self.step + 1 == step:
            self._stop_requested = True
        return out
    return train_step


def assert_resumes_to_the_same_weights(run, tmp_path, monkeypatch, stop_at: int) -> None:
    """`run(out)` fine-tunes into `out`: a run preempted after step `stop_at`, then resumed, ends
    with the weights of an uninterrupted one. Both use the reference run's tokenizer: training a
    WordPiece vocabulary twice is not deterministic (huggingface/tokenizers#1794)."""
    import shutil

    import torch

    from lmlab.artifacts import load_tensors
    from lmlab.train.loop import Trainer

    steps = run(tmp_path / "ref")["steps"]
    shutil.copytree(tmp_path / "ref" / "work", tmp_path / "r" / "work")  # its tokenizer and the record of it
    with monkeypatch.context() as m:
        m.setattr(Trainer, "train_step", preempted_at(stop_at))
        s = run(tmp_path / "r")
        assert s["preempted"] and s["steps"] == stop_at
    assert run(tmp_path / "r")["steps"] == steps
    a, b = (load_tensors(tmp_path / d / "model" / "model.safetensors") for d in ("ref", "r"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="session")
def sentiment_model(tmp_path_factory):
    """A sentiment model trained from scratch on the CSV fixture (≈3 s)."""
    from lmlab.tasks.finetune import finetune

    out = tmp_path_factory.mktemp("sentiment") / "run"
    summary = finetune("sentiment", str(FIX / "sentiment_train.csv"), str(FIX / "sentiment_dev.csv"), out=str(out),
                       overrides=tiny("--train.max_steps=60", "--train.eval_every_steps=20"))
    return out, summary
