"""`lmlab.pipeline(TASK, MODEL_DIR)` and `lmlab predict TASK MODEL_DIR`: use a task model.

    clf = lmlab.pipeline("sentiment", "out/sst2/model")
    clf("a gripping film")           → {"label": "positive", "score": 0.97, "scores": {...}}
    clf(["good", "bad"])             → [{...}, {...}]
    qa = lmlab.pipeline("qa", "out/cmrc/model")
    qa({"question": "…", "context": "…"})  → {"answer": "…", "start": 12, "end": 15, "score": 0.8}
    lmlab.pipeline("summarization", DIR)("dialogue …")  → {"summary": "…"}
    lmlab.pipeline("translation", DIR)("A man rides a bike.")  → {"translation": "…"}

``lmlab predict TASK MODEL_DIR "text"`` prints the result; ``--input FILE`` reads a .txt (one
input per line), .jsonl/.csv/.tsv file (text column found by name; QA needs question and
context columns) and ``--output FILE`` writes JSON lines in the same order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmlab.artifacts import atomic_write_text
from lmlab.errors import DataError
from lmlab.tasks import get_task


class Pipeline:
    def __init__(self, task: str, model_dir: str | Path, overrides: list[str] = ()):
        from lmlab.tasks.evaluate import task_config_with
        from lmlab.tasks.task_model import load_task_model

        self.task = get_task(task)
        self.model, self.tok, self.meta, cfg = load_task_model(model_dir, self.task.name)
        self.cfg = task_config_with(cfg, overrides)
        self.labels = self.meta.get("labels")

    def __call__(self, inputs: Any) -> Any:
        single = isinstance(inputs, (str, dict))
        items = [inputs] if single else list(inputs)
        if not items:
            raise DataError("no inputs")
        out = self.task.predict(self.model, self.tok, self.meta, self.cfg, items)
        return out[0] if single else out


def pipeline(task: str, model_dir: str | Path, overrides: list[str] = ()) -> Pipeline:
    return Pipeline(task, model_dir, overrides)


def _read_inputs(path: str) -> list[Any]:
    from lmlab.tasks.records import TEXT_COLUMNS, read_records

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    if p.suffix.lower() == ".txt":
        lines = [line.rstrip("\r\n") for line in p.read_text(encoding="utf-8").splitlines()]
        items = [line for line in lines if line.strip()]
        if not items:
            raise DataError(f"{p}: no non-empty lines")
        return items
    rows = read_records(p)
    if "question" in rows[0] and "context" in rows[0]:
        return [{"question": str(r["question"]), "context": str(r["context"])} for r in rows]
    cols = [c for c in TEXT_COLUMNS + ("source", "src", "dialogue", "abstract") if c in rows[0]]
    if not cols:
        raise DataError(f"{p}: no text column (looked for {', '.join(TEXT_COLUMNS)}, source, dialogue)")
    return [str(r[cols[0]]) for r in rows]


def predict_command(task: str, model_dir: str, text: str | None = None, context: str | None = None,
                    input: str | None = None, output: str | None = None, overrides: list[str] = ()) -> Any:
    if (text is None) == (input is None):
        raise DataError("predict: give exactly one of TEXT or --input FILE")
    pipe = pipeline(task, model_dir, overrides)
    if text is not None:
        item: Any = {"question": text, "context": context or ""} if pipe.task.name == "qa" else text
        if pipe.task.name == "qa" and not context:
            raise DataError("predict qa: give the passage with --context TEXT")
        return pipe(item)
    results = pipe(_read_inputs(input))
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output, lines)
        return {"inputs": len(results), "written": output}
    return lines.rstrip("\n")
