"""Training checkpoints: atomic ``step-XXXXXXXX/`` directories, retention, resume discovery,
and a lock so that two runs never write to one directory.

A checkpoint holds everything exact resume needs:
    model.json, model.safetensors      architecture and weights
    optimizer.safetensors              AdamW moments (and the RNG states, as uint8 tensors)
    state.json                         step, optimizer hyper-parameters, grad-scaler state,
                                       Python/NumPy RNG states, trainer counters
    config.yaml, manifest.json         the run's resolved config; sha256 of every file
It is built under a temporary name and renamed into place only when complete (see
`lmlab.artifacts`), so a step exists exactly when its manifest does. Discovery picks the newest
directory named ``step-<8 digits>`` whose manifest verifies, ignoring anything else; retention
renames a directory out of the ``step-`` namespace before deleting it, so a deletion cut short
can never be mistaken for a checkpoint. Overwriting a step (a run resumed from an earlier one)
renames the old copy aside and the new one into place; `recover_interrupted` puts back a step
that a kill between those two renames left only under its temporary names.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from lmlab.artifacts import ArtifactWriter, load_tensors, read_json, recover, save_tensors, verify, write_json
from lmlab.config import to_dict
from lmlab.errors import ArtifactError, CheckpointMismatch, LmlabError
from lmlab.model.config import TransformerConfig
from lmlab.model.pretrained import check_state
from lmlab.train import rng

KIND = "lmlab-checkpoint"
STEP_RE = re.compile(r"^step-(\d{8})$")
LEFTOVER_RE = re.compile(r"^\.(step-\d{8})\.(?:tmp|old)-")


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded model and optimizer state dicts, keyed by parameter name. Under FSDP this is a
    collective: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded model weights only (collective under FSDP, like `full_state`)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for name, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim::{name}::{key}"] = value
            else:
                scalars[f"{name}::{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim::"):
            _, name, field = key.split("::")
            state.setdefault(name, {})[field] = value
    for key, value in meta["scalars"].items():
        name, field = key.split("::")
        state.setdefault(name, {})[field] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(root: Path, step: int, model_config: TransformerConfig, model_state: dict[str, torch.Tensor],
                    optimizer_state: dict[str, Any], scaler: Any, trainer_state: dict[str, Any],
                    run_config: Any, extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Commit ``root/step-XXXXXXXX`` from full (unsharded) states. Call on rank 0 only.
    extra_tensors (the weight average) go into optimizer.safetensors under ``extra::``."""
    opt_tensors, opt_meta = _flatten_optimizer(optimizer_state)
    rng_meta, rng_tensors = rng.capture()
    target = step_dir(root, step)
    with ArtifactWriter(target, kind=KIND, config=run_config, overwrite=True) as w:
        write_json(w.path / "model.json", to_dict(model_config))
        save_tensors({k: v.detach().cpu() for k, v in model_state.items()}, w.path / "model.safetensors")
        extra = {f"extra::{k}": v.detach().cpu() for k, v in (extra_tensors or {}).items()}
        save_tensors({**{k: v.cpu() for k, v in opt_tensors.items()}, **rng_tensors, **extra},
                     w.path / "optimizer.safetensors")
        write_json(w.path / "state.json", {
            "step": step, "optimizer": opt_meta, "rng": rng_meta, "trainer": trainer_state,
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        })
    return target


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_RE.match(p.name))]
    return sorted(found)


def damage(path: Path) -> str | None:
    """Why the checkpoint `path` cannot be resumed (the error, which names the file), or None."""
    try:
        verify(path, kind=KIND)
    except LmlabError as e:
        return str(e)
    return None


def latest_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint whose manifest verifies; junk and partial directories are skipped."""
    for _, path in reversed(list_checkpoints(root)):
        if damage(path) is None:
            return path
    return None


def recover_interrupted(root: Path) -> list[Path]:
    """Put back every step whose overwrite a kill cut short (call with the run lock held)."""
    if not root.is_dir():
        return []
    names = sorted({m.group(1) for p in root.iterdir() if (m := LEFTOVER_RE.match(p.name))})
    return [root / name for name in names if recover(root / name)]


def apply_retention(root: Path, keep_last: int) -> None:
    complete = [p for _, p in list_checkpoints(root) if (p / "manifest.json").exists()]
    for path in (complete[:-keep_last] if keep_last > 0 else []):
        doomed = path.with_name(f".deleting-{path.name}-{os.getpid()}")
        os.replace(path, doomed)  # out of the step- namespace first: atomic
        shutil.rmtree(doomed, ignore_errors=True)
    # Leftovers of runs killed mid-save or mid-delete: with the run lock held, nobody else is
    # writing here, so every temporary directory is stale.
    for pattern in (".deleting-*", ".step-*.tmp-*", ".step-*.old-*"):
        for stale in root.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def check_same_architecture(saved: dict[str, Any], current: TransformerConfig, where: Path) -> None:
    now = to_dict(current)
    changed = [k for k in sorted(set(saved) | set(now))
               if k not in ("dropout", "attn_dropout", "attention_impl", "unpad", "classifier_dropout")
               and saved.get(k) != now.get(k)]
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} in the checkpoint, {now.get(k)!r} now" for k in changed)
        raise CheckpointMismatch(f"{where}: cannot resume with a changed architecture ({details}); "
                                 "restore those fields or start a new run in another directory")


def read_identity(path: Path) -> dict[str, Any]:
    """The identity of the run that wrote a checkpoint (state.json alone is verified: cheap, so
    that a checkpoint of another run is refused by name before any tensor is read)."""
    verify(path, kind=KIND, only=["state.json"])
    return read_json(path / "state.json").get("trainer", {}).get("identity", {})


def identity_changes(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """``field: X there, Y here`` for each differing entry; nested sections (the LoRA config)
    by dotted name, so that the message names the field that changed (``lora.rank``)."""
    out = []
    for k in sorted(set(saved) | set(now)):
        a, b = saved.get(k), now.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += identity_changes(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} there, {b!r} here")
    return out


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: Any = None, model_config: TransformerConfig | None = None) -> dict[str, Any]:
    """Restore model, optimizer, scaler and RNG states in place (every rank; FSDP-sharded
    models take their shard of the full state); return state.json, with the checkpoint's extra
    tensors under "extra_tensors"."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    verify(path, kind=KIND)
    config = model_config or model.config
    check_same_architecture(read_json(path / "model.json"), config, path)
    weights = load_tensors(path / "model.safetensors")
    check_state(config, weights, str(path), expected=model.state_dict())  # the model as built: LoRA layers included
    state = read_json(path / "state.json")
    tensors = load_tensors(path / "optimizer.safetensors")
    # strict=False: a parameter the objective never reaches (a BERT's pooler under masked LM) has
    # no optimizer state, which strict loading refuses; the weights were checked whole just above.
    set_state_dict(model, optimizer, model_state_dict=weights,
                   optim_state_dict=_unflatten_optimizer(tensors, state["optimizer"]),
                   options=StateDictOptions(full_state_dict=True, strict=False))
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    rng.restore(state["rng"], tensors)
    state["extra_tensors"] = {k[len("extra::"):]: v for k, v in tensors.items() if k.startswith("extra::")}
    return state


def run_lock(directory: Path):
    """The run lock of `directory` in the process that writes (rank 0 under torchrun), taken
    before a stage writes anything there; a no-op context on the other ranks."""
    import contextlib

    return RunLock(directory) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()


class RunLock:
    """An exclusive lock on an output directory for the life of a run (flock: released by the
    kernel if the process dies, so a crashed run never leaves a stale lock). Re-entrant within a
    process: a stage that locks its directory before preparing data keeps it through the
    trainer's own lock."""

    _held: dict[str, int] = {}  # lock file → nesting depth, in this process

    def __init__(self, directory: Path):
        self.path = Path(directory) / ".lock"
        self.fd: int | None = None
        self.nested = False

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        if key in RunLock._held:
            RunLock._held[key] += 1
            self.nested = True
            return self
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip()
            os.close(self.fd)
            self.fd = None
            raise ArtifactError(f"{self.path.parent}: another run (pid {holder or '?'}) is writing to this "
                                "directory; wait for it or choose another --out") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        RunLock._held[key] = 1
        return self

    def __exit__(self, *exc) -> None:
        if self.nested:
            RunLock._held[str(self.path.resolve())] -= 1
            self.nested = False
            return
        if self.fd is not None:
            RunLock._held.pop(str(self.path.resolve()), None)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
