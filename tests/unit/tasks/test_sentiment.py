"""Sentiment end to end: from scratch, --init (lmlab and Hugging Face), evaluate, predict,
pipeline, resume, and the errors of bad labels and wrong model directories."""

import json

import pytest
import torch

import lmlab
from lmlab.artifacts import load_tensors
from lmlab.cli import main
from lmlab.errors import ArtifactError, DataError
from lmlab.tasks.evaluate import evaluate_task
from lmlab.tasks.finetune import finetune
from lmlab.tasks.pipeline import predict_command

from .conftest import FIX, preempted_at, tiny


def test_from_scratch_learns_and_writes_everything(sentiment_model):
    out, s = sentiment_model
    assert s["init"] is None and s["eval"]["accuracy"] >= 0.85  # chance is 0.5
    for name in ("model/model.safetensors", "model/tokenizer/tokenizer.json", "model/task.json", "best/best.json",
                 "eval.json", "eval.confusion_matrix.png", "metrics.jsonl", "summary.json"):
        assert (out / name).exists(), name
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_accuracy" in r] == [20, 40, 60]
    assert "val_perplexity" not in s and not any("val_perplexity" in r for r in rows)  # a class loss has none
    task = json.loads((out / "model" / "task.json").read_text())
    assert task["task"] == "sentiment" and task["meta"]["labels"] == ["0", "1"]
    # the saved model is the best evaluation, not the last step
    best = json.loads((out / "best" / "best.json").read_text())
    assert s["eval"]["accuracy"] == pytest.approx(best["value"])


def test_evaluate_writes_json_next_to_the_model(sentiment_model):
    out, s = sentiment_model
    r = evaluate_task("sentiment", str(out / "model"), str(FIX / "sentiment_dev.csv"))
    written = json.loads(open(r["written"]).read())
    assert written["metrics"]["accuracy"] == pytest.approx(s["eval"]["accuracy"])
    assert {"accuracy", "precision", "recall", "f1", "f1_macro", "confusion_matrix"} <= set(written["metrics"])
    assert r["written"].startswith(str(out / "eval"))
    assert sum(map(sum, written["metrics"]["confusion_matrix"])) == 24


def test_pipeline_and_predict(sentiment_model, tmp_path):
    out, _ = sentiment_model
    clf = lmlab.pipeline("sentiment", out / "model")
    one = clf("the music was wonderful")
    assert one["label"] in ("0", "1") and sum(one["scores"].values()) == pytest.approx(1.0)
    many = clf(["the plot was awful", "the ending is really lovely"])
    assert [m["label"] for m in many] == ["0", "1"]
    (tmp_path / "in.txt").write_text("the plot was awful\n\nthe ending is really lovely\n")
    predict_command("sentiment", str(out / "model"), input=str(tmp_path / "in.txt"), output=str(tmp_path / "o.jsonl"))
    lines = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [x["label"] for x in lines] == ["0", "1"]
    long = clf("good " * 500)  # longer than max_length: truncated, said so, no crash
    assert long["truncated"] is True


def test_unseen_labels_and_wrong_dirs(sentiment_model, tmp_path):
    out, _ = sentiment_model
    with pytest.raises(DataError, match=r"row 1: label '正面' was not seen in training; the model knows \['0', '1'\]"):
        evaluate_task("sentiment", str(out / "model"), str(FIX / "sentiment3_train.jsonl"))
    with pytest.raises(ArtifactError, match="is a 'sentiment' model, not 'qa'"):
        lmlab.pipeline("qa", out / "model")
    with pytest.raises(ArtifactError, match="not a fine-tuned task model"):
        lmlab.pipeline("sentiment", out / "best")
    with pytest.raises(DataError, match="empty"):
        lmlab.pipeline("sentiment", out / "model")("  ")
    assert main(["predict", "sentiment", str(out / "model")]) == 2  # neither text nor --input


def test_multiclass_chinese_jsonl(tmp_path):
    s = finetune("sentiment", str(FIX / "sentiment3_train.jsonl"), str(FIX / "sentiment3_train.jsonl"),
                 out=str(tmp_path / "r"), overrides=tiny("--train.max_steps=80", "--train.eval_every_steps=40"))
    assert s["eval"]["average"] == "macro" and s["eval"]["accuracy"] == 1.0
    assert lmlab.pipeline("sentiment", tmp_path / "r" / "model")("这家酒店差，服务差")["label"] == "负面"


def test_init_from_an_lmlab_model_keeps_the_backbone(sentiment_model, tmp_path):
    from lmlab.model import Transformer, preset, save_model
    from lmlab.model.pretrained import model_from_init

    out, _ = sentiment_model
    tok_dir = out / "work" / "tokenizer"
    torch.manual_seed(1)
    mlm = Transformer(preset("bert-tiny", vocab_size=200, d_model=32, n_layers=2, n_heads=2, d_ff=64, pooler=False))
    save_model(mlm, tmp_path / "mlm", tokenizer_dir=tok_dir)
    model, fresh = model_from_init(tmp_path / "mlm", {"head": "classification", "n_labels": 3})
    assert sorted(fresh) == ["head.out.bias", "head.out.weight", "pooler.dense.bias", "pooler.dense.weight"]
    got, want = model.state_dict(), mlm.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want if not k.startswith("head."))
    s = finetune("sentiment", str(FIX / "sentiment_train.csv"), str(FIX / "sentiment_dev.csv"),
                 init=str(tmp_path / "mlm"), out=str(tmp_path / "ft"),
                 overrides=tiny("--train.max_steps=10", "--train.eval_every_steps=10"))
    assert s["init"] == str(tmp_path / "mlm") and s["new_tensors"] == sorted(fresh)


def test_init_from_a_hugging_face_directory(sentiment_model, tmp_path):
    transformers = pytest.importorskip("transformers")
    out, _ = sentiment_model
    vocab = (out / "work" / "tokenizer" / "vocab.txt").read_text().splitlines()
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(cfg)
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tmp_path / "hf" / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    s = finetune("sentiment", str(FIX / "sentiment_train.csv"), str(FIX / "sentiment_dev.csv"),
                 init=f"hf:{tmp_path / 'hf'}", out=str(tmp_path / "ft"),
                 overrides=tiny("--train.max_steps=10", "--train.eval_every_steps=10", "--task.max_length=64"))
    emb = load_tensors(tmp_path / "ft" / "work" / "hf-import" / "model.safetensors")["embed.tokens.weight"]
    assert torch.allclose(emb, hf.bert.embeddings.word_embeddings.weight.detach())
    assert "pooler.dense.weight" in s["new_tensors"]
    assert lmlab.pipeline("sentiment", tmp_path / "ft" / "model")("the film was good")["label"] in ("0", "1")


def test_resume_continues_the_run(tmp_path):
    args = dict(train=str(FIX / "sentiment_train.csv"), eval=str(FIX / "sentiment_dev.csv"), out=str(tmp_path / "r"))
    finetune("sentiment", **args, overrides=tiny("--train.max_steps=10", "--train.eval_every_steps=5",
                                                 "--train.save_every_steps=5", "--optim.schedule=constant"))
    s = finetune("sentiment", **args, overrides=tiny("--train.max_steps=20", "--train.eval_every_steps=5",
                                                     "--train.save_every_steps=5", "--optim.schedule=constant"))
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert s["steps"] == 20 and [r["step"] for r in rows if "val_accuracy" in r] == [5, 10, 15, 20]


def test_preempted_run_writes_no_final_model_then_resumes(tmp_path, monkeypatch):
    from lmlab.train.loop import Trainer

    args = dict(train=str(FIX / "sentiment_train.csv"), eval=str(FIX / "sentiment_dev.csv"), out=str(tmp_path / "r"),
                overrides=tiny("--train.max_steps=10", "--train.eval_every_steps=5"))
    with monkeypatch.context() as m:
        m.setattr(Trainer, "train_step", preempted_at(5))
        s = finetune("sentiment", **args)
    assert s["preempted"] and s["steps"] == 5 and not (tmp_path / "r" / "model").exists()
    s = finetune("sentiment", **args)
    assert s["steps"] == 10 and (tmp_path / "r" / "model" / "task.json").exists()


def test_decoder_classifier_from_a_gpt_model(tmp_path):
    """A causal LM (byte-level BPE, no [CLS]) classifies from its last real token."""
    from lmlab.model import Transformer, preset, save_model
    from lmlab.tokenizer.train import train_tokenizer
    from lmlab.tokenizer.tokenizer import Tokenizer

    train_tokenizer([str(FIX / "sentiment_train.csv")], tmp_path / "tok", kind="bpe", vocab_size=300)
    tok = Tokenizer.load(tmp_path / "tok")
    gpt = Transformer(preset("gpt2-tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=2, d_ff=64,
                             max_seq_len=64, pad_token_id=tok.pad_id))
    save_model(gpt, tmp_path / "gpt", tokenizer_dir=tmp_path / "tok")
    s = finetune("sentiment", str(FIX / "sentiment_train.csv"), str(FIX / "sentiment_dev.csv"),
                 init=str(tmp_path / "gpt"), out=str(tmp_path / "ft"),
                 overrides=tiny("--train.max_steps=60", "--train.eval_every_steps=30", "--task.max_length=64"))
    assert s["new_tensors"] == ["head.out.bias", "head.out.weight"] and s["eval"]["accuracy"] >= 0.75


def test_truncation_cuts_the_end_the_start_or_the_middle():
    from lmlab.config import ConfigError
    from lmlab.tasks.task import TaskConfig, truncate

    ids = list(range(10))
    assert truncate(ids, 12) == ids and truncate(ids, 8) == list(range(8))
    assert truncate(ids, 8, "start") == list(range(2, 10))
    assert truncate(ids, 8, "middle") == [0, 1, 4, 5, 6, 7, 8, 9]  # first quarter + last three quarters
    with pytest.raises(ConfigError, match="task.truncation"):
        TaskConfig(truncation="both")


def test_middle_truncation_keeps_the_verdict_at_the_end(tmp_path):
    """A long review whose label is said only in its last words: cut at the end, the model never sees it."""
    from lmlab.tasks import get_task
    from lmlab.tasks.sentiment import LabeledExample
    from lmlab.tasks.task import TaskConfig, load_task_tokenizer
    from lmlab.tokenizer.train import train_tokenizer

    corpus = tmp_path / "c.txt"
    corpus.write_text("the plot was long and the verdict was terrible or wonderful\n" * 3, encoding="utf-8")
    train_tokenizer([str(corpus)], tmp_path / "tok", kind="wordpiece", vocab_size=80)
    tok = load_task_tokenizer(tmp_path / "tok")
    text = "the plot was long " * 10 + "terrible"
    T = get_task("sentiment")
    end, middle = (T.features([LabeledExample(text, "0")], tok, {"labels": ["0", "1"]},
                            TaskConfig(max_length=16, truncation=t))[0] for t in ("end", "middle"))
    last = tok.token_to_id("terrible")
    assert len(end["input_ids"]) == len(middle["input_ids"]) == 16 and end["truncated"] and middle["truncated"]
    assert last not in end["input_ids"] and middle["input_ids"][-2] == last  # before [SEP]


def test_word_vectors_initialise_a_model_trained_from_scratch(tmp_path):
    import numpy as np

    from lmlab.config import ConfigError
    from lmlab.embeddings.vectors import WordVectors
    from lmlab.tasks.task import load_task_tokenizer

    words = ["terrible", "wonderful", "acting", "film", "absent-from-the-data"]
    vecs = np.random.default_rng(3).standard_normal((len(words), 32)).astype(np.float32)  # d_model 32: no PCA
    WordVectors(words, vecs).save(tmp_path / "vec")
    out = tmp_path / "r"
    s = finetune("sentiment", str(FIX / "sentiment_train.csv"), out=str(out),
                 overrides=tiny("--train.max_steps=1", "--optim.lr=1e-7", f"--task.vectors={tmp_path / 'vec'}"))
    assert s["vectors"]["matched"] >= 4 and 0 < s["vectors"]["match_rate"] < 1
    tok = load_task_tokenizer(out / "model" / "tokenizer")
    emb = load_tensors(out / "model" / "model.safetensors")["embed.tokens.weight"]
    for i, w in enumerate(words[:4]):
        row = emb[tok.token_to_id(w)]
        assert torch.cosine_similarity(row, torch.from_numpy(vecs[i]), 0) > 0.999, w
    untouched = emb[tok.token_to_id("[CLS]")]
    assert max(torch.cosine_similarity(untouched, torch.from_numpy(v), 0).abs() for v in vecs) < 0.9
    with pytest.raises(ConfigError, match="task.vectors"):
        finetune("sentiment", str(FIX / "sentiment_train.csv"), init=str(out / "model"), out=str(tmp_path / "x"),
                 overrides=tiny("--train.max_steps=1", f"--task.vectors={tmp_path / 'vec'}"))


def test_init_takes_dropout_and_refuses_an_architecture_it_would_ignore(sentiment_model, tmp_path):
    """With --init the model's shape comes from its directory: --model.dropout applies, a
    --model.* that contradicts the init model is refused (it used to be silently ignored), and a
    from-scratch recipe's preset passes when it describes the same shape."""
    from lmlab.errors import ConfigError
    from lmlab.model.pretrained import read_model_config

    run = dict(train=str(FIX / "sentiment_train.csv"), eval=str(FIX / "sentiment_dev.csv"),
               init=str(sentiment_model[0] / "model"))
    base = [o for o in tiny("--train.max_steps=1") if not o.startswith("--model.")]
    finetune("sentiment", **run, out=str(tmp_path / "a"), overrides=base + ["--model.dropout=0.3"])
    assert read_model_config(tmp_path / "a" / "model").dropout == 0.3
    with pytest.raises(ConfigError, match=r"model\.d_model: .*brings its own architecture \(d_model=32\)"):
        finetune("sentiment", **run, out=str(tmp_path / "b"), overrides=base + ["--model.d_model=64"])
    with pytest.raises(ConfigError, match=r"model\.preset \(bert-small has d_model=384\)"):
        finetune("sentiment", **run, out=str(tmp_path / "c"), overrides=base + ["--model.preset=bert-small"])
    same = base + ["--model.preset=bert-tiny", "--model.d_model=32", "--model.n_layers=2", "--model.n_heads=2",
                   "--model.d_ff=64"]
    finetune("sentiment", **run, out=str(tmp_path / "d"), overrides=same)
    assert not (tmp_path / "b" / "model").exists()
