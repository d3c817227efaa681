"""The HTTP server: an OpenAI-compatible API, task endpoints, attention maps and the playground.

    lmlab serve out/gpt out/sentiment --port 8000 [--host 0.0.0.0 --api-key-file PATH]

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
parameters, 401 auth, 403 a foreign ``Host`` on a loopback bind, 404 unknown model or route,
408 a body slower than ``body_timeout_s``, 413 body too large, 415 a POST that is not
``application/json``, 429 queue full (with ``Retry-After``), 499 client gone (never read),
503 shutting down or too many connections, 504 timeout (non-streamed). A request head slower
than ``header_timeout_s`` gets 408 and its connection is closed. Limits live in
`limits.ServeConfig`; `server_config` is how `serve` runs uvicorn (a benchmark can start the
same server with it).

Each route is a plain function ``handler(state, request)`` in `lmlab.serve.routes`; `create_app`
only wires them to one `ServerState` behind the `Guard` middleware.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request

from lmlab.serve.batcher import Batcher
from lmlab.serve.errors import add_error_handlers
from lmlab.serve.guard import Guard
from lmlab.serve.limits import ServeConfig, api_key_from
from lmlab.serve.registry import Registry
from lmlab.serve.routes import ROUTES
from lmlab.serve.state import ServerState


def create_app(registry: Registry, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI application over loaded models (`Registry.load`): the routes of `lmlab.serve.routes`
    over one `ServerState`, behind the `Guard`."""
    config = config or ServeConfig()
    state = ServerState(registry, config, Batcher(config.max_batch_size, config.max_queue, config.batch_window_ms))
    app = FastAPI(title="lmlab", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state
    app.state.registry, app.state.config, app.state.batcher = registry, config, state.batcher
    app.router.on_shutdown.append(state.batcher.stop)
    app.add_middleware(Guard, config=config)
    add_error_handlers(app)
    for method, path, handler in ROUTES:
        app.add_api_route(path, bind(handler, state), methods=[method], name=handler.__name__)
    return app


def bind(handler, state: ServerState):
    """``handler(state, request)`` as a FastAPI endpoint ``(request)``."""
    async def endpoint(request: Request):
        return await handler(state, request)

    return endpoint


def serve(model_dirs: list[str], host: str | None = None, port: int | None = None, api_key: str | None = None,
          api_key_file: str | None = None, max_batch_size: int | None = None, max_queue: int | None = None,
          request_timeout_s: float | None = None, max_tokens: int | None = None, log_prompts: bool = False,
          dtype: str = "float32", cors_origin: list[str] | None = None) -> None:
    """CLI: ``lmlab serve MODEL_DIR... [--host H] [--port N] [--api-key-file PATH]`` (blocks until Ctrl-C).

    A limit left None keeps `ServeConfig`'s default. The key: ``--api-key``, ``--api-key-file`` or
    ``$LMLAB_API_KEY`` (`limits.api_key_from`)."""
    import os

    import uvicorn

    api_key = api_key_from(api_key, api_key_file, os.environ)
    flags = {"host": host, "port": port, "max_batch_size": max_batch_size, "max_queue": max_queue,
             "request_timeout_s": request_timeout_s, "max_tokens": max_tokens}
    config = ServeConfig(api_key=api_key, log_prompts=log_prompts, cors_origins=cors_origin or [],
                         **{k: v for k, v in flags.items() if v is not None})
    config.check_bind()
    registry = Registry.load(model_dirs, dtype=dtype)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = create_app(registry, config)
    print(f"lmlab serve: {', '.join(registry.names())} on http://{config.host}:{config.port}/ "
          f"({'API key required' if api_key else 'no API key'})", flush=True)
    uvicorn.Server(server_config(app, config)).run()


def server_config(app: FastAPI, config: ServeConfig, log_level: str = "info"):
    """The uvicorn configuration `lmlab serve` runs `app` with: the bind of `config` and its
    connection limits (head deadline, keep-alive, connection and head-size caps)."""
    import uvicorn

    from lmlab.serve.connection import with_header_timeout

    return uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level, access_log=False,
                          server_header=False, http=with_header_timeout(config.header_timeout_s),
                          timeout_keep_alive=max(1, round(config.keep_alive_s)),
                          limit_concurrency=config.max_connections,
                          h11_max_incomplete_event_size=config.max_header_bytes, lifespan="on")
