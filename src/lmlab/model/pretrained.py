"""An lmlab model directory: ``model.json`` (the TransformerConfig, or the NgramConfig of a
bag-of-n-grams classifier: ``"kind": "ngram"``), ``model.safetensors``,
an optional ``tokenizer/`` directory, ``config.yaml`` (how it was made) and ``manifest.json``.

Every command that reads a model takes either such a directory or a run directory (the
``--out`` of `lmlab pretrain` / `lmlab finetune`), whose ``model/`` it then reads
(`resolve_model_dir`, the one place this is decided).

Loading verifies the manifest's hashes, rejects unknown config keys, and requires every
stored tensor to match a parameter of the same shape and every parameter to be filled;
otherwise `CheckpointMismatch` names the tensor and the config field that disagrees.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from lmlab.artifacts import ArtifactWriter, load_tensors, read_json, save_tensors, verify, write_json
from lmlab.config import to_dict
from lmlab.errors import ArtifactError, CheckpointMismatch, ConfigError
from lmlab.model.config import TransformerConfig
from lmlab.model.ngram import NgramClassifier, NgramConfig
from lmlab.model.transformer import Transformer

MODEL_KIND = "lmlab-model"


def save_model(model: Transformer, out_dir: str | Path, tokenizer_dir: str | Path | None = None,
               stage_config: Any = None, overwrite: bool = False) -> Path:
    with ArtifactWriter(out_dir, kind=MODEL_KIND, config=stage_config, overwrite=overwrite) as w:
        write_json(w.path / "model.json", to_dict(model.config))
        state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
        save_tensors(state, w.path / "model.safetensors", metadata={"format": "pt"})
        if tokenizer_dir is not None:
            shutil.copytree(tokenizer_dir, w.path / "tokenizer")  # verbatim: it stays a tokenizer artifact
    return Path(out_dir)


def resolve_model_dir(path: str | Path) -> Path:
    """A model directory as given, or a run directory's ``model/``; else a clear error."""
    path = Path(path)
    for candidate in (path, path / "model"):
        if (candidate / "model.json").is_file() or (candidate / "task.json").is_file():  # task.json: an ensemble
            return candidate
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such directory")
    if (path / "checkpoints").is_dir() or (path / "metrics.jsonl").is_file():
        raise ArtifactError(f"{path}: a training run whose model/ is not written yet (it has not finished); run "
                            "the same `lmlab pretrain` / `lmlab finetune` command again to continue it")
    if (path / "config.json").is_file():
        raise ArtifactError(f"{path}: a Hugging Face model directory; convert it first with "
                            f"`lmlab hf import {path} OUT` and use OUT")
    raise ArtifactError(f"{path}: not an lmlab model directory (no model.json) nor a run directory (no model/)")


def read_model_config(model_dir: str | Path) -> TransformerConfig | NgramConfig:
    path = Path(model_dir) / "model.json"
    data = read_json(path)
    try:
        if isinstance(data, dict) and data.get("kind") == "ngram":
            return NgramConfig.from_dict(data)
        return TransformerConfig.from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def model_for(cfg: TransformerConfig | NgramConfig) -> Transformer | NgramClassifier:
    """The module a config describes."""
    return NgramClassifier(cfg) if isinstance(cfg, NgramConfig) else Transformer(cfg)


def require_transformer(cfg: TransformerConfig | NgramConfig, source: str, what: str) -> TransformerConfig:
    """`cfg`, or a clear error where a Transformer is needed (export, cost, generation)."""
    if isinstance(cfg, NgramConfig):
        raise ConfigError(f"{source}: is a bag-of-n-grams classifier, not a Transformer; {what} needs a Transformer")
    return cfg


def _suspects(cfg: TransformerConfig, expected: tuple[int, ...], found: tuple[int, ...]) -> str:
    """Config fields whose value is a dimension that differs: the likely culprits."""
    values = {k: v for k, v in to_dict(cfg).items() if isinstance(v, int) and not isinstance(v, bool)}
    values["d_head"] = getattr(cfg, "d_head", None)
    names = sorted({k for e, f in zip(expected, found) if e != f for k, v in values.items() if v in (e, f)})
    return f" (check {', '.join(names)})" if names else ""


def check_state(cfg: TransformerConfig | NgramConfig, tensors: dict[str, torch.Tensor], source: str,
                expected: dict[str, torch.Tensor] | None = None) -> None:
    """Every tensor used, every parameter filled, shapes equal; else `CheckpointMismatch`.
    Compares against `expected` (a live model's state dict, whose modules may be wrapped, e.g.
    by LoRA) or else the model built from `cfg` on the meta device, so no memory is allocated."""
    if expected is not None:
        own = expected
    else:
        with torch.device("meta"):
            own = model_for(cfg).state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected[:8])}{' …' if len(unexpected) > 8 else ''}")
    for name in sorted(set(own) & set(tensors)):
        exp, got = tuple(own[name].shape), tuple(tensors[name].shape)
        if exp != got:
            problems.append(f"{name} has shape {got} in the file but the config gives {exp}"
                            f"{_suspects(cfg, exp, got)}")
    if problems:
        raise CheckpointMismatch(f"{source}: weights do not fit the model config: " + "; ".join(problems))


def load_state(model: Transformer | NgramClassifier, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Strict load (see `check_state`)."""
    check_state(model.config, tensors, source)
    model.load_state_dict(tensors, strict=True)


def load_model(model_dir: str | Path, device: str | torch.device = "cpu",
               verify_hashes: bool = True) -> Transformer | NgramClassifier:
    model_dir = resolve_model_dir(model_dir)
    if verify_hashes:
        verify(model_dir, kind=MODEL_KIND)
    cfg = read_model_config(model_dir)
    model = model_for(cfg)
    load_state(model, load_tensors(model_dir / "model.safetensors"), str(model_dir / "model.safetensors"))
    return model.to(device).eval()


def model_from_init(init_dir: Path, fields: dict[str, Any]):
    """A model with the head `fields` name (a task's, or a pretraining objective's) on the backbone of
    `init_dir` (the ``--init`` of `lmlab finetune` / `lmlab pretrain`): every tensor except the old
    head's is loaded; a new head (and a pooler the checkpoint lacks) starts from the init."""
    base = read_model_config(init_dir)
    if base.arch == "ngram":
        raise ConfigError(f"--init {init_dir}: a bag-of-n-grams classifier has no encoder to fine-tune; "
                          "train it again with --model.preset=ngram instead")
    changes = dict(fields)
    if changes.get("head") == "classification" and base.arch == "encoder":
        changes["pooler"] = True
    try:
        cfg = base.replace(**changes)
        cfg.__post_init__()
    except ConfigError as e:
        raise ConfigError(f"--init {init_dir}: a {base.arch} model cannot take this task's head ({e})") from None
    model = Transformer(cfg)
    own = model.state_dict()
    weights = load_tensors(init_dir / "model.safetensors")
    keep_head = base.head == cfg.head and base.n_labels == cfg.n_labels
    state = {k: v for k, v in weights.items() if keep_head or not k.startswith("head.")}
    segments = state.get("embed.segments.weight")
    if segments is not None and 0 < segments.shape[0] < cfg.type_vocab_size:
        # a task that adds segment types (qa's question_match): new rows copy the last one, the
        # model's output is unchanged until they train apart
        extra = segments[-1:].expand(cfg.type_vocab_size - segments.shape[0], -1)
        state["embed.segments.weight"] = torch.cat([segments, extra])
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
           for k, v in state.items() if k in own and own[k].shape != v.shape]
    unused = sorted(k for k in state if k not in own)
    if bad or unused:
        raise CheckpointMismatch(f"{init_dir}: weights do not fit ({'; '.join(bad + unused)[:400]})")
    fresh = sorted(k for k in own if k not in state)
    allowed = ("head.", "pooler.", "pointer.")
    if any(not k.startswith(allowed) for k in fresh):
        raise CheckpointMismatch(f"{init_dir}: missing backbone tensors {fresh[:6]}")
    model.load_state_dict(state, strict=False)
    return model, fresh


def init_model(preset_name: str = "gpt2-tiny", out: str | Path = "out/model", seed: int = 0,
               overrides: list[str] = (), overwrite: bool = False) -> dict:
    """`lmlab model init`: a randomly initialised model directory from a preset and
    ``--model.field=value`` overrides (e.g. ``--model.vocab_size=8000``)."""
    from lmlab.config import parse_overrides
    from lmlab.model.config import preset

    fields = parse_overrides(overrides)
    unknown = sorted(set(fields) - {"model"})
    if unknown:
        raise ConfigError(f"unknown config section {', '.join(unknown)}; model init takes --model.FIELD=VALUE")
    try:
        cfg = preset(preset_name, **fields.get("model", {}))
    except ConfigError as e:
        raise ConfigError(f"--model: {e}") from None
    torch.manual_seed(seed)
    model = Transformer(cfg)
    save_model(model, out, stage_config={"stage": "model init", "preset": preset_name, "seed": seed,
                                         "model": to_dict(cfg)}, overwrite=overwrite)
    return {"out": str(out), "preset": preset_name, "parameters": sum(p.numel() for p in model.parameters())}
