"""`lmlab evaluate TASK MODEL_DIR --data FILE|DATASET`: a task model's metrics on labelled data.

    lmlab evaluate sentiment out/sst2/model --data sst2:dev
    lmlab evaluate qa out/cmrc/model --data cmrc2018:trial
    lmlab evaluate translation out/mt/model --data multi30k:val --task.seq2seq.num_beams=4
    lmlab evaluate lm out/gpt/model --data wiki.txt       (perplexity, bits per byte)

The metrics are printed and written as JSON next to the model, to
``MODEL_DIR/../eval/TASK-DATA.json`` (or ``--out FILE``), with the per-example predictions in a
``.predictions.jsonl`` beside it and, for classification, the confusion matrix as a PNG.
``--task.FIELD=VALUE`` changes how the model is used (beams, max lengths), not what it is.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lmlab.artifacts import atomic_write_text, write_json
from lmlab.config import from_dict, merge, parse_overrides, to_dict
from lmlab.errors import ConfigError
from lmlab.tasks import get_task


def write_evaluation(task, metrics: dict, records: list[dict], path: Path, about: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"task": task.name, **about, "metrics": metrics})
    stem = path.with_suffix("")
    atomic_write_text(stem.with_name(stem.name + ".predictions.jsonl"),
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    if "confusion_matrix" in metrics:
        from lmlab.evaluation.classification import plot_confusion_matrix

        plot_confusion_matrix(metrics["confusion_matrix"], metrics["labels"],
                              stem.with_name(stem.name + ".confusion_matrix.png"), f"{task.name}: {about.get('data')}")
    return path


def task_config_with(cfg, overrides) -> Any:
    from lmlab.tasks.task import TaskConfig

    over = parse_overrides(overrides)
    unknown = sorted(set(over) - {"task"})
    if unknown:
        raise ConfigError(f"unknown config section {', '.join(unknown)}; evaluation takes --task.FIELD=VALUE")
    return from_dict(TaskConfig, merge(to_dict(cfg), over.get("task", {})), "task")


def evaluate_task(task: str, model_dir: str, data: str, out: str | None = None, data_root: str | None = None,
                  overrides: list[str] = ()) -> dict:
    from lmlab.model.pretrained import resolve_model_dir

    model_dir = str(resolve_model_dir(model_dir))  # a run directory: its model/ (and eval/ beside it)
    if task == "lm":
        from lmlab.evaluation.lm import evaluate_lm

        result = evaluate_lm(model_dir, data)
        path = Path(out) if out else Path(model_dir).resolve().parent / "eval" / f"lm-{_slug(data)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, result)
        return {**result, "written": str(path)}
    from lmlab.tasks.task_model import load_task_model

    T = get_task(task)
    model, tok, meta, cfg = load_task_model(model_dir, T.name)
    cfg = task_config_with(cfg, overrides)
    examples = T.read(data, cfg, data_root)
    metrics, records = T.evaluate(model, tok, meta, cfg, examples)
    path = Path(out) if out else Path(model_dir).resolve().parent / "eval" / f"{T.name}-{_slug(data)}.json"
    write_evaluation(T, metrics, records, path, {"model": str(model_dir), "data": data})
    return {**metrics, "written": str(path)}


def _slug(data: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(data).name if Path(data).exists() else data).strip("_") or "data"
