"""A tiny model and a deterministic in-memory batch source for training-loop tests (on the CPU
unless a test names another device: the CPU's results are the reference, bit for bit)."""

import numpy as np
import torch

from lmlab.model import Transformer, preset
from lmlab.train.loop import TrainConfig, Trainer
from lmlab.train.objectives import CausalLM
from lmlab.train.optim import OptimConfig

V, T, B = 37, 11, 3


class RandomTokens:
    """Batch g is a pure function of g, like the real samplers."""

    def batch_at(self, g: int):
        rng = np.random.default_rng([7, g])
        ids = torch.from_numpy(rng.integers(0, V, (B, T + 1)))
        # a learnable pattern: every other token repeats the previous one
        ids[:, 1::2] = ids[:, 0:-1:2]
        return ids[:, :-1], ids[:, 1:]


def tiny_model(dropout: float = 0.1, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(preset("gpt2-tiny", vocab_size=V, d_model=24, n_heads=3, n_layers=2, d_ff=40,
                              max_seq_len=16, dropout=dropout, attn_dropout=0.0))


def make_trainer(out, model=None, optim: dict | None = None, **train_kw) -> Trainer:
    cfg = TrainConfig(**{"max_steps": 12, "batch_size": B, "precision": "fp32", "eval_every_steps": 1000,
                         "save_every_steps": 4, "log_every_steps": 1, "progress": False, "threads": 1,
                         "peak_flops": 1e9, "device": "cpu", **train_kw})

    def evals():
        return [RandomTokens().batch_at(10_000 + i) for i in range(2)]

    optim_cfg = OptimConfig(**{"lr": 3e-3, "warmup_steps": 2, **(optim or {})})
    return Trainer(model or tiny_model(), CausalLM(), RandomTokens(), cfg, optim_cfg, out, eval_batches=evals,
                   run_config={"test": True})


def losses(out) -> list[float]:
    import json

    return [json.loads(line)["train_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def stop_after(trainer: Trainer, steps: int) -> Trainer:
    """Make `trainer` stop after `steps` optimizer steps, as SIGTERM would: checkpoint, then exit."""
    original = trainer.train_step

    def step_then_maybe_stop():
        out = original()
        if trainer.step + 1 == steps:
            trainer._stop_requested = True
        return out
    trainer.train_step = step_then_maybe_stop
    return trainer
