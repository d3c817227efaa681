"""/v1/chat/completions renders the model's own chat template (else the plain convention) and
says which in the extra field ``lmlab_chat_template``; template errors are 400s."""

import shutil

import httpx
import pytest

from tests.unit.serve.conftest import live_server

CHATML = ("{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('the assistant cannot speak first') }}"
          "{% endif %}{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello 你好"}]


@pytest.fixture(scope="module")
def chat_server(model_dir, tmp_path_factory):
    """The tiny model twice: "tiny" without a template, "chat" with ChatML; and "evil" with a
    template that reaches for Python internals."""
    from lmlab.model import load_model, save_model
    from lmlab.serve.registry import Registry

    root = tmp_path_factory.mktemp("chat-serve")
    model = load_model(model_dir)
    for name, template in (("chat", CHATML), ("evil", "{{ ''.__class__.__mro__ }}")):
        shutil.copytree(model_dir / "tokenizer", root / f"tok-{name}")
        (root / f"tok-{name}/chat_template.jinja").write_text(template)
        save_model(model, root / name, tokenizer_dir=root / f"tok-{name}")
    registry = Registry.load([f"tiny={model_dir}", str(root / "chat"), str(root / "evil")])
    with live_server(registry) as (url, _):
        yield url, registry


def test_the_model_template_is_used_and_said(chat_server):
    from lmlab.generate import generate

    url, registry = chat_server
    r = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                   json={"model": "chat", "messages": MESSAGES, "max_tokens": 6, "temperature": 0}).json()
    entry = registry.get("chat")
    prompt = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello 你好<|im_end|>\n<|im_start|>assistant\n"
    ref = generate(entry.model, entry.tokenizer, prompt, max_new_tokens=6, temperature=0)
    assert r["lmlab_chat_template"] == "model"
    assert r["choices"][0]["message"]["content"] == ref.text.strip()
    assert r["usage"]["prompt_tokens"] == len(entry.tokenizer.encode(prompt))


def test_without_a_template_the_plain_prompt_is_said(chat_server):
    url, _ = chat_server
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=60,
                      json={"model": "tiny", "messages": MESSAGES, "max_tokens": 4, "stream": True}) as r:
        chunks = [ln for ln in r.iter_lines() if ln.startswith("data: {")]
    assert chunks and all('"lmlab_chat_template": "plain"' in c for c in chunks)


def test_openai_client_keeps_the_extra_field(chat_server):
    openai = pytest.importorskip("openai")
    url, _ = chat_server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    r = client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=3, temperature=0)
    assert r.choices[0].message.role == "assistant"
    assert r.model_extra["lmlab_chat_template"] == "model"


@pytest.mark.parametrize("model, messages, message", [
    ("chat", [{"role": "assistant", "content": "hi"}], "the assistant cannot speak first"),
    ("evil", MESSAGES, "tried to reach Python internals"),
])
def test_template_errors_are_400s_naming_messages(chat_server, model, messages, message):
    url, _ = chat_server
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": model, "messages": messages}, timeout=60)
    assert r.status_code == 400
    assert message in r.json()["error"]["message"] and r.json()["error"]["param"] == "messages"


def test_a_run_directory_is_served_with_its_model_template(chat_server, tmp_path):
    from lmlab.serve.registry import Registry

    _, registry = chat_server
    shutil.copytree(registry.get("chat").path, tmp_path / "run" / "model")  # a run: OUT/model
    entry = Registry.load([f"run={tmp_path / 'run'}"]).get("run")
    assert entry.chat_template.render(MESSAGES).template == "model"
