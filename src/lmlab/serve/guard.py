"""`Guard`: the ASGI middleware in front of every route.

Pure ASGI (not Starlette's ``BaseHTTPMiddleware``), so that a client's disconnect still reaches
the endpoints. In this order, it

1. refuses a ``Host`` that is not a loopback name when the server is bound to a loopback
   address (403 ``host_not_allowed``: DNS rebinding; see `limits`);
2. answers CORS preflights and adds CORS headers for the origins in ``cors_origins`` only
   (Starlette's ``CORSMiddleware``; with none, no CORS header at all);
3. checks the API key on every route but ``/health`` (``Authorization: Bearer KEY``; HTTP Basic
   with the key as password too, so that a browser can open the playground);
4. refuses a POST whose ``Content-Type`` is not ``application/json`` (415);
5. refuses a declared ``Content-Length`` over the cap before any byte of the body is read (413);

and writes one log line per request: method, path, status, time — never a body or a header value.
"""

from __future__ import annotations

import base64
import hmac
import logging
import time

from fastapi.responses import JSONResponse
from starlette.middleware.cors import CORSMiddleware

from lmlab.serve.limits import ServeConfig, is_local_host_header
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
        self.check_host = not config.public
        self.next = self.checked
        if config.cors_origins:
            self.next = CORSMiddleware(self.checked, allow_origins=config.cors_origins, allow_methods=["GET", "POST"],
                                       allow_headers=["authorization", "content-type"], max_age=600)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, path = time.perf_counter(), scope["path"]
        status = [0]

        async def send_logged(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"host"), None)
            if self.check_host and host is not None and not is_local_host_header(host):
                await JSONResponse(error_body(
                    "this server is bound to a loopback address and answers only requests whose Host header is "
                    "localhost, 127.x.x.x or [::1]; bind another address with --host (and --api-key) to serve "
                    "other names", code="host_not_allowed"), 403)(scope, receive, send_logged)
            else:
                await self.next(scope, receive, send_logged)
        finally:
            log.info("%s %s %d %.1fms", scope.get("method"), path, status[0], 1000 * (time.perf_counter() - start))

    async def checked(self, scope, receive, send):
        """Steps 3–5 of the module docstring, then the route."""
        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length")
        cap = self.config.max_body_bytes
        media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if path not in PUBLIC and not authorised(self.config, headers):
            challenge = 'Basic realm="lmlab"' if path == "/" else "Bearer"
            await JSONResponse(error_body("missing or wrong API key (Authorization: Bearer KEY)",
                                          "authentication_error", code="invalid_api_key"), 401,
                               headers={"WWW-Authenticate": challenge})(scope, receive, send)
        elif scope["method"] == "POST" and media_type != "application/json":
            await JSONResponse(error_body(f"POST bodies must be sent as Content-Type: application/json "
                                          f"(got {media_type[:60] or 'none'!r})", code="unsupported_media_type"),
                               415)(scope, receive, send)
        elif length is not None and (not length.isdigit() or int(length) > cap):
            await JSONResponse(error_body(f"request body over max_body_bytes={cap}", code="body_too_large"),
                               413)(scope, receive, send)
        else:
            await self.app(scope, receive, send)
