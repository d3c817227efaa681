"""`Guard`: the ASGI middleware in front of every route.

Pure ASGI (not Starlette's ``BaseHTTPMiddleware``), so that a client's disconnect still reaches
the endpoints. It checks the API key on every route but ``/health`` (``Authorization: Bearer
KEY``; HTTP Basic with the key as password too, so that a browser can open the playground),
refuses a declared ``Content-Length`` over the cap before any byte of the body is read, and
writes one log line per request: method, path, status, time — never a body or a header value.
"""

from __future__ import annotations

import base64
import hmac
import logging
import time

from fastapi.responses import JSONResponse

from lmlab.serve.limits import ServeConfig
from lmlab.serve.schema import error_body

log = logging.getLogger("lmlab.serve")
PUBLIC = {"/health"}


def authorised(config: ServeConfig, headers: dict[str, str]) -> bool:
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


class Guard:
    def __init__(self, app, config: ServeConfig):
        self.app, self.config = app, config

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
            if path not in PUBLIC and not authorised(self.config, headers):
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
