"""Labels by name or by id: a model trained on a named dataset (SST-2: negative/positive) reads a
file labelled 0/1, and one trained on such a file reads the named dataset; task.json keeps the
names with their ids."""

import json

import pytest

from lmlab.errors import DataError
from lmlab.tasks.evaluate import evaluate_task
from lmlab.tasks.finetune import finetune

from .conftest import FIX

NGRAM = ["--model.preset=ngram", "--train.progress=false", "--train.threads=1", "--train.max_steps=30",
         "--train.eval_every_steps=30"]


@pytest.fixture()
def data_root(tmp_path):
    """An SST-2 folder made of the project's fixture (sentence<TAB>label, label 0/1)."""
    root = tmp_path / "data"
    (root / "sst2").mkdir(parents=True)
    for split, name in (("train", "sentiment_train.csv"), ("dev", "sentiment_dev.csv")):
        rows = (FIX / name).read_text().splitlines()[1:]
        (root / "sst2" / f"{split}.tsv").write_text(
            "sentence\tlabel\n" + "".join(f"{r.rsplit(',', 1)[0]} \t{r.rsplit(',', 1)[1]}\n" for r in rows))
    return root


def test_a_named_dataset_model_reads_numeric_labels(data_root, tmp_path):
    s = finetune("sentiment", "sst2:train", "sst2:dev", out=str(tmp_path / "run"), overrides=NGRAM,
                 data_root=str(data_root))
    meta = json.loads((tmp_path / "run" / "model" / "task.json").read_text())["meta"]
    assert meta["labels"] == ["negative", "positive"] and meta["label_ids"] == {"negative": 0, "positive": 1}
    r = evaluate_task("sentiment", str(tmp_path / "run"), str(FIX / "sentiment_dev.csv"), out=str(tmp_path / "e.json"))
    assert r["accuracy"] == pytest.approx(s["eval"]["accuracy"])  # the same rows, labelled 0/1
    (tmp_path / "bad.csv").write_text("review,label\na film,2\n")
    with pytest.raises(DataError, match=r"bad.csv: row 1: label '2' was not seen in training; the model knows "
                                        r"\['negative', 'positive'\] \(or their ids 0, 1\)"):
        evaluate_task("sentiment", str(tmp_path / "run"), str(tmp_path / "bad.csv"), out=str(tmp_path / "e.json"))


def test_a_numeric_file_model_reads_the_named_dataset(data_root, tmp_path):
    s = finetune("sentiment", str(FIX / "sentiment_train.csv"), str(FIX / "sentiment_dev.csv"),
                 out=str(tmp_path / "run"), overrides=NGRAM)
    meta = json.loads((tmp_path / "run" / "model" / "task.json").read_text())["meta"]
    assert meta["label_ids"] == {"0": 0, "1": 1}
    r = evaluate_task("sentiment", str(tmp_path / "run"), "sst2:dev", data_root=str(data_root),
                      out=str(tmp_path / "e.json"))
    assert r["accuracy"] == pytest.approx(s["eval"]["accuracy"])
