"""A long-running server's memory does not grow with what its clients send: the prefill shapes
its model sees stay a bounded set whatever the prompt lengths (each new shape of a bf16 product
is a kernel that oneDNN builds and keeps), and a model's packed weights stay the same size
however many requests they serve."""

import httpx

from lmlab.generate.decode import bucket_length
from tests.unit.serve.conftest import live_server

WORDS = ["the", "sea", "我们", "月光", "cat", "a"]


def complete(url, prompt, stream=False):
    r = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": prompt, "max_tokens": 2,
                                                  "temperature": 0, "stream": stream}, timeout=60)
    assert r.status_code == 200, r.text
    return r


def test_prompts_of_every_length_make_few_shapes(registry, monkeypatch):
    """Completions (streamed or not) and attention maps of 1 to 60 words: the widths of the
    model's first forward pass of each request come from a few bucket lengths."""
    entry = next(iter(registry.entries.values()))
    original, widths = entry.model.forward, []

    def recording(input_ids, *a, cache=None, **kw):
        if cache is None or cache.length == 0:  # an attention map, or the prefill of a generation
            widths.append(input_ids.size(1))
        return original(input_ids, *a, cache=cache, **kw)

    monkeypatch.setattr(entry.model, "forward", recording)
    lengths = set()
    with live_server(registry) as (url, _):
        for n in range(1, 61):
            prompt = " ".join(WORDS[i % len(WORDS)] for i in range(n))
            lengths.add(len(entry.tokenizer.encode(prompt)))
            complete(url, prompt, stream=n % 3 == 0)
            r = httpx.post(f"{url}/v1/attention", json={"model": "tiny", "text": prompt}, timeout=60)
            assert r.status_code == 200 and len(r.json()["tokens"]) == min(len(entry.tokenizer.encode(prompt)), 128)
    assert len(lengths) >= 50 and len(widths) == 120
    assert set(widths) <= {bucket_length(n, entry.max_seq_len) for n in lengths}
    assert len(set(widths)) <= len({bucket_length(n, entry.max_seq_len) for n in range(1, max(lengths) + 1)}) < 20


def test_the_packed_weights_of_a_model_do_not_grow_with_requests(registry):
    entry = next(iter(registry.entries.values()))
    with live_server(registry) as (url, _):
        complete(url, "The cat")
        first = len(entry.pack._packed)
        for n in range(1, 25):
            complete(url, " ".join(WORDS[i % len(WORDS)] for i in range(3 * n)), stream=n % 2 == 0)
        assert first > 0 and len(entry.pack._packed) == first
