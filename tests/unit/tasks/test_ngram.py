"""`--model.preset=ngram`: the bag-of-n-grams classifier as a sentiment model, end to end, and
the places that need a Transformer refusing it by name."""

import json

import pytest

import lmlab
from lmlab.cli import main
from lmlab.errors import ConfigError
from lmlab.tasks.evaluate import evaluate_task
from lmlab.tasks.finetune import finetune

from .conftest import FIX, assert_resumes_to_the_same_weights

NGRAM = ["--model.preset=ngram", "--train.progress=false", "--train.threads=1", "--train.batch_size=16",
         "--train.precision=fp32"]


@pytest.fixture(scope="module")
def ngram_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("ngram") / "run"
    s = finetune("sentiment", str(FIX / "sentiment_train.csv"), str(FIX / "sentiment_dev.csv"), out=str(out),
                 overrides=NGRAM + ["--train.max_steps=60", "--train.eval_every_steps=20", "--optim.lr=3e-2"])
    return out, s


def test_learns_and_writes_a_task_model(ngram_model):
    out, s = ngram_model
    assert s["preset"] == "ngram" and s["eval"]["accuracy"] >= 0.85 and s["eval"]["truncated"] == 0
    model = json.loads((out / "model" / "model.json").read_text())
    assert model["kind"] == "ngram" and model["unit"] == "word" and model["n_max"] == 2  # English: words, bigrams
    assert model["vocab_size"] == s["ngrams"] + 1 == s["parameters"] // 2 - 1  # W [V, 2] and b [2]
    assert (out / "model" / "tokenizer" / "lmlab_ngrams.json").exists() and (out / "eval.confusion_matrix.png").exists()


def test_evaluate_predict_pipeline_read_the_directory(ngram_model, tmp_path):
    out, s = ngram_model
    r = evaluate_task("sentiment", str(out / "model"), str(FIX / "sentiment_dev.csv"))
    assert json.loads(open(r["written"]).read())["metrics"]["accuracy"] == pytest.approx(s["eval"]["accuracy"])
    clf = lmlab.pipeline("sentiment", out / "model")
    assert [x["label"] for x in clf(["the plot was awful", "the ending is really lovely"])] == ["0", "1"]
    long = clf("good " * 5000)  # a bag has no length limit: nothing cut
    assert "truncated" not in long and sum(long["scores"].values()) == pytest.approx(1.0)
    unseen = clf("zzzz qqqq")  # no known n-gram: the bias alone decides, no crash
    assert unseen["label"] in ("0", "1")


def test_an_ensemble_of_two_averages_their_logits(ngram_model, tmp_path):
    import torch

    from lmlab.tasks.ensemble import make_ensemble
    from lmlab.tasks.task_model import load_task_model

    out, _ = ngram_model
    finetune("sentiment", str(FIX / "sentiment_train.csv"), out=str(tmp_path / "b"),
             overrides=NGRAM + ["--train.max_steps=30", "--optim.lr=3e-2", "--train.seed=5"])
    make_ensemble("sentiment", [str(out / "model"), str(tmp_path / "b" / "model")], str(tmp_path / "e"))
    ensemble, tok, _, _ = load_task_model(tmp_path / "e", "sentiment")
    ids = torch.tensor(tok.encode("the ending is really lovely")).unsqueeze(0)
    members = [load_task_model(d, "sentiment")[0](input_ids=ids).logits
               for d in (out / "model", tmp_path / "b" / "model")]
    assert torch.allclose(ensemble(input_ids=ids).logits, (members[0] + members[1]) / 2, atol=1e-6)
    assert not torch.allclose(members[0], members[1])
    assert evaluate_task("sentiment", str(tmp_path / "e"), str(FIX / "sentiment_dev.csv"))["accuracy"] >= 0.85


def test_chinese_multiclass_uses_characters(tmp_path):
    s = finetune("sentiment", str(FIX / "sentiment3_train.jsonl"), str(FIX / "sentiment3_train.jsonl"),
                 out=str(tmp_path / "r"), overrides=NGRAM + ["--train.max_steps=40", "--train.eval_every_steps=20",
                                                             "--optim.lr=3e-2"])
    assert s["eval"]["average"] == "macro" and s["eval"]["accuracy"] == 1.0
    assert json.loads((tmp_path / "r" / "model" / "model.json").read_text())["unit"] == "char"
    assert lmlab.pipeline("sentiment", tmp_path / "r" / "model")("这家酒店差，服务差")["label"] == "负面"


def test_resumes_to_the_same_weights(tmp_path, monkeypatch):
    def run(out):
        return finetune("sentiment", str(FIX / "sentiment_train.csv"), out=str(out),
                        overrides=NGRAM + ["--train.max_steps=12", "--train.save_every_steps=4"])
    assert_resumes_to_the_same_weights(run, tmp_path, monkeypatch, stop_at=8)


def test_a_resumed_run_refuses_other_n_gram_options(tmp_path):
    args = dict(train=str(FIX / "sentiment_train.csv"), out=str(tmp_path / "r"))
    finetune("sentiment", **args, overrides=NGRAM + ["--train.max_steps=4", "--train.save_every_steps=2"])
    with pytest.raises(ConfigError, match=r"model.n_max: 2 there, 3 here"):
        finetune("sentiment", **args, overrides=NGRAM + ["--train.max_steps=8", "--model.n_max=3"])
    assert finetune("sentiment", **args, overrides=NGRAM + ["--train.max_steps=8"])["steps"] == 8


def test_what_does_not_apply_is_refused(ngram_model, tmp_path, capsys):
    out, _ = ngram_model
    train, dev = str(FIX / "sentiment_train.csv"), str(FIX / "sentiment_dev.csv")
    cases = [("sentiment", ["--task.vectors=somewhere"], None, "task.vectors"),
             ("sentiment", ["--lora.rank=4"], None, "lora.rank"),
             ("sentiment", ["--model.unit=byte"], None, "unit"),
             ("sentiment", [], str(out / "model"), "takes no --init")]
    for task, extra, init, message in cases:
        with pytest.raises(ConfigError, match=message):
            finetune(task, train, dev, init=init, out=str(tmp_path / "x"), overrides=NGRAM + extra)
        assert not (tmp_path / "x" / "model").exists()
    with pytest.raises(ConfigError, match="no encoder to fine-tune"):  # an n-gram model as a Transformer's init
        finetune("sentiment", train, dev, init=str(out / "model"), out=str(tmp_path / "x"),
                 overrides=NGRAM[1:])
    with pytest.raises(ConfigError, match="needs a Transformer"):
        finetune("qa", str(FIX / "qa_en_train.json"), out=str(tmp_path / "q"), overrides=NGRAM)
    for argv in (["hf", "export", str(out / "model"), str(tmp_path / "hf")],
                 ["cost", str(out / "model")],
                 ["model", "info", str(out / "model")]):
        assert main(argv) != 0
        assert "bag-of-n-grams classifier, not a Transformer" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()
