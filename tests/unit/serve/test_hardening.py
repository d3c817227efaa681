"""Hardening: bind, auth on every route, body cap, token caps, parameter fuzz, backpressure,
timeouts, client disconnects, model-name tricks, and logs without keys or prompts."""

import json
import logging
import math
import threading
import time

import httpx
import pytest

from tests.unit.serve.conftest import KEY, live_server

AUTH = {"Authorization": f"Bearer {KEY}"}


def post(url, path, body, headers=AUTH, timeout=30):
    return httpx.post(f"{url}{path}", headers=headers, json=body, timeout=timeout)


# -- bind ----------------------------------------------------------------------------------------

def test_default_bind_is_loopback_and_public_bind_needs_a_key():
    from lmlab.errors import ConfigError
    from lmlab.serve.limits import ServeConfig

    assert ServeConfig().host == "127.0.0.1" and not ServeConfig().public
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        ServeConfig(host=host).check_bind()
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org"):
        with pytest.raises(ConfigError, match="--api-key"):
            ServeConfig(host=host).check_bind()
        ServeConfig(host=host, api_key=KEY).check_bind()


def test_cli_refuses_public_bind_without_key(model_dir, capsys):
    from lmlab.cli import main

    assert main(["serve", str(model_dir), "--host", "0.0.0.0"]) == 2
    assert "--api-key" in capsys.readouterr().err


# -- auth ----------------------------------------------------------------------------------------

def test_key_guards_every_route_but_health(server):
    url, app = server
    routes = [(r.path, sorted(r.methods)[0]) for r in app.routes if hasattr(r, "methods")]
    assert {"/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/attention", "/"} <= {p for p, _ in routes}
    for path, method in routes:
        path = path.replace("{name}", "tiny")
        for headers in ({}, {"Authorization": "Bearer wrong-key-123"}, {"Authorization": KEY}):
            r = httpx.request(method, f"{url}{path}", headers=headers, json={}, timeout=10)
            if path == "/health":
                assert r.status_code == 200
            else:
                assert r.status_code == 401, (path, headers, r.status_code)
    assert httpx.get(f"{url}/nope", timeout=10).status_code == 401  # unknown routes too
    assert httpx.get(f"{url}/", auth=("any", KEY), timeout=10).status_code == 200  # browsers: Basic auth
    assert httpx.get(f"{url}/v1/models", headers=AUTH, timeout=10).status_code == 200


# -- body and token caps -------------------------------------------------------------------------

def test_body_cap_413(server):
    url, app = server
    cap = app.state.config.max_body_bytes
    big = {"model": "tiny", "prompt": "a" * (cap + 10)}
    assert post(url, "/v1/completions", big).status_code == 413

    def chunks():  # no Content-Length: the server counts
        yield json.dumps(big).encode()

    r = httpx.post(f"{url}/v1/completions", headers={**AUTH, "Content-Type": "application/json"}, content=chunks(),
                   timeout=30)
    assert r.status_code == 413


def test_prompt_and_max_tokens_caps(registry):
    with live_server(registry, max_input_tokens=20, max_tokens=50) as (url, _):
        r = post(url, "/v1/completions", {"model": "tiny", "prompt": "word " * 40}, headers={})
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        r = post(url, "/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 51}, headers={})
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
        r = post(url, "/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 50, "temperature": 0},
                 headers={})
        assert r.status_code == 200


BAD = [("temperature", math.nan), ("temperature", -1), ("temperature", "0.5"), ("temperature", math.inf),
       ("top_p", 0), ("top_p", 1.5), ("top_k", -3), ("top_k", 2.5), ("max_tokens", 0), ("max_tokens", -5),
       ("max_tokens", 10**12), ("max_tokens", "12"), ("max_tokens", True), ("seed", -1), ("seed", 2**70),
       ("stop", 5), ("stop", [""]), ("stop", ["x"] * 100), ("stream", "yes"), ("n", 3), ("model", 7),
       ("prompt", None), ("prompt", 5), ("prompt", [1, 2]), ("prompt", []), ("prompt", ["a"] * 1000),
       ("repetition_penalty", 0), ("logprobs", 3), ("echo", True), ("frequency_penalty", 0.5),
       ("unknown_field", 1), ("stream_options", {"x": 1}), ("temperature", 10**400), ("top_p", 10**400),
       ("seed", 10**400), ("max_tokens", 10**400), ("top_k", -(10**400)), ("repetition_penalty", 10**400)]


@pytest.mark.parametrize("field,value", BAD, ids=[f"{f}={v!r}"[:40] for f, v in BAD])
def test_bad_parameters_are_4xx(server, field, value):
    url, _ = server
    body = {"model": "tiny", "prompt": "hi", "max_tokens": 2, field: value}
    r = httpx.post(f"{url}/v1/completions", headers={**AUTH, "Content-Type": "application/json"},
                   content=json.dumps(body, allow_nan=True), timeout=30)  # NaN/Infinity as JS literals
    assert 400 <= r.status_code < 500, (field, value, r.status_code, r.text)
    assert r.json()["error"]["message"]


@pytest.mark.parametrize("body", [b"", b"not json", b"[" * 200_000, b'{"a":' * 100_000, b"[1,2]", b'{"model": "tiny"',
                                  b"\xff\xfe", b"null",
                                  json.dumps({"model": "tiny", "messages": []}).encode(),
                                  json.dumps({"model": "tiny",
                                              "messages": [{"role": "robot", "content": "x"}]}).encode(),
                                  json.dumps({"model": "tiny", "messages": [{"role": "user", "content": 3}]}).encode()])
def test_malformed_bodies_are_400(server, body):
    url, _ = server
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/attention", "/v1/classify"):
        r = httpx.post(f"{url}{path}", headers={**AUTH, "Content-Type": "application/json"}, content=body, timeout=30)
        assert r.status_code == 400, (path, body, r.status_code, r.text)


@pytest.mark.parametrize("name", ["../tiny", "tiny/../tiny", "/etc/passwd", "..", ".", "tiny/", "%2e%2e/tiny",
                                  "TINY", " tiny", "tiny\x00", "~/tiny", "C:\\tiny"])
def test_model_names_are_an_allow_list(server, name):
    url, _ = server
    r = post(url, "/v1/completions", {"model": name, "prompt": "hi", "max_tokens": 2})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert post(url, "/v1/attention", {"model": name, "text": "hi"}).status_code == 404


def test_model_name_arguments_are_checked(model_dir):
    from lmlab.errors import ConfigError
    from lmlab.serve.registry import parse_model_args

    assert parse_model_args([f"gpt={model_dir}"]) == [("gpt", model_dir)]
    with pytest.raises(ConfigError, match="two models"):
        parse_model_args([str(model_dir), str(model_dir)])
    with pytest.raises(ConfigError, match="not a model directory"):
        parse_model_args(["/nonexistent/dir"])


# -- backpressure, timeouts, disconnects ---------------------------------------------------------

def test_backpressure_429_with_retry_after(registry, slow_model):
    slow_model["delay"] = 0.05
    with live_server(registry, max_batch_size=1, max_queue=1, batch_window_ms=0) as (url, app):
        results = []

        def one():
            results.append(post(url, "/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 6}, {}))

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in results)
        assert codes.count(200) >= 2 and codes.count(429) >= 1, codes
        assert set(codes) <= {200, 429}
        busy = next(r for r in results if r.status_code == 429)
        assert int(busy.headers["Retry-After"]) >= 1
        assert busy.json()["error"]["code"] == "queue_full"
        time.sleep(0.1)
        assert app.state.batcher.in_flight == 0  # nothing leaked


def test_timeout_504_and_stream_finish_reason(registry, slow_model):
    slow_model["delay"] = 0.05
    with live_server(registry, request_timeout_s=0.3) as (url, app):
        r = post(url, "/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 200}, {})
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        before = app.state.batcher.steps
        with httpx.stream("POST", f"{url}/v1/completions", timeout=30,
                          json={"model": "tiny", "prompt": "hi", "max_tokens": 200, "stream": True}) as s:
            events = [json.loads(ln[6:]) for ln in s.iter_lines() if ln.startswith("data: {")]
        assert events[-1]["choices"][0]["finish_reason"] == "timeout"
        assert app.state.batcher.steps - before < 20  # 0.3 s at ≥ 0.05 s a step, not 200 steps


def test_disconnect_mid_stream_stops_decoding(registry, slow_model):
    slow_model["delay"] = 0.01
    with live_server(registry) as (url, app):
        batcher = app.state.batcher
        before = batcher.steps
        with httpx.stream("POST", f"{url}/v1/completions", timeout=30,
                          json={"model": "tiny", "prompt": "hi", "max_tokens": 200, "stream": True,
                                "temperature": 0.9, "seed": 1}) as s:
            got = 0
            for line in s.iter_lines():
                got += line.startswith("data: {")
                if got >= 4:
                    break  # leave mid-stream: the connection is closed here
        deadline = time.monotonic() + 5
        while batcher.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
        assert batcher.in_flight == 0
        steps = batcher.steps - before
        time.sleep(0.3)
        assert batcher.steps - before == steps  # nothing more is decoded
        assert steps < 60, steps  # far fewer than the 200 tokens asked for


def test_disconnect_drops_only_that_row(registry, slow_model):
    """Two clients batched together: one leaves, the other still gets its full completion."""
    slow_model["delay"] = 0.01
    with live_server(registry, batch_window_ms=200) as (url, app):
        result = {}

        def stay():
            result["r"] = post(url, "/v1/completions", {"model": "tiny", "prompt": "The cat", "max_tokens": 30,
                                                        "temperature": 0}, {})

        t = threading.Thread(target=stay)
        t.start()
        with httpx.stream("POST", f"{url}/v1/completions", timeout=30,
                          json={"model": "tiny", "prompt": "hi", "max_tokens": 200, "stream": True}) as s:
            for i, _ in enumerate(s.iter_lines()):
                if i >= 3:
                    break
        t.join()
        assert app.state.batcher.batches == 1  # they were decoded as one batch
        r = result["r"]
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 30


# -- logs ----------------------------------------------------------------------------------------

def test_logs_hold_no_keys_or_prompts(registry, caplog):
    secret_prompt = "my-secret-prompt-xyzzy"
    with caplog.at_level(logging.DEBUG):
        with live_server(registry, api_key=KEY) as (url, _):
            post(url, "/v1/completions", {"model": "tiny", "prompt": secret_prompt, "max_tokens": 2})
            post(url, "/v1/completions", {"model": "tiny", "prompt": secret_prompt, "max_tokens": 2},
                 headers={"Authorization": "Bearer wrong-key-abcdef"})
            post(url, "/v1/completions", {"model": "tiny", "prompt": secret_prompt, "temperature": -1})
    text = caplog.text
    assert "/v1/completions" in text  # requests are logged...
    assert secret_prompt not in text and KEY not in text and "wrong-key-abcdef" not in text  # ...without secrets


def test_client_gone_before_a_non_streamed_answer_stops_decoding(registry, slow_model):
    slow_model["delay"] = 0.02
    with live_server(registry) as (url, app):
        batcher = app.state.batcher
        before = batcher.steps
        with pytest.raises(httpx.ReadTimeout):
            post(url, "/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 200}, {}, timeout=0.4)
        deadline = time.monotonic() + 5
        while batcher.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
        steps = batcher.steps - before
        assert batcher.in_flight == 0 and steps < 100, steps  # 200 steps would take ≥ 4 s
