"""Serving: an OpenAI-compatible HTTP server with dynamic batching, task endpoints, attention
maps and a web playground (see `lmlab.serve.app`). Needs the ``serve`` extra (fastapi, uvicorn).

    limits.py    ServeConfig: bind address, API key, every limit
    schema.py    request/response bodies (pydantic), the chat prompt convention
    registry.py  the allow-list of models, loaded at startup
    batcher.py   the model thread: dynamic batching, backpressure, cancellation, timeouts
    state.py     ServerState: what the route handlers share (models, limits, model thread)
    errors.py    ApiError and OpenAI-shaped error responses
    guard.py     the middleware in front of every route: Host, CORS, API key, content type, body size, log
    connection.py  uvicorn's h11 protocol with a deadline for request heads (slow loris)
    routes/      the handlers, one module per family (info, completions, chat, attention, tasks)
    app.py       `create_app` (wiring) and the uvicorn runner (`serve`)
    playground.html  the single-page playground served at /
"""

from lmlab.serve.limits import ServeConfig

__all__ = ["ServeConfig"]
