"""Connections that hold the server without asking anything: a request head trickled a byte at a
time (slow loris) or never sent is closed at ``header_timeout_s`` with a 408, a body trickled past
``body_timeout_s`` is a 408, and a flood of idle connections past ``max_connections`` gets 503s
until they are closed — after which the server answers again. Servers run as `lmlab serve` runs
them (`server_config`), on 127.0.0.1 only."""

import socket
import time

import httpx
import pytest

from tests.unit.serve.conftest import live_server


def port_of(url):
    return int(url.rsplit(":", 1)[1])


def closed_after(sock, send: bytes, every_s: float, limit_s: float):
    """Send `send` a byte every `every_s` seconds; (seconds until the server closed, bytes it sent back)."""
    sock.setblocking(False)
    start, got, i = time.monotonic(), b"", 0
    while time.monotonic() - start < limit_s:
        if i < len(send):
            try:
                sock.send(send[i:i + 1])
                i += 1
            except OSError:
                return time.monotonic() - start, got
        deadline = time.monotonic() + every_s
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            except OSError:
                return time.monotonic() - start, got
            if not chunk:
                return time.monotonic() - start, got
            got += chunk
    return None, got


@pytest.fixture(scope="module")
def strict(registry):
    with live_server(registry, header_timeout_s=1.0, body_timeout_s=1.0, keep_alive_s=5) as s:
        yield s


def test_slow_loris_head_is_closed_with_408(strict):
    url, _ = strict
    head = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port_of(url)}\r\nX-Pad: {'a' * 200}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port_of(url))) as sock:
        after, got = closed_after(sock, head, 0.1, 5)
    assert after is not None and 0.9 < after < 3.0, after
    assert got.startswith(b"HTTP/1.1 408 ")


def test_a_connection_that_sends_nothing_is_closed(strict):
    url, _ = strict
    with socket.create_connection(("127.0.0.1", port_of(url))) as sock:
        after, _ = closed_after(sock, b"", 0.05, 5)
    assert after is not None and after < 3.0, after


def test_keep_alive_then_trickle_is_closed(strict):
    """After a response, the next head has the same deadline (a trickle resets no timer)."""
    url, _ = strict
    port = port_of(url)
    head = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head)
        time.sleep(0.2)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        after, _ = closed_after(sock, head * 10, 0.1, 5)
    assert after is not None and after < 3.0, after


def test_prompt_heads_and_pipelined_requests_are_unaffected(strict):
    url, _ = strict
    port = port_of(url)
    head = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head * 3)
        sock.settimeout(3)
        got = b""
        while got.count(b"HTTP/1.1 200 ") < 3:
            got += sock.recv(4096)
    with httpx.Client(timeout=10) as client:  # one keep-alive connection, requests 0.5 s apart
        for _ in range(4):
            assert client.get(f"{url}/health").status_code == 200
            time.sleep(0.5)


def test_slow_body_is_408(strict):
    url, _ = strict
    port = port_of(url)
    body = b'{"model": "tiny", "prompt": "hi", "max_tokens": 2}'
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head)
        after, got = closed_after(sock, body, 0.1, 5)
    assert got.startswith(b"HTTP/1.1 408 "), got[:200]
    assert b"body_timeout_s" in got


def test_connection_flood_gets_503_then_recovers(registry):
    with live_server(registry, header_timeout_s=1.0, max_connections=32) as (url, _):
        idle = [socket.create_connection(("127.0.0.1", port_of(url))) for _ in range(40)]
        try:
            time.sleep(0.2)
            r = httpx.get(f"{url}/health", timeout=5)
            assert r.status_code == 503  # uvicorn's answer past limit_concurrency
            time.sleep(1.5)  # the idle ones are closed at header_timeout_s
            assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        finally:
            for s in idle:
                s.close()


def test_serve_starts_uvicorn_with_these_limits(model_dir, monkeypatch):
    import uvicorn

    from lmlab.cli import main
    from lmlab.serve.connection import HeadDeadlineH11

    seen = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **kw: seen.update(config=self.config))
    assert main(["serve", str(model_dir)]) == 0
    config = seen["config"]
    assert issubclass(config.http, HeadDeadlineH11) and config.http.header_timeout_s == 10.0
    assert config.limit_concurrency == 512 and config.timeout_keep_alive == 5
    assert config.h11_max_incomplete_event_size <= 64 * 1024 and config.host == "127.0.0.1"
