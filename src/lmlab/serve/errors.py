"""`ApiError` and the handlers that turn every failure into OpenAI's error shape.

``{"error": {"message", "type", "param", "code"}}`` (`schema.error_body`): an `ApiError` keeps
its status and headers, a Starlette `HTTPException` (404 route, 405 method) its status, and
anything else is a 500 whose log line names the exception type only (never the input).
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from lmlab.serve.schema import error_body

log = logging.getLogger("lmlab.serve")


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers or {}


async def api_error(request: Request, e: ApiError) -> JSONResponse:
    return JSONResponse(error_body(e.message, e.kind, e.param, e.code), e.status, headers=e.headers)


async def http_error(request: Request, e: HTTPException) -> JSONResponse:
    return JSONResponse(error_body(str(e.detail), "invalid_request_error"), e.status_code)


async def internal_error(request: Request, e: Exception) -> JSONResponse:
    log.error("internal error on %s: %s", request.url.path, type(e).__name__)
    return JSONResponse(error_body("internal error", "server_error"), 500)


def add_error_handlers(app) -> None:
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
