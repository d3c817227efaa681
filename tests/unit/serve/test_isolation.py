"""One bad request never fails the requests batched with it: sampling values that a float32
cannot hold are refused before batching (400), an encoder–decoder prompt longer than the
model's context is a 400, and an exception while decoding one row ends that row alone (its
neighbours, streamed or not, finish with exactly the text they would have had alone)."""

import json
import threading
import time

import httpx
import pytest
import torch

from tests.unit.serve.conftest import live_server

UNHOLDABLE = [("temperature", 1e-300), ("temperature", 1e-50), ("temperature", 1e-9), ("temperature", 1e300),
              ("temperature", 1e39), ("repetition_penalty", 1e-300), ("repetition_penalty", 1e-40),
              ("repetition_penalty", 1e300), ("repetition_penalty", 1e39), ("top_p", 1e-300)]


def post(url, body, timeout=60):
    return httpx.post(f"{url}/v1/completions", json=body, timeout=timeout)


def together(*calls):
    """Run the calls at once (threads); their results in order."""
    out = [None] * len(calls)

    def run(i, fn):
        out[i] = fn()

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


@pytest.mark.parametrize("field,value", UNHOLDABLE, ids=[f"{f}={v:g}" for f, v in UNHOLDABLE])
def test_values_a_float32_cannot_hold_are_400(registry, field, value):
    with live_server(registry) as (url, _):
        r = post(url, {"model": "tiny", "prompt": "hi", "max_tokens": 3, field: value})
    assert r.status_code == 400, (field, value, r.status_code, r.text)
    assert r.json()["error"]["param"] == field


def test_small_but_holdable_values_still_sample(registry):
    with live_server(registry) as (url, _):
        for body in ({"temperature": 0.01}, {"temperature": 100}, {"repetition_penalty": 0.01},
                     {"repetition_penalty": 100}, {"temperature": 0.05, "repetition_penalty": 50, "top_p": 1e-9}):
            r = post(url, {"model": "tiny", "prompt": "hi", "max_tokens": 4, "seed": 3, **body})
            assert r.status_code == 200, (body, r.text)


def test_a_bad_temperature_does_not_fail_its_batch(registry):
    with live_server(registry, batch_window_ms=300) as (url, _):
        bad, good = together(lambda: post(url, {"model": "tiny", "prompt": "x", "max_tokens": 8,
                                                "temperature": 1e-300}),
                             lambda: post(url, {"model": "tiny", "prompt": "The cat", "max_tokens": 8,
                                                "temperature": 0.7, "seed": 5}))
    assert bad.status_code == 400 and good.status_code == 200, (bad.text, good.text)
    assert good.json()["usage"]["completion_tokens"] == 8


@pytest.fixture()
def failing_row(monkeypatch):
    """Sampling fails from the 4th step in any batch that holds a row with seed 13."""
    from lmlab.generate.sampling import Sampler

    original = Sampler.__call__

    def call(self, logits):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls >= 4 and any(c.seed == 13 for c in self.configs):
            raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
        return original(self, logits)

    monkeypatch.setattr(Sampler, "__call__", call)


def stream_text(url, body):
    with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=60) as s:
        events = [json.loads(ln[6:]) for ln in s.iter_lines() if ln.startswith("data: {")]
    text = "".join(c["text"] for e in events for c in e.get("choices", []))
    reasons = [c["finish_reason"] for e in events for c in e.get("choices", []) if c["finish_reason"]]
    return text, reasons, [e for e in events if "error" in e]


def test_an_exception_in_one_row_ends_that_row_alone(registry, failing_row):
    greedy = {"model": "tiny", "prompt": "The cat sat", "max_tokens": 20, "temperature": 0}
    sampled = {"model": "tiny", "prompt": "你好", "max_tokens": 20, "temperature": 0.9}  # no seed
    bad = {"model": "tiny", "prompt": "hi", "max_tokens": 20, "temperature": 0.8, "seed": 13}
    with live_server(registry, batch_window_ms=400) as (url, app):
        alone = post(url, greedy).json()["choices"][0]["text"]
        batches = app.state.batcher.batches
        r_bad, r_greedy, r_sampled, (s_text, s_reasons, s_errors) = together(
            lambda: post(url, bad), lambda: post(url, greedy), lambda: post(url, sampled),
            lambda: stream_text(url, greedy))
        assert app.state.batcher.batches - batches >= 2  # they shared a batch, then were decoded again
        assert r_bad.status_code == 500 and r_bad.json()["error"]["type"] == "server_error"
        assert r_greedy.status_code == 200 and r_greedy.json()["choices"][0]["text"] == alone
        assert r_greedy.json()["usage"]["completion_tokens"] == 20
        assert r_sampled.status_code == 200 and r_sampled.json()["usage"]["completion_tokens"] == 20
        assert s_text == alone and s_reasons == ["length"] and not s_errors  # no piece sent twice
        _, _, bad_errors = stream_text(url, bad)  # streamed, the bad row ends with an error event
        assert bad_errors
        deadline = time.monotonic() + 5  # the worker counts a batch done just after its last event
        while app.state.batcher.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
        assert app.state.batcher.in_flight == 0


@pytest.fixture(scope="module")
def seq2seq_registry(model_dir, tmp_path_factory):
    from lmlab.model import Transformer, preset, save_model
    from lmlab.serve.registry import Registry
    from lmlab.tokenizer.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("s2s")
    vocab = Tokenizer.load(model_dir / "tokenizer").vocab_size
    torch.manual_seed(0)
    cfg = preset("transformer-tiny", vocab_size=vocab, d_model=32, n_heads=2, n_layers=1, d_ff=40, max_seq_len=24,
                 dropout=0.0, attn_dropout=0.0, pad_token_id=0)
    save_model(Transformer(cfg).eval(), root / "s2s", tokenizer_dir=model_dir / "tokenizer")
    return Registry.load([str(root / "s2s")])


def test_seq2seq_prompt_longer_than_the_context_is_400_and_alone(seq2seq_registry):
    long = "the cat sat on the mat " * 20
    with live_server(seq2seq_registry, batch_window_ms=300) as (url, _):
        r_long, r_ok = together(lambda: post(url, {"model": "s2s", "prompt": long, "max_tokens": 5}),
                                lambda: post(url, {"model": "s2s", "prompt": "the cat", "max_tokens": 5,
                                                   "temperature": 0}))
    assert r_long.status_code == 400 and r_long.json()["error"]["code"] == "context_length_exceeded", r_long.text
    assert r_ok.status_code == 200, r_ok.text


def test_a_row_decoded_again_sends_only_what_is_new():
    import asyncio

    from lmlab.serve.batcher import Diverged, Row

    loop = asyncio.new_event_loop()
    try:
        row = Row(None, "p", None, 0.0, loop, sent="你好 wor", redone="")
        row.deliver("你好", None)
        row.deliver(" w", None)
        row.deliver("orld", None)
        row.deliver("!", "length")
        loop.run_until_complete(asyncio.sleep(0))
        got = [row.events.get_nowait() for _ in range(row.events.qsize())]
        assert got == [("delta", "ld", None), ("delta", "!", "length")] and row.sent == "你好 world!"
        other = Row(None, "p", None, 0.0, loop, sent="abc", redone="")
        with pytest.raises(Diverged):
            other.deliver("abX", None)
        short = Row(None, "p", None, 0.0, loop, sent="abc", redone="")
        with pytest.raises(Diverged):
            short.deliver("ab", "stop")
        late = Row(None, "p", None, 0.0, loop, sent="abc", redone="a")
        late.deliver("", "timeout")
        loop.run_until_complete(asyncio.sleep(0))
        assert late.events.get_nowait() == ("delta", "", "timeout")
    finally:
        loop.close()
