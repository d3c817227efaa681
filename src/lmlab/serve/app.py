"""The HTTP server: an OpenAI-compatible API, task endpoints, attention maps and the playground.

    lmlab serve out/gpt out/sentiment --port 8000 [--host 0.0.0.0 --api-key KEY]

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="KEY or anything")
    client.completions.create(model="gpt", prompt="Once upon a time", max_tokens=20)

Routes (all but ``/health`` need ``Authorization: Bearer KEY`` when a key is set; the
playground page also accepts HTTP Basic auth with the key as password, so a browser can open it):

    GET  /health                 {"status": "ok", "models": n}
    GET  /                       the playground (one self-contained HTML page)
    GET  /v1/models              the allow-list of models
    POST /v1/completions         OpenAI Completions (stream: server-sent events ending "data: [DONE]")
    POST /v1/chat/completions    OpenAI Chat Completions (the model's chat template: `lmlab.generate.chat`)
    POST /v1/attention           {"model", "text"} → tokens and weights [layer][head][T][S]
    POST /v1/classify|answer|summarize|translate   `lmlab.pipeline(TASK, MODEL_DIR)` on the input

Task endpoints load their pipeline on first use; they answer 501 when this build has no
``lmlab.tasks.pipeline`` and 404 when the model is not a model of that task. They pass the
pipeline's output through as JSON (``{"result": ...}``).

Errors follow OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 for bad
parameters, 401 auth, 404 unknown model or route, 413 body too large, 429 queue full (with
``Retry-After``), 504 timeout (non-streamed). Limits live in `limits.ServeConfig`.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import re
import time
import uuid
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from lmlab.errors import ConfigError, LmlabError
from lmlab.serve.batcher import Batcher, BusyError, Row
from lmlab.serve.limits import ServeConfig
from lmlab.serve.registry import Registry
from lmlab.generate.chat import render_chat
from lmlab.serve.schema import (AnswerRequest, AttentionRequest, ChatRequest, CompletionRequest, TextTask,
                                error_body)

log = logging.getLogger("lmlab.serve")
TASKS = {"classify": "classification", "answer": "qa", "summarize": "summarization", "translate": "translation"}
PUBLIC = {"/health"}
TYPE_TAG = re.compile(r"^(int|float|str|bool|none|list|dict)$|[\[\-]")  # pydantic's union-member loc parts


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers or {}


def create_app(registry: Registry, config: ServeConfig | None = None):
    """The FastAPI application over loaded models (`Registry.load`)."""
    config = config or ServeConfig()
    batcher = Batcher(config.max_batch_size, config.max_queue, config.batch_window_ms)
    app = FastAPI(title="lmlab", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.registry, app.state.config, app.state.batcher = registry, config, batcher
    app.router.on_shutdown.append(batcher.stop)
    pipelines: dict[tuple[str, str], Any] = {}

    # -- middleware: auth, body-size precheck, one log line per request -----------------------

    def authorised(headers: dict[str, str]) -> bool:
        if not config.api_key:
            return True
        value = headers.get("authorization", "")
        scheme, _, cred = value.partition(" ")
        if scheme.lower() == "bearer":
            return hmac.compare_digest(cred.strip().encode(), config.api_key.encode())
        if scheme.lower() == "basic":
            try:
                _, _, password = base64.b64decode(cred.strip(), validate=True).decode().partition(":")
            except Exception:
                return False
            return hmac.compare_digest(password.encode(), config.api_key.encode())
        return False

    app.add_middleware(Guard, config=config, authorised=authorised)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return JSONResponse(error_body(e.message, e.kind, e.param, e.code), e.status, headers=e.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        return JSONResponse(error_body(str(e.detail), "invalid_request_error"), e.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception):
        log.error("internal error on %s: %s", request.url.path, type(e).__name__)
        return JSONResponse(error_body("internal error", "server_error"), 500)

    # -- request helpers ------------------------------------------------------------------------

    async def body(request: Request, model_cls):
        size, chunks = 0, []
        async for chunk in request.stream():  # counted: a chunked body has no Content-Length
            size += len(chunk)
            if size > config.max_body_bytes:
                raise ApiError(413, f"request body over max_body_bytes={config.max_body_bytes}", code="body_too_large")
            chunks.append(chunk)
        try:
            data = json.loads(b"".join(chunks) or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise ApiError(400, f"body is not valid JSON ({type(e).__name__}: {str(e)[:100]})") from None
        if not isinstance(data, dict):
            raise ApiError(400, "body must be a JSON object")
        try:
            return model_cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"] if not TYPE_TAG.search(str(p)))
            raise ApiError(400, f"{where}: {err['msg']}", param=where or None) from None

    def entry_of(name: str, generate: bool = False):
        entry = registry.get(name)
        if entry is None:
            raise ApiError(404, f"model {name!r} does not exist; GET /v1/models lists them", param="model",
                           code="model_not_found")
        if generate and not entry.can_generate:
            cfg = entry.model.config
            raise ApiError(400, f"model {name!r} ({cfg.arch}, head {cfg.head}) cannot generate text", param="model")
        return entry

    def busy() -> ApiError:
        if batcher.stopping:
            return ApiError(503, "server is shutting down", "server_error", code="unavailable",
                            headers={"Retry-After": str(config.retry_after_s)})
        return ApiError(429, f"server busy: {config.max_batch_size} requests decoding and {config.max_queue} waiting; "
                        "retry later", "rate_limit_error", code="queue_full",
                        headers={"Retry-After": str(config.retry_after_s)})

    def gen_config(p, stop_extra: list[str] | None = None, max_tokens: int | None = None):
        from lmlab.generate import GenerationConfig

        n = 16 if max_tokens is None else max_tokens
        if n > config.max_tokens:
            raise ApiError(400, f"max_tokens: {n} is over this server's cap of {config.max_tokens}", param="max_tokens")
        stop = [p.stop] if isinstance(p.stop, str) else list(p.stop or [])
        try:
            return GenerationConfig(max_new_tokens=n, temperature=p.temperature, top_p=p.top_p, top_k=p.top_k,
                                    repetition_penalty=p.repetition_penalty, seed=p.seed,
                                    stop=stop + (stop_extra or []))
        except ConfigError as e:
            raise ApiError(400, str(e), param=str(e).split(":", 1)[0]) from None

    def check_prompt(entry, prompt: str) -> int:
        n = len(entry.tokenizer.encode(prompt, add_special_tokens=entry.model.config.arch == "encoder-decoder"))
        limit = config.max_input_tokens
        if entry.model.config.arch == "decoder":
            limit = min(limit, entry.max_seq_len - 1)
        if n > limit:
            raise ApiError(400, f"prompt: {n} tokens, over the limit of {limit} (max_input_tokens and the model's "
                           f"context {entry.max_seq_len})", param="prompt", code="context_length_exceeded")
        return n

    async def start_rows(request: Request, entry, prompts: list[str], gcfg) -> list[Row]:
        if len(prompts) > config.max_prompts or not prompts:
            raise ApiError(400, f"prompt: give 1 to {config.max_prompts} prompts", param="prompt")
        for p in prompts:
            check_prompt(entry, p)
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + config.request_timeout_s
        rows = [Row(entry, p, gcfg, deadline, loop) for p in prompts]
        if not batcher.admit(rows):
            raise busy()
        if config.log_prompts:
            log.info("prompts for %s: %r", entry.name, prompts)
        return rows

    async def collect(request: Request, rows: list[Row]) -> list[tuple[str, str]]:
        """Wait for every row; (text, finish_reason) each. Cancels all if the client leaves."""
        out: list[list[Any]] = [["", None] for _ in rows]
        checked = time.monotonic()
        try:
            for i, row in enumerate(rows):
                while out[i][1] is None:
                    if time.monotonic() - checked > 0.2:  # is the client still there?
                        checked = time.monotonic()
                        if await request.is_disconnected():  # 499 (nginx's "client closed request"): nobody reads it
                            raise ApiError(499, "client closed the request", code="client_closed")
                    try:
                        kind, *payload = await asyncio.wait_for(row.events.get(), 0.2)
                    except asyncio.TimeoutError:
                        continue
                    if kind == "error":  # logged by the batcher
                        raise ApiError(500, f"generation failed ({type(payload[0]).__name__})", "server_error")
                    out[i][0] += payload[0]
                    out[i][1] = payload[1]
        finally:
            for r in rows:
                r.cancel()  # no-op for finished rows
        if any(reason == "timeout" for _, reason in out):
            raise ApiError(504, f"request took longer than request_timeout_s={config.request_timeout_s}",
                           "timeout_error", code="timeout")
        return [tuple(o) for o in out]

    def usage(rows: list[Row], prompt_tokens: int) -> dict[str, int]:
        done = sum(r.completion.completion_tokens for r in rows if r.completion is not None)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": done, "total_tokens": prompt_tokens + done}

    def sse(rows: list[Row], chunk, final_usage) -> StreamingResponse:
        async def events():
            yield from_chunk(chunk(None, None, None, first=True))
            left = set(range(len(rows)))
            queues = {i: asyncio.ensure_future(rows[i].events.get()) for i in left}
            try:
                while left:
                    done, _ = await asyncio.wait([queues[i] for i in left], return_when=asyncio.FIRST_COMPLETED)
                    for i in sorted(left):
                        if queues[i] not in done:
                            continue
                        kind, *payload = queues[i].result()
                        if kind == "error":
                            yield from_chunk(error_body("generation failed", "server_error"))
                            left.clear()
                            break
                        text, reason = payload
                        if text or reason:
                            yield from_chunk(chunk(i, text, reason))
                        if reason is not None:
                            left.discard(i)
                        else:
                            queues[i] = asyncio.ensure_future(rows[i].events.get())
                u = final_usage()
                if u is not None:
                    yield from_chunk(u)
                yield b"data: [DONE]\n\n"
            finally:
                for f in queues.values():
                    f.cancel()
                for r in rows:
                    r.cancel()

        return Streaming(events(), rows, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    class Streaming(StreamingResponse):
        """A stream whose rows are cancelled however it ends (done, error, client gone)."""

        def __init__(self, content, rows: list[Row], **kw):
            super().__init__(content, **kw)
            self.rows = rows

        async def __call__(self, scope, receive, send):
            try:
                await super().__call__(scope, receive, send)
            finally:
                for r in self.rows:
                    r.cancel()

    # -- routes -------------------------------------------------------------------------------------

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": len(registry.entries)}

    @app.get("/", response_class=HTMLResponse)
    async def playground():
        return HTMLResponse(resources.files("lmlab.serve").joinpath("playground.html").read_text("utf-8"))

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [e.card() for e in registry.entries.values()]}

    @app.get("/v1/models/{name}")
    async def model_card(name: str):
        return entry_of(name).card()

    @app.post("/v1/completions")
    async def completions(request: Request):
        p = await body(request, CompletionRequest)
        entry = entry_of(p.model, generate=True)
        gcfg = gen_config(p, max_tokens=p.max_tokens)
        prompts = p.prompts()
        rows = await start_rows(request, entry, prompts, gcfg)
        prompt_tokens = sum(len(entry.tokenizer.encode(x)) for x in prompts)
        cid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        head = {"id": cid, "object": "text_completion", "created": created, "model": entry.name}
        if p.stream:
            include = bool(p.stream_options and p.stream_options.include_usage)

            def chunk(i, text, reason, first=False):
                if first:
                    return None
                return {**head, "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": reason}]}

            return sse(rows, chunk, lambda: {**head, "choices": [], "usage": usage(rows, prompt_tokens)}
                       if include else None)
        out = await collect(request, rows)
        return {**head, "choices": [{"index": i, "text": t, "logprobs": None, "finish_reason": r}
                                    for i, (t, r) in enumerate(out)], "usage": usage(rows, prompt_tokens)}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        p = await body(request, ChatRequest)
        entry = entry_of(p.model, generate=True)
        try:  # the model's chat template, else the plain System/User/Assistant convention (lmlab.generate.chat)
            conv = render_chat(entry.path / "tokenizer", [m.model_dump(exclude_none=True) for m in p.messages])
        except LmlabError as e:
            raise ApiError(400, str(e), param="messages") from None
        gcfg = gen_config(p, conv.stop, p.max_completion_tokens if p.max_completion_tokens is not None
                          else p.max_tokens)
        prompt = conv.text
        rows = await start_rows(request, entry, [prompt], gcfg)
        prompt_tokens = len(entry.tokenizer.encode(prompt))
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        # lmlab_chat_template: "model" | "plain" (an extra field; OpenAI clients keep or ignore it)
        head = {"id": cid, "created": created, "model": entry.name, "lmlab_chat_template": conv.template}
        if p.stream:
            include = bool(p.stream_options and p.stream_options.include_usage)

            def chunk(i, text, reason, first=False):
                delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
                return {**head, "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": None if first else reason}]}

            return sse(rows, chunk, lambda: {**head, "object": "chat.completion.chunk", "choices": [],
                                             "usage": usage(rows, prompt_tokens)} if include else None)
        (text, reason), = await collect(request, rows)
        return {**head, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text.strip()},
                             "finish_reason": reason}], "usage": usage(rows, prompt_tokens)}

    @app.post("/v1/attention")
    async def attention(request: Request):
        from lmlab.viz.attention import attention_maps

        p = await body(request, AttentionRequest)
        entry = entry_of(p.model)
        try:
            maps = await batcher.call(lambda: attention_maps(entry.model, entry.tokenizer, p.text,
                                                             max_tokens=min(128, config.max_input_tokens)))
        except BusyError:
            raise busy() from None
        except LmlabError as e:
            raise ApiError(400, str(e), param="text") from None
        return {"model": entry.name, **maps.to_json()}

    async def run_task(task: str, name: str, call):
        entry = entry_of(name)
        try:
            from lmlab.tasks.pipeline import pipeline as make_pipeline
        except ImportError:
            raise ApiError(501, f"/v1/{task} needs lmlab.tasks (the applications), which this installation "
                           "does not have", "not_implemented") from None
        key = (task, entry.name)

        def load_and_run():
            if key not in pipelines:
                pipelines[key] = make_pipeline(TASKS[task], entry.path)
            return call(pipelines[key])

        try:
            result = await batcher.call(load_and_run)
        except BusyError:
            raise busy() from None
        except (LmlabError, KeyError) as e:
            if key not in pipelines:
                raise ApiError(404, f"model {entry.name!r} is not a {TASKS[task]} model ({e})", param="model",
                               code="wrong_task") from None
            raise ApiError(400, str(e)) from None
        return {"model": entry.name, "task": TASKS[task], "result": jsonable(result)}

    @app.post("/v1/classify")
    async def classify(request: Request):
        p = await body(request, TextTask)
        return await run_task("classify", p.model, lambda pipe: pipe(p.text))

    @app.post("/v1/answer")
    async def answer(request: Request):
        p = await body(request, AnswerRequest)
        return await run_task("answer", p.model, lambda pipe: pipe({"question": p.question, "context": p.context}))

    @app.post("/v1/summarize")
    async def summarize(request: Request):
        p = await body(request, TextTask)
        return await run_task("summarize", p.model, lambda pipe: pipe(p.text))

    @app.post("/v1/translate")
    async def translate(request: Request):
        p = await body(request, TextTask)
        return await run_task("translate", p.model, lambda pipe: pipe(p.text))

    return app


class Guard:
    """Pure ASGI middleware (so that disconnects still reach the endpoints): the API key on every
    route but ``/health``, the Content-Length precheck, and one log line per request (method,
    path, status, time — never a body or a header value)."""

    def __init__(self, app, config: ServeConfig, authorised):
        self.app, self.config, self.authorised = app, config, authorised

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, path = time.perf_counter(), scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        status = [0]

        async def send_logged(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        length = headers.get("content-length")
        cap = self.config.max_body_bytes
        try:
            if path not in PUBLIC and not self.authorised(headers):
                challenge = 'Basic realm="lmlab"' if path == "/" else "Bearer"
                await JSONResponse(error_body("missing or wrong API key (Authorization: Bearer KEY)",
                                              "authentication_error", code="invalid_api_key"), 401,
                                   headers={"WWW-Authenticate": challenge})(scope, receive, send_logged)
            elif length is not None and (not length.isdigit() or int(length) > cap):
                await JSONResponse(error_body(f"request body over max_body_bytes={cap}", code="body_too_large"),
                                   413)(scope, receive, send_logged)
            else:
                await self.app(scope, receive, send_logged)
        finally:
            log.info("%s %s %d %.1fms", scope.get("method"), path, status[0], 1000 * (time.perf_counter() - start))


def from_chunk(obj: Any) -> bytes:
    if obj is None:
        return b""
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"


def jsonable(x: Any) -> Any:
    """Pipeline outputs (dataclasses, numpy scalars, tuples) as JSON-ready values."""
    import dataclasses

    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item):
        return x.item()
    return x


def serve(model_dirs: list[str], host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_batch_size: int = 8, max_queue: int = 64, request_timeout_s: float = 120.0,
          max_tokens: int = 1024, log_prompts: bool = False, dtype: str = "float32") -> None:
    """CLI: ``lmlab serve MODEL_DIR... [--host H] [--port N] [--api-key KEY]`` (blocks until Ctrl-C)."""
    import uvicorn

    config = ServeConfig(host=host, port=port, api_key=api_key, max_batch_size=max_batch_size, max_queue=max_queue,
                         request_timeout_s=request_timeout_s, max_tokens=max_tokens, log_prompts=log_prompts)
    config.check_bind()
    registry = Registry.load(model_dirs, dtype=dtype)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = create_app(registry, config)
    print(f"lmlab serve: {', '.join(registry.names())} on http://{host}:{port}/ "
          f"({'API key required' if api_key else 'no API key'})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False,
                timeout_keep_alive=int(config.keep_alive_s), server_header=False)
