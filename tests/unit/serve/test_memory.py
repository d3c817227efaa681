"""A long-running server's memory does not grow with what its clients send: the shapes of the
products its model runs stay a bounded set whatever the prompt lengths and batch sizes (each new
shape of a bf16 product is a kernel that oneDNN builds and keeps), and a model's packed weights
stay the same size however many requests they serve."""

from pathlib import Path

import httpx
import pytest
import torch
import torch.nn.functional as F

from lmlab.model.linear import FEW_ROWS, bucket_length
from tests.unit.serve.conftest import live_server

WORDS = ["the", "sea", "我们", "月光", "cat", "a"]


@pytest.fixture(scope="module")
def bf16_registry(model_dir):
    from lmlab.serve.registry import Registry

    torch.set_num_threads(1)
    return Registry.load([str(model_dir)], dtype="bfloat16")


def words(n: int, start: int = 0) -> str:
    return " ".join(WORDS[(start + i) % len(WORDS)] for i in range(n))


def complete(url, prompt, stream=False):
    r = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": prompt, "max_tokens": 2,
                                                  "temperature": 0, "stream": stream}, timeout=60)
    assert r.status_code == 200, r.text
    return r


def test_prompts_of_every_length_and_batch_size_make_few_shapes(bf16_registry, monkeypatch):
    """Completions of 1 to 60 words in batches of 1 to 5 prompts (streamed or not) and attention
    maps of 1 to 60 words: the row counts of the model's products of many rows, and the widths
    of the prefills' and attention maps' forward passes, come from a few bucket lengths."""
    entry = next(iter(bf16_registry.entries.values()))
    forward, linear, widths, prefills, rows = entry.model.forward, F.linear, [], [], []

    def recording_forward(input_ids, *a, cache=None, **kw):
        if cache is None:  # an attention map
            widths.append(input_ids.size(1))
        elif input_ids.size(1) > 1:  # a completion's prefill
            prefills.append(input_ids.size(1))
        return forward(input_ids, *a, cache=cache, **kw)

    def recording_linear(x, *a):
        if x.dtype == torch.bfloat16 and x.numel() > FEW_ROWS * x.size(-1):
            rows.append(x.numel() // x.size(-1))
        return linear(x, *a)

    monkeypatch.setattr(entry.model, "forward", recording_forward)
    monkeypatch.setattr(F, "linear", recording_linear)
    lengths, longest, batch_rows = set(), set(), set()
    with live_server(bf16_registry) as (url, _):
        for n in range(1, 61):
            prompts = [words(n + i, i) for i in range(1 + n % 5)]
            ids = [entry.tokenizer.encode(p) for p in prompts]
            lengths.add(len(ids[0]))
            longest.add(max(len(i) for i in ids))
            batch_rows.add(len(ids) * max(len(i) for i in ids))
            complete(url, prompts if len(prompts) > 1 else prompts[0], stream=n % 3 == 0)
            r = httpx.post(f"{url}/v1/attention", json={"model": "tiny", "text": prompts[0]}, timeout=60)
            assert r.status_code == 200 and len(r.json()["tokens"]) == min(len(ids[0]), 128)
    assert len(lengths) >= 50 and len(widths) == 60 and len(batch_rows) >= 50
    assert set(widths) <= {bucket_length(n, 128) for n in lengths}
    assert len(prefills) >= 50 and set(prefills) <= {bucket_length(n, entry.model.config.max_seq_len) for n in longest}
    assert len(set(widths)) <= 2 * max(lengths).bit_length()
    assert set(rows) <= {bucket_length(n) for n in range(FEW_ROWS + 1, max(batch_rows) + 1)}
    assert len(set(rows)) <= 2 * max(batch_rows).bit_length()


def test_the_packed_weights_of_a_model_do_not_grow_with_requests(registry):
    entry = next(iter(registry.entries.values()))
    with live_server(registry) as (url, _):
        complete(url, "The cat")
        def held():  # packed (oneDNN) and transposed (BLAS float32) copies
            return len(entry.pack._packed) + len(entry.pack._stacked)

        first = held()
        for n in range(1, 25):
            complete(url, words(3 * n), stream=n % 2 == 0)
        assert first > 0 and held() == first


@pytest.mark.filterwarnings("ignore::FutureWarning")  # gc.get_objects() meets torch's deprecated aliases
def test_no_request_leaves_state_behind(registry):
    """Completions (whole, streamed, a stream its client leaves half read), attention maps and
    refused requests: once they are answered, the server holds no row, call or batch of theirs
    (the model thread kept its last batch's rows while it waited for the next)."""
    import gc
    import time

    from lmlab.generate.stream import BatchStream
    from lmlab.serve.batcher import Call, Row

    entry = next(iter(registry.entries.values()))
    with live_server(registry) as (url, app):
        for n in range(1, 13):
            complete(url, words(n), stream=n % 2 == 0)
            httpx.post(f"{url}/v1/attention", json={"model": "tiny", "text": words(n)}, timeout=60)
            assert httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": words(n), "top_p": 7},
                              timeout=60).status_code == 400
            with httpx.stream("POST", f"{url}/v1/completions", timeout=60,
                              json={"model": "tiny", "prompt": words(n), "max_tokens": 64, "stream": True}) as r:
                next(r.iter_raw())  # the first event, then the client goes
        batcher = app.state.batcher
        deadline = time.monotonic() + 30
        while (batcher.in_flight or batcher.current is not None) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert batcher.in_flight == 0 and not batcher.pending and batcher.current is None

        def left() -> list:
            gc.collect()
            return [o for o in gc.get_objects() if isinstance(o, (Row, Call, BatchStream))
                    and (not isinstance(o, Row) or o.entry is entry)]

        t0 = time.monotonic()
        while left() and time.monotonic() < t0 + 10:  # a stream's coroutine sees its client gone at its next event
            time.sleep(0.1)
        assert left() == []
        assert not app.state.server.pipelines


WORD_CACHE_PROBE = """
import random, sys
from lmlab.serve.registry import Registry
from lmlab.tokenizer.tokenizer import Tokenizer
served = sys.argv[2] == "served"
tok = Registry.load([sys.argv[1]]).get("tiny").tokenizer if served else Tokenizer.load(sys.argv[1] + "/tokenizer")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096
rng = random.Random(0)
texts = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(250)) for _ in range(12000)]
before = rss()
for t in texts:  # 12,000 distinct words of 250 letters, as a client may send
    tok.encode(t)
print(rss() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the process's RSS from /proc")
def test_a_served_tokenizer_caches_few_words(model_dir):
    """The tokenizer library caches the first 10,000 words it meets and keeps them: for random text,
    tens of MiB a server would hold for good. A served tokenizer keeps 1,000 (`WORD_CACHE`)."""
    import subprocess
    import sys

    grown = {how: int(subprocess.run([sys.executable, "-c", WORD_CACHE_PROBE, str(model_dir), how], check=True,
                                     capture_output=True, text=True).stdout) / 2**20 for how in ("plain", "served")}
    assert grown["plain"] > 40, grown  # the library's own cache: the oracle that the probe fills one
    assert grown["served"] < 12, grown
