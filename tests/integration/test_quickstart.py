"""`lmlab quickstart`, the README's main job, end to end with every stage cut to a few steps
(≈30 s on 2 cores): every stage runs and reports, the models reload in transformers with equal
outputs, and an existing output directory is never overwritten unasked."""

import json

import pytest
import yaml

from lmlab.errors import ArtifactError
from lmlab.quickstart import quickstart


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    pytest.importorskip("gensim")  # the word-vector stage (the embed extra)
    out = tmp_path_factory.mktemp("qs") / "out"
    text = quickstart(out=str(out), steps=12)
    return out, text, json.loads((out / "report.json").read_text())


def test_every_stage_runs_and_reports(run):
    out, text, report = run
    stages = report["stages"]
    assert list(stages) == ["corpus", "tokenizers", "word vectors", "gpt", "bert", "classifier", "export",
                            "model families"]
    assert all(entry["seconds"] >= 0 for entry in stages.values())
    assert stages["corpus"]["cleaned"] > 1000  # the standard library's docstrings
    assert 0 < stages["classifier"]["accuracy"] <= 1 and 0 <= stages["classifier"]["f1_macro"] <= 1
    assert stages["gpt"]["val_loss"] > 0 and stages["bert"]["val_loss"] > 0
    assert (out / "report.md").read_text(encoding="utf-8") == text and "| classifier |" in text
    for name in ("gpt", "bert", "classifier"):
        assert (out / name / "model" / "model.safetensors").is_file()


def test_exported_models_reload_with_equal_outputs(run):
    _, _, report = run
    stages = report["stages"]
    pytest.importorskip("transformers")
    assert stages["export"]["gpt"]["hf_max_abs_diff"] < 1e-4 and stages["export"]["bert"]["hf_max_abs_diff"] < 1e-4
    families = stages["model families"]["families"]
    assert [f["family"] for f in families] == ["bert", "gpt2", "llama", "transformer"]
    assert all(f["formula_vs_fused_max_abs_diff"] < 1e-4 and f["hf_max_abs_diff"] < 1e-4 for f in families)


def test_the_bert_is_trained_with_muon(run):
    """With AdamW one WordPiece draw in three left the BERT on the unigram plateau (BENCHMARKS)."""
    out, _, _ = run
    config = yaml.safe_load((out / "bert" / "model" / "config.yaml").read_text())
    assert config["optim"]["name"] == "muon"


def test_an_existing_output_is_kept_unless_overwrite(run):
    out, _, _ = run
    before = (out / "report.json").read_bytes()
    with pytest.raises(ArtifactError, match="already exists; pass --overwrite"):
        quickstart(out=str(out), steps=12)
    assert (out / "report.json").read_bytes() == before
