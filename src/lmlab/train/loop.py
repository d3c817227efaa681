"""The one training loop. Pretraining objectives and fine-tuning tasks plug into it; none has
a loop of its own.

One optimizer step:
    1. η ← schedule(step)
    2. for each of A micro-batches (global index g = step·W·A + m·W + rank):
           loss_m = model(**objective.prepare(source.batch_at(g), g)).loss   (mean over n_m targets)
           backward(loss_m · n_m / N · W)       N = Σ n over all ranks: a token-weighted mean,
                                                 ×W undoes DDP's average over ranks
           (with `adversarial`, the same again with the embeddings perturbed: adversarial.py)
    3. all-reduce the loss; clip the global gradient norm
    4. guard: a non-finite loss or norm (on any rank: one all-reduced flag) skips the step or stops
       the run (in fp16, a non-finite norm at a finite loss is the loss scale's overflow: the grad
       scaler skips the step and halves the scale); a loss spike (k× the running median: spike.py)
       is reported, or skips the step, or stops the run (`spike`)
    5. optimizer step (and the weight average, `ema_decay`); log; evaluate every
       `eval_every_steps`; checkpoint every `save_every_steps`
Evaluation is the validation loss plus, for fine-tuning, whatever an `eval_hook` returns (task
metrics such as val_accuracy). With `select_metric` set, the best weights by that metric are
kept in ``OUT/best`` (an lmlab model directory) and `patience` evaluations without improvement
stop the run early (after a checkpoint, so a resumed run stops at the same place). With
`ema_decay`, evaluation, selection and the final model use the moving average of the weights.
Exact resume: the batch at index g is a pure function of (seed, g), and checkpoints restore
model, optimizer, scaler and RNG states, so a resumed run reproduces the uninterrupted one
bit for bit on CPU.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import torch

from lmlab import machine
from lmlab.artifacts import recover
from lmlab.config import check
from lmlab.errors import ArtifactCorrupt, CheckpointMismatch, ConfigError, LmlabError
from lmlab.train import distributed as D
from lmlab.train.adversarial import adversarial, embedding_module
from lmlab.train.checkpoint import (RunLock, apply_retention, damage, full_model_state, full_state,
                                    identity_changes, latest_checkpoint, list_checkpoints, load_checkpoint,
                                    read_identity, recover_interrupted, save_checkpoint, step_dir)
from lmlab.train.ema import WeightEMA
from lmlab.train.guard import NonFiniteGuard
from lmlab.train.metrics import MetricsLog
from lmlab.train.spike import SpikeDetector
from lmlab.train.optim import OptimConfig, build_optimizer, lr_at


EVAL_INDEX = 1 << 60  # batch indices of evaluation: never reached by training


@dataclass
class TrainConfig:
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 12  # sequences per micro-batch per process
    grad_accum_steps: int = 1  # micro-batches per optimizer step
    # auto: lmlab.machine's choice: bf16 where it is native (AVX512-BF16/AMX CPUs, CUDA ≥ 8.0), fp16 with
    # a loss scaler on older CUDA, else fp32
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False  # torch.compile the model
    activation_checkpointing: bool = False  # recompute layer activations in backward
    eval_every_steps: int = 200
    eval_batches: int = 20  # validation batches per evaluation
    save_every_steps: int = 500
    keep_last: int = 3  # checkpoints kept (0 = all)
    log_every_steps: int = 10
    seed: int = 1337
    nonfinite: Literal["skip", "stop"] = "stop"
    max_consecutive_bad: int = 3  # non-finite steps, or skipped spikes, in a row that stop the run
    # a finite loss > spike_factor × the median of the last spike_window_steps losses (spike.py): off;
    # warn (the default) reports it (stderr, metrics.jsonl) and takes the step; skip drops the step, like
    # nonfinite=skip; stop ends the run. Not skip by default: on a near-zero fine-tuning loss (a classifier at
    # 0.02) a hard batch is a "spike" by ratio, and skipping would discard what the model still has to learn
    spike: Literal["off", "warn", "skip", "stop"] = "warn"
    spike_factor: float = 3.0  # k: a loss above k × the running median is a spike
    spike_window_steps: int = 100  # recent steps whose median is the reference
    spike_warmup_steps: int = 50  # steps collected before any loss is judged
    # under torchrun: replicate (DDP) or shard (FSDP2: each layer, weights, gradients and AdamW moments) the
    # model; checkpoints hold the full weights either way, and resume under either
    parallel: Literal["ddp", "fsdp"] = "ddp"
    dist_timeout_s: int = 600  # under torchrun: seconds a collective waits for a stopped or hung rank before failing
    resume: str = "auto"  # auto: newest valid checkpoint in OUT/checkpoints if any; never; or a path
    threads: int = 0  # torch CPU threads; 0 = torch's default
    device: str = "auto"
    peak_flops: float = 0.0  # FLOP/s of the device for MFU; 0 = measured with a short GEMM
    progress: bool = True
    select_metric: str = ""  # an evaluation metric (e.g. val_accuracy, val_loss): best weights → OUT/best
    select_mode: Literal["max", "min"] = "max"  # whether larger or smaller select_metric is better
    patience: int = 0  # evaluations without improvement of select_metric before stopping; 0 = never
    ema_decay: float = 0.0  # > 0 (e.g. 0.999): evaluate, select and write a moving average of the weights
    adversarial: float = 0.0  # > 0 (e.g. 0.3): also learn each batch with its embeddings perturbed (adversarial.py)

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum_steps", "eval_every_steps", "eval_batches",
                     "save_every_steps", "log_every_steps", "max_consecutive_bad", "spike_window_steps",
                     "spike_warmup_steps", "dist_timeout_s"):
            check(getattr(self, name) >= 1, f"train.{name}", "must be >= 1")
        check(self.keep_last >= 0, "train.keep_last", "must be >= 0")
        check(self.spike_factor > 1.0, "train.spike_factor", "must be > 1 (3 is the default); train.spike=off "
              "turns the detector off")
        check(self.patience >= 0, "train.patience", "must be >= 0")
        check(0.0 <= self.ema_decay < 1.0, "train.ema_decay", "must be in [0, 1): 0 is off, 0.999 a typical value")
        check(self.adversarial >= 0.0, "train.adversarial", "must be >= 0: 0 is off, 0.3 a typical value")
        check(not self.patience or bool(self.select_metric), "train.patience",
              "early stopping needs train.select_metric (e.g. val_loss or a task metric)")


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        if precision == "fp16" and device.type != "cuda":
            raise ConfigError("train.precision: fp16 needs a CUDA device; use bf16 or fp32 on CPU")
        return precision
    return machine.detect().precision(device)


def measure_peak_flops(device: torch.device, dtype: torch.dtype, n: int = 1024) -> float:
    g = torch.Generator(device=device).manual_seed(0)  # not the global RNG: resume must not shift it
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    a @ b
    if device.type == "cuda":  # the warm-up product finished before the clock starts
        torch.cuda.synchronize(device)
    t, reps = time.perf_counter(), 0
    while time.perf_counter() - t < 0.3:
        a @ b
        reps += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


class Trainer:
    def __init__(self, model, objective, source, cfg: TrainConfig, optim: OptimConfig, out: Path,
                 eval_batches: Callable[[], Iterable[Any]] | None = None, run_config: Any = None,
                 bytes_per_token: float | None = None, flops_per_token: float | None = None,
                 identity: dict[str, Any] | None = None,
                 eval_hook: Callable[[], dict[str, float]] | None = None,
                 export: Callable[[torch.nn.Module], tuple[dict, dict]] | None = None):
        """identity: what a checkpoint must agree with to be resumed here (data, tokenizer, objective).
        eval_hook: called at each evaluation (model in eval mode, no grad); its metrics join val_loss.
        export: model → (state dict of a plain model, {file name: tensors}) for OUT/best, when the
        training model is not one itself (LoRA-wrapped layers: the merged weights + the adapter)."""
        self.cfg, self.optim_cfg, self.out = cfg, optim, Path(out)
        self.ctx = D.setup(cfg.device, cfg.dist_timeout_s)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.model = model.to(self.ctx.device)
        self.objective, self.source, self.eval_batches = objective, source, eval_batches
        self.run_config, self.bytes_per_token, self.flops_per_token = run_config, bytes_per_token, flops_per_token
        self.identity = identity or {}
        self.eval_hook = eval_hook
        self.export = export
        self.best: dict[str, Any] | None = None  # {"metric", "value", "step", "bad_evals"}
        self._early_stop = False
        self.precision = resolve_precision(cfg.precision, self.ctx.device)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        # fp16 needs its loss scaled (its largest value is 65504); FSDP2's gradients are DTensors,
        # which torch's GradScaler unscales and checks across ranks as they are
        self.scaler = torch.amp.GradScaler(self.ctx.device.type, enabled=self.precision == "fp16")
        self.guard = NonFiniteGuard(cfg.nonfinite, cfg.max_consecutive_bad)
        self.spike = SpikeDetector(cfg.spike, cfg.spike_factor, cfg.spike_window_steps, cfg.spike_warmup_steps,
                                   cfg.max_consecutive_bad)
        if cfg.activation_checkpointing:
            for layer in D.transformer_layers(self.model):
                layer.forward = _checkpointed(layer.forward)
        self.runner = D.wrap(self.model, self.ctx, cfg.parallel)
        self.optimizer = build_optimizer(self.model, optim)  # after sharding: FSDP replaces parameters
        if cfg.ema_decay and self.ctx.distributed and cfg.parallel == "fsdp":
            raise ConfigError("train.ema_decay: not with train.parallel=fsdp (a shard is not the whole weight); "
                              "use ddp, or no weight average")
        self.ema = WeightEMA(self.model, cfg.ema_decay) if cfg.ema_decay else None
        if cfg.adversarial:
            embedding_module(self.model)  # a model without embeddings is refused before any step
        if cfg.compile:
            self.runner = torch.compile(self.runner)
        self.metrics = MetricsLog(self.out / "metrics.jsonl", enabled=self.ctx.is_main)
        self.step, self.elapsed, self.tokens_seen = 0, 0.0, 0
        self.last_checkpoint: str | None = None
        self._stop_requested = False

    # -- pieces ------------------------------------------------------------------------------------

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=self.amp_dtype)

    def _grad_sync(self, sync: bool):
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        if not self.ctx.distributed or sync:
            if self.cfg.parallel == "fsdp" and self.ctx.distributed:
                self.runner.set_requires_gradient_sync(True)
            return contextlib.nullcontext()
        if self.cfg.parallel == "fsdp":
            self.runner.set_requires_gradient_sync(False)
            return contextlib.nullcontext()
        return self.runner.no_sync()

    def _adversarial(self):
        if not self.cfg.adversarial:
            return contextlib.nullcontext()
        return adversarial(self.model, self.cfg.adversarial)

    def _to_device(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.ctx.device, non_blocking=True) for k, v in inputs.items()}

    def train_step(self) -> dict[str, float]:
        cfg, ctx = self.cfg, self.ctx
        lr = lr_at(self.step, self.optim_cfg.decay_steps or cfg.max_steps, self.optim_cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        base = self.step * ctx.world_size * cfg.grad_accum_steps
        indices = [base + m * ctx.world_size + ctx.rank for m in range(cfg.grad_accum_steps)]
        prepared = [self.objective.prepare(self.source.batch_at(g), g) for g in indices]
        n_local = torch.tensor(float(sum(p.n_targets for p in prepared)), device=ctx.device)
        n_total = D.all_reduce_sum(n_local.clone(), ctx).clamp(min=1.0)
        loss_sum = torch.zeros((), device=ctx.device)
        for m, p in enumerate(prepared):
            sync = m == len(prepared) - 1 or not ctx.distributed
            with self._autocast(), _oom_hint(cfg), self._adversarial() as perturb:
                inputs = self._to_device(p.inputs)
                weight = p.n_targets / n_total * ctx.world_size
                with self._grad_sync(sync and perturb is None):  # one gradient all-reduce per micro-batch
                    loss = self.runner(**inputs).loss
                    self.scaler.scale(loss * weight).backward()
                if perturb is not None:  # the same batch again, its embeddings pushed up the loss
                    perturb()
                    with self._grad_sync(sync):
                        self.scaler.scale(self.runner(**inputs).loss * weight).backward()
            loss_sum += loss.detach().float() * p.n_targets
        train_loss = (D.all_reduce_sum(loss_sum, ctx) / n_total).item()
        self.scaler.unscale_(self.optimizer)
        with_grad = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in with_grad])
        grad_norm = (norm.full_tensor() if hasattr(norm, "full_tensor") else norm).item()
        clip = self.optim_cfg.grad_clip
        if clip > 0 and grad_norm + 1e-6 > clip:  # below that, clip_grad_norm_ multiplies every gradient by 1
            torch.nn.utils.clip_grads_with_norm_(with_grad, clip, norm)
        # the loss is all-reduced and DDP's gradients are shared, but the decision is taken together
        # anyway: a rank whose step alone went wrong must not step while the others skip or stop
        everywhere = D.all_true(math.isfinite(train_loss) and math.isfinite(grad_norm), ctx)
        # fp16: gradients that overflow at a finite loss mean the loss scale is too large, not that
        # training diverged; the scaler skips the step and halves the scale (the guards are not told)
        overflow = self.scaler.is_enabled() and math.isfinite(train_loss) and not everywhere
        if (not overflow  # both checks number the step as metrics.jsonl does (from 1)
                and self.guard.check(self.step + 1, train_loss, grad_norm, self.last_checkpoint, everywhere)
                and self.spike.check(self.step + 1, train_loss, self.last_checkpoint)):
            self.scaler.step(self.optimizer)
            if self.ema is not None:
                self.ema.update()
        row = {"train_loss": train_loss, "lr": lr, "grad_norm": grad_norm}
        if self.scaler.is_enabled():
            row["loss_scale"] = self.scaler.get_scale()  # before the update: the scale this step used
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.tokens_seen += int(sum(p.inputs["input_ids"].numel() for p in prepared)) * ctx.world_size
        if self.spike.last is not None and self.spike.last["step"] == self.step + 1:
            row["spike_ratio"] = self.spike.last["ratio"]
        return row

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if self.eval_batches is None and self.eval_hook is None:
            return {}
        self.model.eval()
        total, count = 0.0, 0
        for i, batch in enumerate(self.eval_batches() if self.eval_batches is not None else []):
            if i >= self.cfg.eval_batches:
                break
            p = self.objective.prepare(batch, EVAL_INDEX + i)  # fixed masks, disjoint from training
            with self._autocast():
                loss = self.model(**self._to_device(p.inputs)).loss.float().item()
            total += loss * p.n_targets
            count += p.n_targets
        out: dict[str, float] = {}
        if count:
            val = total / count
            out = {"val_loss": val}
            if self.objective.predicts_tokens:  # a perplexity of a class or span loss would mean nothing
                out["val_perplexity"] = math.exp(min(val, 700))
            if self.bytes_per_token:
                out["val_bits_per_byte"] = val / math.log(2) / self.bytes_per_token
        if self.eval_hook is not None:
            out.update(self.eval_hook())
        self.model.train()
        return out

    def _evaluate_and_select(self) -> dict[str, float]:
        """Evaluate; keep the best weights by `select_metric`; count evaluations without progress.
        With train.ema_decay, the averaged weights are the ones evaluated and kept."""
        with self.ema.applied() if self.ema is not None else contextlib.nullcontext():
            return self._evaluate_and_select_current()

    def _evaluate_and_select_current(self) -> dict[str, float]:
        metrics = self.evaluate()
        name = self.cfg.select_metric
        if not name or not metrics:
            return metrics
        if name not in metrics:
            raise ConfigError(f"train.select_metric={name!r} is not an evaluation metric; "
                              f"this run reports {', '.join(sorted(metrics))}")
        value = float(metrics[name])
        sign = 1.0 if self.cfg.select_mode == "max" else -1.0
        if self.best is None or sign * value > sign * self.best["value"]:
            self.best = {"metric": name, "value": value, "step": self.step, "bad_evals": 0}
            self._save_best()
        else:
            self.best["bad_evals"] += 1
            self._early_stop = bool(self.cfg.patience) and self.best["bad_evals"] >= self.cfg.patience
        return {**metrics, "best_step": self.best["step"]}

    def _save_best(self) -> None:
        """OUT/best: the current weights as an lmlab model directory (atomic, replaced)."""
        from lmlab.artifacts import ArtifactWriter, save_tensors, write_json
        from lmlab.config import to_dict
        from lmlab.model.pretrained import MODEL_KIND

        # full_model_state is collective under FSDP; no optimizer state is needed here.
        model_state, extra = self.export(self.model) if self.export else (full_model_state(self.model), {})
        if self.ctx.is_main:
            with ArtifactWriter(self.out / "best", kind=MODEL_KIND, config=self.run_config, overwrite=True) as w:
                write_json(w.path / "model.json", to_dict(self.model.config))
                save_tensors({k: v.detach().cpu() for k, v in model_state.items()}, w.path / "model.safetensors",
                             metadata={"format": "pt"})
                for name, tensors in extra.items():
                    save_tensors({k: v.detach().cpu() for k, v in tensors.items()}, w.path / name,
                                 metadata={"format": "pt"})
                write_json(w.path / "best.json", self.best)
        D.barrier(self.ctx)

    def save(self) -> None:
        model_state, optim_state = full_state(self.model, self.optimizer)  # collective under FSDP
        D.barrier(self.ctx)
        if self.ctx.is_main:
            trainer_state = {"elapsed_s": self.elapsed, "tokens_seen": self.tokens_seen,
                             "guard": self.guard.state_dict(), "spike": self.spike.state_dict(),
                             "identity": self.identity, "best": self.best,
                             **({"ema_updates": self.ema.updates} if self.ema is not None else {})}
            save_checkpoint(self.out / "checkpoints", self.step, self.model.config, model_state, optim_state,
                            self.scaler, trainer_state, self.run_config,
                            extra_tensors={f"ema::{k}": v for k, v in self.ema.tensors().items()}
                            if self.ema is not None else None)
            apply_retention(self.out / "checkpoints", self.cfg.keep_last)
        D.barrier(self.ctx)
        self.last_checkpoint = str(step_dir(self.out / "checkpoints", self.step))  # every rank names it

    def _resume(self) -> None:
        mode = self.cfg.resume
        if self.ctx.is_main:  # a step or OUT/best whose overwrite a kill cut short (the lock is held)
            recover_interrupted(self.out / "checkpoints")
            recover(self.out / "best")
        D.barrier(self.ctx)
        root = self.out / "checkpoints"
        latest = latest_checkpoint(root)
        found = [p for _, p in list_checkpoints(root)]
        if mode == "never":
            if found or (self.metrics.enabled and self.metrics.path.exists()
                         and self.metrics.path.stat().st_size > 0):
                # starting over here would mix two runs' metrics and leave the other run's
                # checkpoints for a later resume to pick up
                raise ConfigError(f"{self.out}: holds an earlier run ({latest or (found or [self.metrics.path])[-1]}); "
                                  "train.resume=never starts a new run: give it another --out, or "
                                  "delete the directory first")
            return
        path = latest if mode == "auto" else Path(mode)
        if path is None and found:  # every checkpoint is damaged: a restart would hide it
            raise ArtifactCorrupt(
                f"{self.out}: no checkpoint there can be resumed ({'; '.join(damage(p) or str(p) for p in found)}). "
                "Starting again at step 0 would train over this run and mix its metrics with the new "
                f"one's: to start over, delete {self.out} (or move it away) or give another --out; to "
                "keep the run, restore a checkpoint from a copy and run the command again")
        if path is None:  # a run killed before its first checkpoint: starts over, one history
            self.metrics.truncate_after(0)
            return
        # identity first: another run's weights may not even fit this model (e.g. another LoRA rank)
        changed = identity_changes(read_identity(path), self.identity)
        if changed:
            raise CheckpointMismatch(f"{path}: written by a different run ({'; '.join(changed)}); "
                                     "resume with the same data and objective, or use another --out")
        state = load_checkpoint(path, self.model, self.optimizer, self.scaler)
        self.step = state["step"]
        trainer = state["trainer"]
        self.elapsed, self.tokens_seen = trainer["elapsed_s"], trainer["tokens_seen"]
        self.guard.load_state_dict(trainer["guard"])
        if "spike" in trainer:  # absent from checkpoints written before the detector: it starts afresh
            self.spike.load_state_dict(trainer["spike"])
        if self.ema is not None:
            self.ema.load({k[len("ema::"):]: v for k, v in state["extra_tensors"].items() if k.startswith("ema::")},
                          trainer.get("ema_updates", 0))
        self.best = trainer.get("best")
        if self.best and self.cfg.patience:
            self._early_stop = self.best["bad_evals"] >= self.cfg.patience
        self.last_checkpoint = str(path)
        self.metrics.truncate_after(self.step)

    def _on_sigterm(self, signum, frame) -> None:
        self._stop_requested = True  # finish the step, checkpoint, exit cleanly (preemption)

    # -- the loop ----------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        lock = RunLock(self.out) if self.ctx.is_main else contextlib.nullcontext()
        with lock, D.collectives(self.ctx, lambda: f"in training step {self.step + 1}",
                                 lambda: self.last_checkpoint):
            self._resume()
            previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            try:
                return self._fit()
            finally:
                signal.signal(signal.SIGTERM, previous)

    def _fit(self) -> dict[str, Any]:
        cfg = self.cfg
        peak = cfg.peak_flops or (measure_peak_flops(self.ctx.device, self.amp_dtype or torch.float32)
                                  if self.flops_per_token else 0.0)
        bar = None
        if cfg.progress and self.ctx.is_main:
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, unit="step", dynamic_ncols=True)
        self.model.train()
        last = {}
        window_tokens, window_time = 0, 0.0
        while self.step < cfg.max_steps and not self._early_stop:
            t0 = time.perf_counter()
            tokens_before = self.tokens_seen
            row = self.train_step()
            dt = time.perf_counter() - t0
            self.elapsed += dt
            window_tokens += self.tokens_seen - tokens_before
            window_time += dt
            self.step += 1
            if "spike_ratio" in row and self.ctx.is_main:
                message = f"warning: {self.spike.message()}"
                if bar is not None:
                    bar.write(message, file=sys.stderr)
                else:
                    print(message, file=sys.stderr)
            if self.step % cfg.log_every_steps == 0 or self.step == cfg.max_steps or "spike_ratio" in row:
                tps = window_tokens / max(window_time, 1e-9)
                row.update(step=self.step, elapsed_s=round(self.elapsed, 3), tokens=self.tokens_seen,
                           tokens_per_s=round(tps, 1), skipped_steps=self.guard.skipped_steps,
                           spikes=self.spike.spikes)
                if self.flops_per_token and peak:
                    row["mfu"] = round(tps * self.flops_per_token / peak, 4)
                window_tokens, window_time = 0, 0.0
                if self.step % cfg.eval_every_steps == 0 or self.step == cfg.max_steps:
                    row.update(self._evaluate_and_select())
                self.metrics.write(row)
                last = row
                if bar is not None:
                    bar.set_postfix({k: f"{row[k]:.4g}" for k in ("train_loss", "val_loss", "lr", "tokens_per_s")
                                     if k in row}, refresh=False)
            elif self.step % cfg.eval_every_steps == 0:
                self.metrics.write({"step": self.step, "elapsed_s": round(self.elapsed, 3), **row,
                                    **self._evaluate_and_select()})
            if bar is not None:
                bar.update(1)
            due = (self.step % cfg.save_every_steps == 0 or self.step == cfg.max_steps or self._stop_requested
                   or self._early_stop)
            if due and self.guard.consecutive == 0 and self.spike.consecutive == 0:  # never mid bad streak
                self.save()
            if self._stop_requested or self._early_stop:
                break
        if bar is not None:
            bar.close()
        if self.ema is not None:
            self.ema.copy_to_model()  # what the caller writes as the model is the average
        return {"steps": self.step, "elapsed_s": round(self.elapsed, 2), "tokens": self.tokens_seen,
                "precision": self.precision, "skipped_steps": self.guard.skipped_steps, "spikes": self.spike.spikes,
                "last_checkpoint": self.last_checkpoint, "preempted": self._stop_requested,
                "early_stopped": self._early_stop, "best": self.best,
                **{k: last[k] for k in ("train_loss", "val_loss", "val_perplexity", "val_bits_per_byte",
                                        "tokens_per_s", "mfu") if k in last}}


@contextlib.contextmanager
def _oom_hint(cfg: TrainConfig):
    """Out of memory → a message that says what to change, instead of an allocator trace."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as e:
        text = str(e)
        if isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in text or "out of memory" in text:
            half = max(1, cfg.batch_size // 2)
            raise LmlabError(
                f"out of memory at train.batch_size={cfg.batch_size}: try --train.batch_size={half} "
                f"--train.grad_accum_steps={cfg.grad_accum_steps * 2} (same effective batch), or "
                "--train.activation_checkpointing=true") from None
        raise


def _checkpointed(forward):
    from torch.utils.checkpoint import checkpoint

    def run(*args, **kwargs):
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return run
