"""`ServerState`: what every route handler shares — the models, the limits, the model thread and
the task pipelines built so far — and the lookups and refusals that depend on it."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from fastapi import Request
from pydantic import ValidationError

from lmlab.serve.batcher import Batcher, Call, ShuttingDown
from lmlab.serve.errors import ApiError
from lmlab.serve.limits import ServeConfig
from lmlab.serve.registry import ModelEntry, Registry

TYPE_TAG = re.compile(r"^(int|float|str|bool|none|list|dict)$|[\[\-]")  # pydantic's union-member loc parts


@dataclass
class ServerState:
    registry: Registry
    config: ServeConfig
    batcher: Batcher
    pipelines: dict[tuple[str, str], Any] = field(default_factory=dict)  # (task, model name) → pipeline

    def entry(self, name: str, generate: bool = False) -> ModelEntry:
        """The model named `name` (404 when it is not served; 400 when it must generate and cannot)."""
        entry = self.registry.get(name)
        if entry is None:
            raise ApiError(404, f"model {name!r} does not exist; GET /v1/models lists them", param="model",
                           code="model_not_found")
        if generate and not entry.can_generate:
            cfg = entry.model.config
            raise ApiError(400, f"model {name!r} ({cfg.arch}, head {cfg.head}) cannot generate text", param="model")
        return entry

    def busy(self) -> ApiError:
        """429 with Retry-After when the queue is full, 503 while shutting down."""
        config = self.config
        if self.batcher.stopping:
            return ApiError(503, "server is shutting down", "server_error", code="unavailable",
                            headers={"Retry-After": str(config.retry_after_s)})
        return ApiError(429, f"server busy: {config.max_batch_size} requests decoding and {config.max_queue} waiting; "
                        "retry later", "rate_limit_error", code="queue_full",
                        headers={"Retry-After": str(config.retry_after_s)})

    async def read(self, request: Request, model_cls):
        """The request body as `model_cls`: size-capped (413), in time (408), JSON (400), schema-checked
        (400 naming the field)."""
        cap, timeout = self.config.max_body_bytes, self.config.body_timeout_s
        chunks: list[bytes] = []

        async def receive_all() -> None:
            size = 0
            async for chunk in request.stream():  # counted: a chunked body has no Content-Length
                size += len(chunk)
                if size > cap:
                    raise ApiError(413, f"request body over max_body_bytes={cap}", code="body_too_large")
                chunks.append(chunk)

        try:
            await asyncio.wait_for(receive_all(), timeout)
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body did not arrive within body_timeout_s={timeout}",
                           code="body_timeout", headers={"Connection": "close"}) from None
        try:
            data = json.loads(b"".join(chunks) or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise ApiError(400, f"body is not valid JSON ({type(e).__name__}: {str(e)[:100]})") from None
        if not isinstance(data, dict):
            raise ApiError(400, "body must be a JSON object")
        try:  # JSON can escape half a UTF-16 pair ("\ud800"), which is not text a tokenizer can take
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            raise ApiError(400, f"body holds a lone UTF-16 surrogate (\\u{ord(e.object[e.start]):04x}); "
                           "send valid Unicode text") from None
        try:
            return model_cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"] if not TYPE_TAG.search(str(p)))
            raise ApiError(400, f"{where}: {err['msg']}", param=where or None) from None

    def check_input(self, entry: ModelEntry, text: str, param: str) -> None:
        """400 (context_length_exceeded) when `text` is over max_input_tokens."""
        n, limit = len(entry.tokenizer.encode(text)), self.config.max_input_tokens
        if n > limit:
            raise ApiError(400, f"{param}: {n} tokens, over this server's max_input_tokens={limit}", param=param,
                           code="context_length_exceeded")

    async def run(self, request: Request, fns: list[tuple[Callable[[], Any], int]]) -> list[Any]:
        """Run the functions on the model thread, in order, under the request's limits; their results.

        `fns`: (function, slots) — slots count in admission as rows do (429 when full). 504 once
        request_timeout_s has passed, 499 when the client has gone; either way the calls not yet
        started are dropped (one already running finishes and its result is dropped). An exception
        of a function is raised here, and the calls after it are dropped.
        """
        loop = asyncio.get_running_loop()
        timeout = self.config.request_timeout_s
        deadline = time.monotonic() + timeout
        calls = [Call(fn, loop, loop.create_future(), deadline, size) for fn, size in fns]
        if not self.batcher.submit(calls):
            raise self.busy()
        results, checked = [], time.monotonic()
        try:
            for call in calls:
                while True:
                    if time.monotonic() - checked > 0.2:  # is the client still there?
                        checked = time.monotonic()
                        if await request.is_disconnected():
                            raise ApiError(499, "client closed the request", code="client_closed")
                    if call.future.done():
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise ApiError(504, f"request took longer than request_timeout_s={timeout}", "timeout_error",
                                       code="timeout")
                    await asyncio.wait([call.future], timeout=min(0.2, left))
                try:
                    results.append(call.future.result())
                except TimeoutError:
                    raise ApiError(504, f"request took longer than request_timeout_s={timeout}", "timeout_error",
                                   code="timeout") from None
                except ShuttingDown:
                    raise self.busy() from None
        finally:
            for call in calls:
                call.cancel()  # no-op for finished calls
        return results
