"""`HeadDeadlineH11`: uvicorn's h11 protocol with a deadline for each request head (slow loris).

uvicorn closes a keep-alive connection that stays silent ``timeout_keep_alive`` seconds after a
response, but it has no deadline for a request head: a client that opens a connection and sends
nothing, or one header byte every few seconds, holds that connection forever (every byte even
cancels the keep-alive timer). Here a connection must deliver a complete request head (request
line and headers) within ``header_timeout_s`` of being opened or of its previous response
ending; otherwise it gets ``408 Request Timeout`` and is closed, as nginx's
``client_header_timeout`` and Node's ``headersTimeout`` do. A slow body is the application's
to time out (``body_timeout_s``, `ServerState.read`).
"""

from __future__ import annotations

import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("lmlab.serve")
TIMEOUT_408 = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class HeadDeadlineH11(H11Protocol):
    header_timeout_s: float = 10.0  # set per server by `with_header_timeout`

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.head_deadline = None
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # a whole request head has been read
            self._disarm()

    def on_response_complete(self) -> None:
        self._arm()  # before the next (perhaps pipelined) head is handled, which disarms it
        super().on_response_complete()

    def _arm(self) -> None:
        self._disarm()
        self.head_deadline = self.loop.call_later(self.header_timeout_s, self._head_too_late)

    def _disarm(self) -> None:
        if getattr(self, "head_deadline", None) is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _head_too_late(self) -> None:
        self.head_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info("closed a connection whose request head took over header_timeout_s=%g", self.header_timeout_s)
            self.transport.write(TIMEOUT_408)
            self.transport.close()


def with_header_timeout(seconds: float) -> type[HeadDeadlineH11]:
    """The protocol class for one server (uvicorn takes a class, not an instance)."""
    return type("HeadDeadlineH11", (HeadDeadlineH11,), {"header_timeout_s": float(seconds)})
