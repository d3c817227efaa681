"""`ServeConfig`: where the server listens and every limit it enforces, validated when built.

Defaults are safe for a laptop: bind 127.0.0.1; a public bind (anything but 127.0.0.1,
localhost or ::1) is refused unless an API key is set (`check_bind`). Limits, each answered
with a 4xx/5xx that names it:

* ``max_body_bytes``  request body cap → 413 (Content-Length checked first, then counted).
* ``max_input_tokens`` prompt tokens → 400; ``max_tokens`` cap on ``max_tokens`` → 400.
* ``max_batch_size``  rows decoded together (dynamic batching; 1 = off) = requests in flight.
* ``max_queue``       requests waiting beyond those → 429 with ``Retry-After``.
* ``batch_window_ms`` how long the first request of a batch waits for companions.
* ``request_timeout_s`` wall time from arrival to the last token: a stream ends with
  ``finish_reason: "timeout"``, a non-streamed request gets 504.
* ``keep_alive_s``    idle keep-alive connections are closed after this (uvicorn's
  ``timeout_keep_alive``).
* ``header_timeout_s`` a request head (line and headers) must arrive within this, counted from
  the connection's opening or its previous response → 408 and closed (slow loris;
  `connection.HeadDeadlineH11`).
* ``body_timeout_s``  the whole body must arrive within this of the head → 408.
* ``max_connections`` open connections (idle ones included) beyond which a request is answered
  503 at once (uvicorn's ``limit_concurrency``); ``max_header_bytes`` caps a request head
  (uvicorn's ``h11_max_incomplete_event_size``; over it: 400). A public server should still sit
  behind a reverse proxy, which can limit connections per client.
* ``log_prompts``     off by default: logs carry method, path, status, model, token counts and
  timings, never prompts, outputs or keys.

The API key: ``--api-key KEY`` shows in ``ps`` and the shell history, so prefer the
``LMLAB_API_KEY`` environment variable or ``--api-key-file PATH`` (one line; the trailing
newline and surrounding spaces are stripped; a file that every user of the machine can read is
refused: ``chmod 600 PATH``). `api_key_from` picks one; the key is never printed or logged.

Web pages: a server bound to a loopback address answers only requests whose ``Host`` is a
loopback name or address (``localhost``, ``127.x.x.x``, ``[::1]``, with or without a port), so
that a page on another site cannot reach it through DNS rebinding (403); every POST must
declare ``Content-Type: application/json`` (415), which a cross-site form or a ``fetch``
without a CORS preflight cannot send; and no CORS header is sent unless ``cors_origins`` lists
the origin (``--cors-origin https://app.example``; then only that origin may call the API).
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from dataclasses import dataclass, field

from lmlab.config import check
from lmlab.errors import ConfigError

API_KEY_ENV = "LMLAB_API_KEY"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")  # scheme://host[:port], no path


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = field(default=None, repr=False)  # never in a log line or traceback
    max_body_bytes: int = 1 << 20  # 1 MiB of JSON is far more than any prompt a model here can take
    max_input_tokens: int = 2048
    max_tokens: int = 1024  # cap on a request's max_tokens
    max_batch_size: int = 8
    max_queue: int = 64
    batch_window_ms: float = 5.0
    request_timeout_s: float = 120.0
    keep_alive_s: float = 5.0
    header_timeout_s: float = 10.0  # a request head must arrive within this → 408, closed (slow loris)
    body_timeout_s: float = 30.0  # the whole body must arrive within this of the head → 408
    max_connections: int = 512  # open connections, idle ones included, beyond which a request gets 503
    max_header_bytes: int = 16 * 1024  # cap on a request head (line + headers) → 400
    retry_after_s: int = 1
    max_prompts: int = 16  # a completions request may carry a list of prompts
    log_prompts: bool = False
    cors_origins: list[str] = field(default_factory=list)  # origins whose pages may call the API

    def __post_init__(self) -> None:
        check(isinstance(self.host, str) and self.host != "", "host", "must be a host name or IP address")
        check(_int(self.port) and 0 <= self.port <= 65535, "port", f"must be in [0, 65535], got {self.port!r}")
        check(self.api_key is None or (isinstance(self.api_key, str) and len(self.api_key) >= 8), "api_key",
              "must be a string of at least 8 characters")
        for name, lo in [("max_body_bytes", 256), ("max_input_tokens", 1), ("max_tokens", 1), ("max_batch_size", 1),
                         ("max_queue", 0), ("retry_after_s", 1), ("max_prompts", 1),
                         ("max_connections", 1), ("max_header_bytes", 1024)]:
            v = getattr(self, name)
            check(_int(v) and v >= lo, name, f"must be an integer ≥ {lo}, got {v!r}")
        for name in ("batch_window_ms", "request_timeout_s", "keep_alive_s", "header_timeout_s", "body_timeout_s"):
            v = getattr(self, name)
            check(_num(v) and v >= 0, name, f"must be a finite number ≥ 0, got {v!r}")
        for name in ("request_timeout_s", "header_timeout_s", "body_timeout_s"):
            check(getattr(self, name) > 0, name, "must be > 0")
        check(isinstance(self.log_prompts, bool), "log_prompts", "must be true or false")
        check(isinstance(self.cors_origins, (list, tuple)), "cors_origins", "must be a list of origins")
        for origin in self.cors_origins:
            check(isinstance(origin, str) and bool(ORIGIN.match(origin)), "cors_origins",
                  f"{origin!r} is not an origin; give scheme://host[:port] such as http://localhost:5173 "
                  "(no path, no '*')")
        self.cors_origins = list(self.cors_origins)

    @property
    def public(self) -> bool:
        return not is_local(self.host)

    def check_bind(self) -> None:
        """Refuse a public bind without an API key."""
        if self.public and not self.api_key:
            raise ConfigError(f"host: {self.host!r} is reachable from other machines; pass --api-key KEY "
                              "(or bind 127.0.0.1)")


def is_local(host: str) -> bool:
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_local_host_header(value: str) -> bool:
    """A ``Host`` header naming this machine's loopback: ``localhost``, ``127.x.x.x`` or ``[::1]``,
    with or without ``:port`` (anything a DNS name could rebind to is refused)."""
    value = value.strip().lower()
    if value.startswith("["):  # [v6] or [v6]:port
        name, sep, port = value[1:].partition("]")
        if not sep or (port and not (port.startswith(":") and port[1:].isdigit())):
            return False
        version = 6
    else:
        name, sep, port = value.partition(":")
        if sep and not port.isdigit():
            return False
        if name == "localhost":
            return True
        version = 4
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    # a dotted quad in full: "127.1" is read as 127.0.0.1 by some clients and not by others
    return address.version == version and address.is_loopback and (version == 6 or name.count(".") == 3)


def api_key_from(flag: str | None, path: str | None, environ) -> str | None:
    """The API key: ``--api-key``, else ``--api-key-file``, else ``$LMLAB_API_KEY``, else none."""
    if flag is not None and path is not None:
        raise ConfigError("api_key: give one of --api-key and --api-key-file, not both")
    if flag is not None:
        return flag
    if path is not None:
        return read_key_file(path)
    return environ.get(API_KEY_ENV) or None


def read_key_file(path: str) -> str:
    """The key in `path` (one line, surrounding whitespace stripped); errors name the file, never the key."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such file (--api-key-file)")
    mode = os.stat(path).st_mode
    if os.name == "posix" and mode & stat.S_IROTH:
        raise ConfigError(f"{path}: every user of this machine can read this API key file "
                          f"(mode {stat.S_IMODE(mode):04o}); run chmod 600 {path}")
    try:
        with open(path, "rb") as f:
            key = f.read(4097).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the API key file is not UTF-8 text") from None
    if not key:
        raise ConfigError(f"{path}: the API key file is empty")
    if len(key) < 8 or len(key) > 4096 or any(c.isspace() or not c.isprintable() for c in key):
        raise ConfigError(f"{path}: the API key must be one line of 8 to 4096 printable characters without spaces")
    return key
