"""``POST /v1/classify | answer | summarize | translate``: `lmlab.pipeline(TASK, MODEL_DIR)` on the input.

A pipeline is built on first use, on the model thread, and kept. 501 when this installation has
no ``lmlab.tasks.pipeline``; 404 when the model is not a model of that task. The pipeline's
output is passed through as JSON (``{"model", "task", "result"}``).

The limits of completions hold here too: at most ``max_prompts`` texts in a request and
``max_input_tokens`` tokens in each (400), ``request_timeout_s`` (504), backpressure (429) and
the end of the work when the client leaves; a list of texts runs as calls of at most
``max_batch_size`` texts, with other requests served in between (`ServerState.run`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from fastapi import Request

from lmlab.errors import LmlabError
from lmlab.serve.errors import ApiError
from lmlab.serve.schema import AnswerRequest, TextTask
from lmlab.serve.state import ServerState

TASKS = {"classify": "classification", "answer": "qa", "summarize": "summarization", "translate": "translation"}


async def run_task(state: ServerState, request: Request, task: str, name: str, inputs: Any,
                   texts: Callable[[Any], list[tuple[str, str]]]):
    """`inputs`: one input or a list of them (at most max_prompts); `texts(input)`: its (text, field)
    pairs, each held to max_input_tokens. A list runs as calls of at most max_batch_size inputs."""
    entry = state.entry(name)
    single = not isinstance(inputs, list)
    items = [inputs] if single else inputs
    cap = state.config.max_prompts
    if not 1 <= len(items) <= cap:
        raise ApiError(400, f"text: give 1 to {cap} texts (got {len(items)})", param="text")
    for item in items:
        for text, param in texts(item):
            state.check_input(entry, text, param)
    try:
        from lmlab.tasks.pipeline import pipeline as make_pipeline
    except ImportError:
        raise ApiError(501, f"/v1/{task} needs lmlab.tasks (the applications), which this installation "
                       "does not have", "not_implemented") from None
    key = (task, entry.name)
    pipelines = state.pipelines

    def on_model_thread(part: Any):
        def run():
            if key not in pipelines:
                pipelines[key] = make_pipeline(TASKS[task], entry.path)
            return pipelines[key](part)
        return run

    n = state.config.max_batch_size
    calls = [(on_model_thread(inputs), 1)] if single else \
        [(on_model_thread(items[i:i + n]), len(items[i:i + n])) for i in range(0, len(items), n)]
    try:
        parts = await state.run(request, calls)
    except (LmlabError, KeyError) as e:
        if key not in pipelines:
            raise ApiError(404, f"model {entry.name!r} is not a {TASKS[task]} model ({e})", param="model",
                           code="wrong_task") from None
        raise ApiError(400, str(e)) from None
    result = parts[0] if single else [r for part in parts for r in part]
    return {"model": entry.name, "task": TASKS[task], "result": jsonable(result)}


def text_of(item: str) -> list[tuple[str, str]]:
    return [(item, "text")]


async def classify(state: ServerState, request: Request):
    p = await state.read(request, TextTask)
    return await run_task(state, request, "classify", p.model, p.text, text_of)


async def answer(state: ServerState, request: Request):
    p = await state.read(request, AnswerRequest)
    return await run_task(state, request, "answer", p.model, {"question": p.question, "context": p.context},
                          lambda item: [(item["question"], "question"), (item["context"], "context")])


async def summarize(state: ServerState, request: Request):
    p = await state.read(request, TextTask)
    return await run_task(state, request, "summarize", p.model, p.text, text_of)


async def translate(state: ServerState, request: Request):
    p = await state.read(request, TextTask)
    return await run_task(state, request, "translate", p.model, p.text, text_of)


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
