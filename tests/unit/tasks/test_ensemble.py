"""`lmlab ensemble`: members fine-tuned from one init average their logits (checked against the
members run one by one), the result evaluates and predicts like any task model, and members
that cannot be averaged are refused before anything is written."""

import json

import pytest
import torch

import lmlab
from lmlab.cli import main
from lmlab.errors import ArtifactError, ConfigError
from lmlab.tasks.ensemble import make_ensemble
from lmlab.tasks.evaluate import evaluate_task
from lmlab.tasks.finetune import finetune
from lmlab.tasks.task import encoder_inputs
from lmlab.tasks.task_model import load_task_model

from .conftest import FIX, tiny


def short(*extra):
    return [o for o in tiny("--train.max_steps=6", "--train.eval_every_steps=6", *extra)
            if not o.startswith("--model.")]


@pytest.fixture(scope="module")
def members(sentiment_model, tmp_path_factory):
    """Two sentiment runs from one init (so one tokenizer), different seeds."""
    out, _ = sentiment_model
    root = tmp_path_factory.mktemp("members")
    dirs = []
    for seed in (1, 2):
        s = finetune("sentiment", str(FIX / "sentiment_train.csv"), str(FIX / "sentiment_dev.csv"),
                     init=str(out / "model"), out=str(root / f"s{seed}"), overrides=short(f"--train.seed={seed}"))
        dirs.append(s["model"])
    return dirs


def test_sentiment_ensemble_averages_the_members_logits(members, tmp_path):
    r = make_ensemble("sentiment", members, str(tmp_path / "x" / "model"))
    assert r["members"] == 2
    texts = ["a warm , funny film", "dull and far too long", "the cast is fine"]
    logits = []
    for d in members:
        model, tok, _, cfg = load_task_model(d, "sentiment")
        feats = [{"input_ids": [tok.cls_id, *tok.encode(t), tok.sep_id]} for t in texts]
        with torch.no_grad():
            logits.append(model(**encoder_inputs(feats, tok.pad_id, token_types=True)).logits)
    assert not torch.allclose(logits[0], logits[1])  # the seeds made two different models
    expected = torch.softmax((logits[0] + logits[1]) / 2, -1)  # [3, 2]
    got = lmlab.pipeline("sentiment", r["out"])(texts)
    labels = json.loads((tmp_path / "x" / "model" / "task.json").read_text())["meta"]["labels"]
    for row, p in zip(got, expected):
        assert [row["scores"][lab] for lab in labels] == pytest.approx(p.tolist(), abs=1e-5)

    ev = evaluate_task("sentiment", r["out"], str(FIX / "sentiment_dev.csv"))
    assert 0 <= ev["accuracy"] <= 1 and (tmp_path / "x" / "eval").is_dir()


def test_qa_ensemble_answers_with_spans_of_the_context(tmp_path):
    base = finetune("qa", str(FIX / "qa_en_train.json"), str(FIX / "qa_en_dev.json"), out=str(tmp_path / "base"),
                    overrides=tiny("--train.max_steps=5", "--task.max_length=32", "--task.qa.stride=8"))
    dirs = [finetune("qa", str(FIX / "qa_en_train.json"), str(FIX / "qa_en_dev.json"), init=base["model"],
                     out=str(tmp_path / f"s{seed}"), overrides=short("--task.max_length=32", "--task.qa.stride=8",
                                                                     f"--train.seed={seed}"))["model"]
            for seed in (1, 2)]
    x = make_ensemble("qa", dirs, str(tmp_path / "x" / "model"))["out"]
    model, tok, _, _ = load_task_model(x, "qa")
    ids = torch.tensor([[tok.cls_id, 5, 6, 7, tok.sep_id, 8, 9, 10, 11, tok.sep_id]])  # [1, 10]
    mask = torch.ones_like(ids)
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask).logits  # [1, 10, 2]
        each = [m(input_ids=ids, attention_mask=mask).logits for m in model.members]
    assert torch.allclose(got, (each[0] + each[1]) / 2, atol=1e-6)
    context = "Heidi was born in Oslo. Trains arrive every hour."
    out = lmlab.pipeline("qa", x)({"question": "Where was Heidi born?", "context": context})
    assert 0 <= out["start"] <= out["end"] and out["answer"] == context[out["start"]:out["end"]]
    assert evaluate_task("qa", x, str(FIX / "qa_en_dev.json"))["questions"] > 0


def test_members_that_cannot_be_averaged_are_refused_and_nothing_is_written(members, sentiment_model, tmp_path):
    out = tmp_path / "x"
    with pytest.raises(ConfigError, match="at least two"):
        make_ensemble("sentiment", members[:1], str(out))
    with pytest.raises(ConfigError, match="cannot be ensembled"):
        make_ensemble("translation", members, str(out))
    with pytest.raises(ArtifactError, match="not 'qa'"):
        make_ensemble("qa", members, str(out))
    with pytest.raises(ArtifactError, match="ensemble: .* not an lmlab model directory"):
        make_ensemble("sentiment", [members[0], str(tmp_path)], str(out))
    # a run from scratch trains its own tokenizer: its ids mean other words
    other = finetune("sentiment", str(FIX / "sentiment_train.csv"), str(FIX / "sentiment_dev.csv"),
                     out=str(tmp_path / "scratch"), overrides=tiny("--train.max_steps=2"))["model"]
    with pytest.raises(ConfigError, match="different tokenizers"):
        make_ensemble("sentiment", [members[0], other], str(out))
    longer = finetune("sentiment", str(FIX / "sentiment_train.csv"), str(FIX / "sentiment_dev.csv"),
                      init=members[0], out=str(tmp_path / "longer"), overrides=short("--task.max_length=48"))["model"]
    with pytest.raises(ConfigError, match="task.max_length"):
        make_ensemble("sentiment", [members[0], longer], str(out))
    assert not out.exists()
    x = make_ensemble("sentiment", members, str(tmp_path / "ok"))["out"]
    with pytest.raises(ArtifactError, match="itself an ensemble"):
        make_ensemble("sentiment", [x, members[0]], str(out))
    assert not out.exists()


def test_cli_ensemble_then_predict(members, tmp_path, capsys):
    assert main(["ensemble", "sentiment", *members, "--out", str(tmp_path / "x")]) == 0
    assert json.loads(capsys.readouterr().out)["members"] == 2
    assert main(["predict", "sentiment", str(tmp_path / "x"), "a warm film"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("0", "1")
    assert main(["ensemble", "sentiment", *members, "--out", str(tmp_path / "x")]) == 2  # exists: refused


def test_qa_members_agree_on_a_sentence_ranker_up_to_float_reductions():
    """QA members fit their sentence ranker on the same questions with a fixed seed; the thread
    count still moves its weights (0.014 on CMRC2018), which must not refuse the ensemble."""
    from lmlab.tasks.ensemble import _meta_difference
    from lmlab.tasks.qa.ranker import FEATURES, SentenceRanker

    g = torch.Generator().manual_seed(3)
    contexts = [torch.randn(n, len(FEATURES), generator=g) for n in (3, 5, 7, 4, 6)]
    ranker = SentenceRanker.fit(contexts, [0, 2, 6, 1, 3], steps=20).state()

    def moved(by: float) -> dict:
        return {**ranker, "w1": (torch.tensor(ranker["w1"]) + by).tolist()}

    assert _meta_difference({"sentence_ranker": ranker}, {"sentence_ranker": moved(0.014)}) is None
    assert _meta_difference({"sentence_ranker": ranker}, {"sentence_ranker": moved(0.5)}) == "sentence_ranker"
    assert _meta_difference({"labels": ["neg", "pos"]}, {"labels": ["pos", "neg"]}) == "labels"
    assert _meta_difference({"sentence_ranker": ranker}, {}) == "sentence_ranker"
