"""The official `openai` client against a live server: completions and chat, streamed and not."""

import pytest

from tests.unit.serve.conftest import KEY

openai = pytest.importorskip("openai")


@pytest.fixture()
def client(server):
    url, _ = server
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=30)


def test_models_lists_the_allow_list(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["tiny"]


def test_completion_is_greedy_deterministic_and_matches_generate(client, registry):
    from lmlab.generate import GenerationConfig, generate

    r = client.completions.create(model="tiny", prompt="The cat", max_tokens=7, temperature=0)
    entry = registry.get("tiny")
    ref = generate(entry.model, entry.tokenizer, "The cat", GenerationConfig(max_new_tokens=7, temperature=0))
    assert r.choices[0].text == ref.text
    assert r.choices[0].finish_reason == ref.finish_reason
    assert r.usage.completion_tokens == ref.completion_tokens == 7
    assert r.usage.prompt_tokens == len(entry.tokenizer.encode("The cat"))
    again = client.completions.create(model="tiny", prompt="The cat", max_tokens=7, temperature=0)
    assert again.choices[0].text == r.choices[0].text


def test_streamed_completion_equals_non_streamed(client):
    full = client.completions.create(model="tiny", prompt="你好，", max_tokens=9, temperature=0)
    pieces, reasons = [], []
    for chunk in client.completions.create(model="tiny", prompt="你好，", max_tokens=9, temperature=0, stream=True):
        for c in chunk.choices:
            pieces.append(c.text)
            reasons.append(c.finish_reason)
    assert "".join(pieces) == full.choices[0].text
    assert reasons[-1] == "length" and all(r is None for r in reasons[:-1])
    assert len([p for p in pieces if p]) >= 2  # really streamed in pieces


def test_list_of_prompts_is_one_choice_each(client):
    r = client.completions.create(model="tiny", prompt=["a", "The dog and"], max_tokens=3, temperature=0)
    assert [c.index for c in r.choices] == [0, 1]
    solo = client.completions.create(model="tiny", prompt="The dog and", max_tokens=3, temperature=0)
    assert r.choices[1].text == solo.choices[0].text  # batched with a shorter row: same greedy text


def test_chat_stream_and_non_stream(client, registry):
    from lmlab.generate import generate
    from lmlab.generate.chat import PLAIN_STOP

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello 你好"}]
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0)
    entry = registry.get("tiny")
    ref = generate(entry.model, entry.tokenizer, "System: Be brief.\nUser: Hello 你好\nAssistant:",
                   max_new_tokens=6, temperature=0, stop=[PLAIN_STOP])
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == ref.text.strip()
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == r.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_sse_ends_with_done(server):
    import httpx

    url, _ = server
    with httpx.stream("POST", f"{url}/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "tiny", "prompt": "x", "max_tokens": 3, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    assert all(ln.startswith("data: ") for ln in lines)
