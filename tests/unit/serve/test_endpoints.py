"""/health, the playground page, /v1/attention against the model's own weights, and the task
endpoints: 501 without `lmlab.tasks.pipeline`; with a stand-in module (the real one lives on
another branch) the pipeline is built lazily, once, and a wrong-task model is a 404."""

import sys
import types

import httpx
import numpy as np
import torch

from tests.unit.serve.conftest import KEY

AUTH = {"Authorization": f"Bearer {KEY}"}


def test_health_and_playground(server):
    url, _ = server
    assert httpx.get(f"{url}/health").json() == {"status": "ok", "models": 1}
    page = httpx.get(f"{url}/", headers=AUTH).text
    assert "<canvas" in page and "/v1/attention" in page
    assert "http://" not in page and "https://" not in page  # no external assets
    assert "Noto Sans CJK SC" in page


def test_attention_matches_the_model(server, registry):
    url, _ = server
    text = "The cat 猫坐 🙂"
    r = httpx.post(f"{url}/v1/attention", headers=AUTH, json={"model": "tiny", "text": text}, timeout=30)
    assert r.status_code == 200
    data = r.json()
    entry = registry.get("tiny")
    ids = entry.tokenizer.encode(text)
    assert data["token_ids"] == ids
    assert "猫" in "".join(data["tokens"]) and "🙂" in "".join(data["tokens"])  # labels are text, not bytes
    with torch.no_grad():
        ref = entry.model(torch.tensor([ids]), output_attentions=True).attentions
    assert len(data["layers"]) == len(ref) == 2
    for layer, want in zip(data["layers"], ref):
        w = np.array(layer["weights"])
        assert w.shape == (3, len(ids), len(ids))  # [H, T, S]
        np.testing.assert_allclose(w, want["self"][0].numpy(), atol=1e-4)
        np.testing.assert_allclose(w.sum(-1), 1, atol=1e-3)
        assert np.allclose(np.triu(w, 1), 0)  # causal


def test_attention_rejects_empty_text(server):
    url, _ = server
    r = httpx.post(f"{url}/v1/attention", headers=AUTH, json={"model": "tiny", "text": "  "}, timeout=30)
    assert r.status_code == 400


def test_task_endpoints_501_without_tasks_module(server, monkeypatch):
    url, _ = server
    monkeypatch.setitem(sys.modules, "lmlab.tasks.pipeline", None)  # import fails
    for path, body in [("/v1/classify", {"text": "x"}), ("/v1/answer", {"question": "q", "context": "c"}),
                       ("/v1/summarize", {"text": "x"}), ("/v1/translate", {"text": "x"})]:
        r = httpx.post(f"{url}{path}", headers=AUTH, json={"model": "tiny", **body}, timeout=30)
        assert r.status_code == 501, (path, r.text)
        assert "lmlab.tasks" in r.json()["error"]["message"]


def test_task_endpoints_with_a_pipeline(registry, monkeypatch):
    from lmlab.errors import ArtifactError
    from tests.unit.serve.conftest import live_server

    built = []

    def pipeline(task, model_dir):
        built.append(task)
        if task != "classification":
            raise ArtifactError(f"{model_dir}: not a {task} model")
        return lambda text: {"label": "positive", "score": np.float32(0.75),
                             "scores": {"positive": 0.75, "negative": 0.25}, "n": len(text)}

    fake = types.ModuleType("lmlab.tasks.pipeline")
    fake.pipeline = pipeline
    monkeypatch.setitem(sys.modules, "lmlab.tasks", types.ModuleType("lmlab.tasks"))
    monkeypatch.setitem(sys.modules, "lmlab.tasks.pipeline", fake)
    with live_server(registry) as (url, _):
        for _ in range(2):
            r = httpx.post(f"{url}/v1/classify", json={"model": "tiny", "text": "好电影"}, timeout=30)
            assert r.status_code == 200
            assert r.json()["result"] == {"label": "positive", "score": 0.75,
                                          "scores": {"positive": 0.75, "negative": 0.25}, "n": 3}
        assert built == ["classification"]  # built lazily, once
        r = httpx.post(f"{url}/v1/answer", json={"model": "tiny", "question": "q", "context": "c"}, timeout=30)
        assert r.status_code == 404 and r.json()["error"]["code"] == "wrong_task"
        r = httpx.post(f"{url}/v1/classify", json={"model": "../tiny", "text": "x"}, timeout=30)
        assert r.status_code == 404


def test_classifier_cannot_generate(tmp_path, model_dir):
    from lmlab.model import Transformer, preset, save_model
    from lmlab.serve.registry import Registry
    from tests.unit.serve.conftest import live_server

    cfg = preset("bert-tiny", vocab_size=401, d_model=36, n_heads=3, n_layers=1, d_ff=44, max_seq_len=64,
                 head="classification", n_labels=3)
    save_model(Transformer(cfg), tmp_path / "cls", tokenizer_dir=model_dir / "tokenizer")
    reg = Registry.load([str(tmp_path / "cls")])
    with live_server(reg) as (url, _):
        r = httpx.post(f"{url}/v1/completions", json={"model": "cls", "prompt": "x"}, timeout=30)
        assert r.status_code == 400 and "cannot generate" in r.json()["error"]["message"]
        r = httpx.post(f"{url}/v1/attention", json={"model": "cls", "text": "a b c"}, timeout=30)
        assert r.status_code == 200 and np.array(r.json()["layers"][0]["weights"]).shape[0] == 3
        assert not np.allclose(np.triu(np.array(r.json()["layers"][0]["weights"]), 1), 0)  # bidirectional


def test_bfloat16_weights_serve_completions(model_dir):
    """--dtype bfloat16: the weights are cast and completions are served (max_tokens honoured)."""
    from lmlab.serve.registry import Registry
    from tests.unit.serve.conftest import live_server

    reg = Registry.load([str(model_dir)], dtype="bfloat16")
    model = reg.get(reg.names()[0]).model
    assert next(model.parameters()).dtype == torch.bfloat16
    with live_server(reg) as (url, _):
        r = httpx.post(f"{url}/v1/completions", json={"model": reg.names()[0], "prompt": "hello",
                                                       "max_tokens": 5, "temperature": 0}, timeout=30)
        assert r.status_code == 200
        assert r.json()["usage"]["completion_tokens"] == 5
