"""Tiny fine-tuning runs shared by the task tests (fixtures in tests/fixtures/tasks)."""

from pathlib import Path

import pytest

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "tasks"
TINY = ["--model.d_model=32", "--model.n_layers=2", "--model.n_heads=2", "--model.d_ff=64",
        "--train.progress=false", "--train.threads=1", "--train.batch_size=16", "--optim.warmup_steps=5",
        "--optim.lr=3e-3", "--task.vocab_size=200", "--train.precision=fp32"]


def tiny(*extra: str) -> list[str]:
    return TINY + list(extra)


@pytest.fixture(scope="session")
def sentiment_model(tmp_path_factory):
    """A sentiment model trained from scratch on the CSV fixture (≈3 s)."""
    from lmlab.tasks.finetune import finetune

    out = tmp_path_factory.mktemp("sentiment") / "run"
    summary = finetune("sentiment", str(FIX / "sentiment_train.csv"), str(FIX / "sentiment_dev.csv"), out=str(out),
                       overrides=tiny("--train.max_steps=60", "--train.eval_every_steps=20"))
    return out, summary
