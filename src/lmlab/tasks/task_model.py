"""A task model directory: an lmlab model directory (``load_model`` reads it) plus ``tokenizer/``
and ``task.json`` (the task, its label names and the `TaskConfig` used), so that evaluation and
prediction need nothing but the directory:

    OUT/model/  model.json  model.safetensors  tokenizer/  task.json  config.yaml  manifest.json

An ensemble (`lmlab ensemble`) is read through the same `load_task_model`, and so is a bare
encoder–decoder with a seq2seq head (an imported MarianMTModel) for translation and summarisation,
with the task's default settings.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from lmlab.artifacts import ArtifactWriter, read_json, save_tensors, write_json
from lmlab.config import from_dict, to_dict
from lmlab.errors import ArtifactError
from lmlab.model.pretrained import MODEL_KIND, load_model, read_model_config, resolve_model_dir
from lmlab.tasks.ensemble import load_ensemble
from lmlab.tasks.task import Task, TaskConfig, load_task_tokenizer, nest_task_config

TASK_FILE = "task.json"
SEQ2SEQ_TASKS = ("translation", "summarization")  # tasks a bare encoder–decoder (head seq2seq) serves as it is


def save_task_model(model, out_dir: Path, tokenizer_dir: Path, task: Task, meta: dict, cfg: TaskConfig,
                    stage_config: Any, extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
                    extra_info: dict[str, Any] | None = None) -> Path:
    """An lmlab model directory + tokenizer/ + task.json (+ e.g. adapter.safetensors)."""
    with ArtifactWriter(out_dir, kind=MODEL_KIND, config=stage_config, overwrite=True) as w:
        write_json(w.path / "model.json", to_dict(model.config))
        save_tensors({k: v.detach().cpu() for k, v in model.state_dict().items()}, w.path / "model.safetensors",
                     metadata={"format": "pt"})
        shutil.copytree(tokenizer_dir, w.path / "tokenizer",
                        ignore=shutil.ignore_patterns(".lock"))
        write_json(w.path / TASK_FILE, {"task": task.name, "meta": meta, "config": to_dict(cfg), **(extra_info or {})})
        for name, tensors in (extra_tensors or {}).items():
            save_tensors(tensors, w.path / name)
    return out_dir


def load_task_model(model_dir: str | Path, task_name: str):
    """(model, tokenizer, meta, TaskConfig) of a task model directory (or of an ensemble of
    them); a directory of another task, or a bare pretrained model, is a clear error."""
    model_dir = resolve_model_dir(model_dir)
    path = model_dir / TASK_FILE
    if not path.exists():
        if task_name in SEQ2SEQ_TASKS and (model_dir / "tokenizer").is_dir() and _is_seq2seq(model_dir):
            # an encoder–decoder that already maps text to text (an imported MarianMTModel): as it is,
            # with the task's default settings (--task.* overrides them)
            return load_model(model_dir), load_task_tokenizer(model_dir / "tokenizer"), {}, TaskConfig()
        raise ArtifactError(f"{model_dir}: not a fine-tuned task model (no {TASK_FILE}); "
                            f"make one with `lmlab finetune {task_name} --init {model_dir} ...`")
    info = read_json(path)
    if info.get("task") != task_name:
        raise ArtifactError(f"{model_dir}: is a {info.get('task')!r} model, not {task_name!r}; "
                            f"use `lmlab ... {info.get('task')} {model_dir}`")
    if "ensemble" in info:  # `lmlab ensemble`: members whose logits are averaged
        model, tok_dir = load_ensemble(model_dir, info)
    else:
        model, tok_dir = load_model(model_dir), model_dir / "tokenizer"
    return model, load_task_tokenizer(tok_dir), info.get("meta", {}), task_config(info)


def _is_seq2seq(model_dir: Path) -> bool:
    cfg = read_model_config(model_dir)
    return getattr(cfg, "arch", None) == "encoder-decoder" and getattr(cfg, "head", None) == "seq2seq"


def task_config(info: dict) -> TaskConfig:
    """The `TaskConfig` of a task.json (one written with every field at the top level, before
    task.qa and task.seq2seq, too)."""
    return from_dict(TaskConfig, nest_task_config(info.get("config", {})), "task")
