"""The whole chain on a real checkpoint, all-MiniLM-L6-v2 (BertModel, 6 layers, 384 wide), from its
Hugging Face files alone: hf import → fine-tune 50 steps on SST-2 → evaluate (by label name and by
the file's 0/1) → hf export → transformers' BertModel reloads it with equal hidden states → serve
one request. The checkpoint is fetched once with pip into a cache outside the repository
(benchmarks/real_checkpoint.py; $LMLAB_CHECKPOINTS overrides the place); without a network the
test is skipped, saying why."""

import json
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
transformers = pytest.importorskip("transformers")
httpx = pytest.importorskip("httpx")

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
TEXTS = ["a gob of drivel", "the most wondrous love story in years , it is a great film ."]


@pytest.fixture(scope="module")
def minilm():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from real_checkpoint import CheckpointUnavailable, minilm_dir

        try:
            return minilm_dir()
        except CheckpointUnavailable as e:
            pytest.skip(f"all-MiniLM-L6-v2 could not be fetched: {e}")
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def sst2_dev():
    from lmlab.datasets import data_root
    from lmlab.datasets.root import DatasetMissing

    try:
        path = data_root() / "sst2" / "dev.tsv"
    except DatasetMissing as e:
        pytest.skip(str(e))
    if not path.is_file():
        pytest.skip(f"{path}: SST-2 is not in the data root")
    return path


def hidden_states(model, batch):
    with torch.no_grad():
        return model(batch["input_ids"], attention_mask=batch["attention_mask"],
                     token_type_ids=batch["token_type_ids"]).hidden_states


def test_minilm_from_import_to_serving(minilm, sst2_dev, tmp_path, capsys):
    from lmlab.cli import main
    from lmlab.model import load_model
    from lmlab.serve.registry import Registry
    from lmlab.tokenizer.tokenizer import Tokenizer
    from tests.unit.serve.conftest import live_server

    lm, run = tmp_path / "minilm", tmp_path / "run"
    assert main(["hf", "import", str(minilm), str(lm)]) == 0
    hf_tok = transformers.AutoTokenizer.from_pretrained(minilm)
    tok = Tokenizer.load(lm / "tokenizer")
    assert tok.encode(TEXTS[0]) == hf_tok(TEXTS[0], add_special_tokens=False)["input_ids"]  # 6 ids, not 128
    batch = hf_tok(TEXTS, padding=True, return_tensors="pt")
    real = batch["attention_mask"].bool()
    ref = transformers.BertModel.from_pretrained(minilm).eval()
    with torch.no_grad():
        expected = ref(**batch).last_hidden_state
    assert (hidden_states(load_model(lm), batch) - expected)[real].abs().max() <= 1e-4

    capsys.readouterr()
    assert main(["finetune", "sentiment", "--train", "sst2:train", "--eval", "sst2:dev", "--init", str(lm),
                 "--out", str(run), "--train.max_steps=50", "--train.batch_size=32", "--optim.lr=5e-5",
                 "--optim.warmup_steps=5", "--task.max_length=64", "--train.eval_every_steps=50",
                 "--task.eval_max_examples=200", "--train.save_every_steps=50", "--train.progress=false"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "sentiment", str(run), "--data", "sst2:dev"]) == 0
    by_name = json.loads(capsys.readouterr().out)["accuracy"]
    assert by_name > 0.6  # chance is 0.5
    assert main(["evaluate", "sentiment", str(run), "--data", str(sst2_dev), "--out", str(tmp_path / "e.json")]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(by_name)  # labels 0/1 = names

    assert main(["hf", "export", str(run), str(tmp_path / "hf")]) == 0
    reloaded = transformers.BertModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        theirs = reloaded(**batch).last_hidden_state
    assert (hidden_states(load_model(run), batch) - theirs)[real].abs().max() <= 1e-4

    with live_server(Registry.load([f"minilm={run}"])) as (url, _):
        r = httpx.post(f"{url}/v1/classify", json={"model": "minilm", "text": TEXTS[1]}, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["result"]["label"] in ("negative", "positive")
