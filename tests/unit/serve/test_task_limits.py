"""Task and attention endpoints live under the limits of completions: a cap on the texts of one
request, the request timeout (504, and the model thread is not held past it), the end of the
work when the client leaves, and backpressure (429 with Retry-After). Task pipelines are stood
in for by a module whose model takes a set time per text."""

import sys
import threading
import time
import types

import httpx
import pytest

from tests.unit.serve.conftest import live_server


@pytest.fixture()
def slow_pipeline(monkeypatch):
    """`lmlab.tasks.pipeline` stand-in: every text takes state["delay"] seconds; state["texts"] counts them."""
    state = {"delay": 0.0, "texts": 0}

    def pipeline(task, model_dir):
        def run(inputs):
            items = [inputs] if isinstance(inputs, (str, dict)) else list(inputs)
            out = []
            for _ in items:
                time.sleep(state["delay"])
                state["texts"] += 1
                out.append({"label": "positive", "summary": "s", "answer": "a"})
            return out[0] if isinstance(inputs, (str, dict)) else out
        return run

    fake = types.ModuleType("lmlab.tasks.pipeline")
    fake.pipeline = pipeline
    monkeypatch.setitem(sys.modules, "lmlab.tasks", types.ModuleType("lmlab.tasks"))
    monkeypatch.setitem(sys.modules, "lmlab.tasks.pipeline", fake)
    return state


def post(url, path, body, timeout=60):
    return httpx.post(f"{url}{path}", json=body, timeout=timeout)


def idle(batcher, seconds=5):
    deadline = time.monotonic() + seconds
    while batcher.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    return batcher.in_flight == 0


def test_many_texts_are_refused_before_any_work(registry, slow_pipeline):
    with live_server(registry) as (url, app):
        for path in ("/v1/summarize", "/v1/classify", "/v1/translate"):
            r = post(url, path, {"model": "tiny", "text": ["a"] * 200_000})
            assert r.status_code == 400 and r.json()["error"]["param"] == "text", (path, r.text)
            assert r.status_code == 400 and post(url, path, {"model": "tiny", "text": []}).status_code == 400
        cap = app.state.config.max_prompts
        assert post(url, "/v1/summarize", {"model": "tiny", "text": ["a"] * (cap + 1)}).status_code == 400
        r = post(url, "/v1/summarize", {"model": "tiny", "text": ["a"] * cap})
        assert r.status_code == 200 and len(r.json()["result"]) == cap
        assert slow_pipeline["texts"] == cap


def test_texts_over_the_token_cap_are_400(registry, slow_pipeline):
    with live_server(registry, max_input_tokens=30) as (url, _):
        long = "word " * 100
        for path, body in [("/v1/classify", {"text": long}), ("/v1/summarize", {"text": ["ok", long]}),
                           ("/v1/answer", {"question": "q", "context": long}), ("/v1/attention", {"text": long})]:
            r = post(url, path, {"model": "tiny", **body})
            if path == "/v1/attention":
                assert r.status_code == 200  # the heatmap shows the first tokens only
                continue
            assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", (path, r.text)
        assert slow_pipeline["texts"] == 0


def test_task_timeout_is_504_and_frees_the_model_thread(registry, slow_pipeline):
    slow_pipeline["delay"] = 0.2
    with live_server(registry, request_timeout_s=0.5, max_batch_size=2) as (url, app):
        start = time.monotonic()
        r = post(url, "/v1/summarize", {"model": "tiny", "text": ["a"] * 16})  # 3.2 s of work
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout", r.text
        assert time.monotonic() - start < 2.0
        assert idle(app.state.batcher)
        assert slow_pipeline["texts"] < 12  # the texts left when time ran out were not run
        r = post(url, "/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 3})
        assert r.status_code == 200, r.text


def test_attention_timeout_is_504(registry, slow_model):
    slow_model["delay"] = 2.0
    with live_server(registry, request_timeout_s=0.3) as (url, app):
        start = time.monotonic()
        r = post(url, "/v1/attention", {"model": "tiny", "text": "the cat"})
        assert r.status_code == 504 and time.monotonic() - start < 1.5, r.text
        assert idle(app.state.batcher)


def test_client_gone_stops_the_task(registry, slow_pipeline):
    slow_pipeline["delay"] = 0.1
    with live_server(registry, max_batch_size=2) as (url, app):
        with pytest.raises(httpx.ReadTimeout):
            post(url, "/v1/classify", {"model": "tiny", "text": ["a"] * 16}, timeout=0.35)
        assert idle(app.state.batcher)
        done = slow_pipeline["texts"]
        time.sleep(0.3)
        assert slow_pipeline["texts"] == done < 12


def test_task_backpressure_429(registry, slow_pipeline):
    slow_pipeline["delay"] = 0.05
    with live_server(registry, max_batch_size=1, max_queue=2) as (url, app):
        results = []

        def one():
            results.append(post(url, "/v1/classify", {"model": "tiny", "text": ["a", "b"]}))

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in results)
        assert set(codes) <= {200, 429} and codes.count(200) >= 1 and codes.count(429) >= 1, codes
        busy = next(r for r in results if r.status_code == 429)
        assert int(busy.headers["Retry-After"]) >= 1 and busy.json()["error"]["code"] == "queue_full"
        assert idle(app.state.batcher)
