"""``POST /v1/classify | answer | summarize | translate``: `lmlab.pipeline(TASK, MODEL_DIR)` on the input.

A pipeline is built on first use, on the model thread, and kept. 501 when this installation has
no ``lmlab.tasks.pipeline``; 404 when the model is not a model of that task. The pipeline's
output is passed through as JSON (``{"model", "task", "result"}``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import Request

from lmlab.errors import LmlabError
from lmlab.serve.batcher import BusyError
from lmlab.serve.errors import ApiError
from lmlab.serve.schema import AnswerRequest, TextTask
from lmlab.serve.state import ServerState

TASKS = {"classify": "classification", "answer": "qa", "summarize": "summarization", "translate": "translation"}


async def run_task(state: ServerState, task: str, name: str, call):
    entry = state.entry(name)
    try:
        from lmlab.tasks.pipeline import pipeline as make_pipeline
    except ImportError:
        raise ApiError(501, f"/v1/{task} needs lmlab.tasks (the applications), which this installation "
                       "does not have", "not_implemented") from None
    key = (task, entry.name)
    pipelines = state.pipelines

    def load_and_run():
        if key not in pipelines:
            pipelines[key] = make_pipeline(TASKS[task], entry.path)
        return call(pipelines[key])

    try:
        result = await state.batcher.call(load_and_run)
    except BusyError:
        raise state.busy() from None
    except (LmlabError, KeyError) as e:
        if key not in pipelines:
            raise ApiError(404, f"model {entry.name!r} is not a {TASKS[task]} model ({e})", param="model",
                           code="wrong_task") from None
        raise ApiError(400, str(e)) from None
    return {"model": entry.name, "task": TASKS[task], "result": jsonable(result)}


async def classify(state: ServerState, request: Request):
    p = await state.read(request, TextTask)
    return await run_task(state, "classify", p.model, lambda pipe: pipe(p.text))


async def answer(state: ServerState, request: Request):
    p = await state.read(request, AnswerRequest)
    return await run_task(state, "answer", p.model, lambda pipe: pipe({"question": p.question, "context": p.context}))


async def summarize(state: ServerState, request: Request):
    p = await state.read(request, TextTask)
    return await run_task(state, "summarize", p.model, lambda pipe: pipe(p.text))


async def translate(state: ServerState, request: Request):
    p = await state.read(request, TextTask)
    return await run_task(state, "translate", p.model, lambda pipe: pipe(p.text))


def jsonable(x: Any) -> Any:
    """Pipeline outputs (dataclasses, numpy scalars, tuples) as JSON-ready values."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item):
        return x.item()
    return x


ROUTES = [("POST", "/v1/classify", classify), ("POST", "/v1/answer", answer), ("POST", "/v1/summarize", summarize),
          ("POST", "/v1/translate", translate)]
