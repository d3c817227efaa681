"""``GET /health``, ``GET /`` (the playground page), ``GET /v1/models`` and ``GET /v1/models/{name}``."""

from __future__ import annotations

from importlib import resources

from fastapi import Request
from fastapi.responses import HTMLResponse

from lmlab.serve.state import ServerState


async def health(state: ServerState, request: Request):
    return {"status": "ok", "models": len(state.registry.entries)}


async def playground(state: ServerState, request: Request):
    return HTMLResponse(resources.files("lmlab.serve").joinpath("playground.html").read_text("utf-8"))


async def models(state: ServerState, request: Request):
    return {"object": "list", "data": [e.card() for e in state.registry.entries.values()]}


async def model_card(state: ServerState, request: Request):
    return state.entry(request.path_params["name"]).card()


ROUTES = [("GET", "/health", health), ("GET", "/", playground), ("GET", "/v1/models", models),
          ("GET", "/v1/models/{name}", model_card)]
