"""Malformed input is never a 5xx: property-based requests (hypothesis) against a live server on
127.0.0.1 — JSON bodies mixing every field with values of every type and size, raw bytes with
any content type, odd methods and paths — each answered below 500, and the server still healthy
after them all. Generation is kept cheap (max_tokens ≤ 4, short prompts) so that the few hundred
cases run in seconds."""

import json

import httpx
import pytest

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.unit.serve.conftest import live_server  # noqa: E402

PATHS = ["/v1/completions", "/v1/chat/completions", "/v1/attention", "/v1/classify", "/v1/answer",
         "/v1/summarize", "/v1/translate"]
FIELDS = ["model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
          "repetition_penalty", "stop", "seed", "stream", "stream_options", "n", "user", "presence_penalty",
          "frequency_penalty", "logprobs", "echo", "best_of", "suffix", "text", "question", "context", "role",
          "content"]
SETTINGS = settings(max_examples=80, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

texts = st.one_of(st.text(max_size=20), st.sampled_from(["tiny", "", " ", "\x00", "\ud800", "你好", "🙂" * 5,
                                                        "a" * 300, "../tiny", "\nUser:"]))
numbers = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, -1, 1e-300, 1e300, 5e-324, 2**63, 2**63 - 1, -0.0, 0.5, 100, 1e-45]))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5),
                                                                       inner, max_size=4)), max_leaves=12)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "robot"]),
                                           "content": texts}), max_size=3)
bodies = st.dictionaries(st.sampled_from(FIELDS), values, max_size=6).map(lambda d: {"model": "tiny", **d}) | \
    st.fixed_dictionaries({"model": st.just("tiny"), "prompt": texts | st.lists(texts, max_size=3),
                           "max_tokens": st.integers(-2, 4), "temperature": numbers, "top_p": numbers,
                           "top_k": numbers, "repetition_penalty": numbers, "stream": st.booleans(),
                           "seed": numbers, "stop": texts | st.lists(texts, max_size=3)}) | \
    st.fixed_dictionaries({"model": st.just("tiny"), "messages": messages, "max_tokens": st.integers(1, 4),
                           "stream": st.booleans()})


VALID = [("/v1/completions", {"model": "tiny", "prompt": "The cat", "max_tokens": 3, "temperature": 0.7, "seed": 1}),
         ("/v1/completions", {"model": "tiny", "prompt": ["a", "b"], "max_tokens": 2, "stream": True,
                              "stream_options": {"include_usage": True}, "stop": ["x"]}),
         ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                                   "top_p": 0.9, "top_k": 5, "repetition_penalty": 1.2}),
         ("/v1/attention", {"model": "tiny", "text": "the cat"}),
         ("/v1/classify", {"model": "tiny", "text": ["good", "bad"]}),
         ("/v1/answer", {"model": "tiny", "question": "who?", "context": "the cat"}),
         ("/v1/summarize", {"model": "tiny", "text": "a long text"})]


def mutate(case, data):
    """One valid request with one field set to any value, removed, or one field added."""
    path, body = case
    body = json.loads(json.dumps(body))
    key = data.draw(st.sampled_from(sorted(body) + FIELDS))
    if data.draw(st.booleans()) and key in body and key != "model":
        del body[key]
    else:
        body[key] = data.draw(values)
    return path, body


@pytest.fixture(scope="module")
def fuzz_server(registry):
    with live_server(registry, max_tokens=4, max_input_tokens=64, request_timeout_s=20, max_queue=8) as s:
        yield s


def check(r):
    assert r.status_code < 500, (r.request.method, r.request.url.path, r.status_code, r.text[:300])
    if r.status_code >= 400 and r.request.method != "HEAD":
        assert r.json()["error"]["message"]


@settings(SETTINGS, max_examples=120)
@given(case=st.sampled_from(VALID), data=st.data())
def test_valid_requests_with_one_field_changed_never_5xx(fuzz_server, case, data):
    url, _ = fuzz_server
    path, body = mutate(case, data)
    raw = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
    r = httpx.post(f"{url}{path}", content=raw, headers={"Content-Type": "application/json"}, timeout=30)
    check(r)


@SETTINGS
@given(path=st.sampled_from(PATHS), body=bodies)
def test_json_bodies_never_5xx(fuzz_server, path, body):
    url, _ = fuzz_server
    raw = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
    r = httpx.post(f"{url}{path}", content=raw, headers={"Content-Type": "application/json"}, timeout=30)
    check(r)


@SETTINGS
@given(path=st.sampled_from(PATHS + ["/", "/health", "/v1/models", "/v1/models/tiny", "/v1/nope"]),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
       raw=st.binary(max_size=200) | st.sampled_from([b"{", b"[]", b"null", b'{"model":', b"\xff", b"{}" * 50,
                                                      b'{"model": "tiny", "prompt": "\\ud800"}']),
       ctype=st.sampled_from(["application/json", "text/plain", "", "application/json; charset=latin-1",
                              "multipart/form-data"]))
def test_raw_requests_never_5xx(fuzz_server, path, method, raw, ctype):
    url, _ = fuzz_server
    headers = {"Content-Type": ctype} if ctype else {}
    r = httpx.request(method, f"{url}{path}", content=raw, headers=headers, timeout=30)
    check(r)


def test_server_alive_after_the_fuzz(fuzz_server):
    url, app = fuzz_server
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    r = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 2}, timeout=30)
    assert r.status_code == 200
    assert app.state.batcher.thread.is_alive()


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", b'{"model": "tiny", "prompt": "\\ud800", "max_tokens": 2}'),
    ("/v1/completions", b'{"model": "tiny", "prompt": ["ok", "x\\udfffy"], "max_tokens": 2}'),
    ("/v1/completions", b'{"model": "tiny", "prompt": "hi", "stop": "\\udc00", "max_tokens": 2}'),
    ("/v1/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}'),
    ("/v1/attention", b'{"model": "tiny", "text": "a\\ud800"}'),
    ("/v1/classify", b'{"model": "tiny", "text": "a\\ud800"}'),
    ("/v1/answer", b'{"model": "tiny", "question": "q", "context": "\\ud800"}'),
    ("/v1/completions", b'{"model": "tiny", "prompt": "hi", "\\ud800": 1}')])
def test_lone_surrogates_are_400(fuzz_server, path, body):
    """JSON may escape half a UTF-16 pair ("\\ud800"), which is no Unicode text: the tokenizer cannot take it."""
    url, _ = fuzz_server
    r = httpx.post(f"{url}{path}", content=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400, (path, r.status_code, r.text)
    assert "surrogate" in r.json()["error"]["message"]


def test_surrogate_pairs_are_text(fuzz_server):
    url, _ = fuzz_server
    r = httpx.post(f"{url}/v1/completions", content=b'{"model": "tiny", "prompt": "\\ud83d\\ude42", "max_tokens": 2}',
                   headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 200, r.text
