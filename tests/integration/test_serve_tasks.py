"""The server's task endpoints with a real fine-tuned model (no stand-in pipeline)."""

from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
FIX = Path(__file__).resolve().parents[1] / "fixtures" / "tasks"


def test_classify_endpoint_serves_a_finetuned_sentiment_model(tmp_path):
    from lmlab.serve.registry import Registry
    from lmlab.tasks.finetune import finetune
    from tests.unit.serve.conftest import live_server

    finetune("sentiment", str(FIX / "sentiment_train.csv"), str(FIX / "sentiment_dev.csv"), out=str(tmp_path / "run"),
             overrides=["--model.d_model=32", "--model.n_layers=2", "--model.n_heads=2", "--model.d_ff=64",
                        "--train.progress=false", "--train.threads=1", "--train.batch_size=16",
                        "--train.max_steps=30", "--train.eval_every_steps=30", "--task.vocab_size=200",
                        "--train.precision=fp32"])
    registry = Registry.load([f"sst={tmp_path / 'run' / 'model'}"])
    with live_server(registry) as (url, _):
        r = httpx.post(f"{url}/v1/classify", json={"model": "sst", "text": "a wonderful, moving film"}, timeout=60)
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        assert result["label"] in result["scores"] and 0.0 <= result["score"] <= 1.0
        r = httpx.post(f"{url}/v1/answer", json={"model": "sst", "question": "q", "context": "c"}, timeout=60)
        assert r.status_code == 404 and r.json()["error"]["code"] == "wrong_task"
