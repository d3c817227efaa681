"""Generic data files: column detection, explicit columns, and errors that name the file and row."""

import pytest

from lmlab.errors import DataError
from lmlab.tasks.records import LABEL_COLUMNS, TEXT_COLUMNS, dataset_spec, pick_column, read_records
from lmlab.tasks.sentiment import TASK
from lmlab.tasks.task import TaskConfig


def test_detects_common_column_names(tmp_path):
    (tmp_path / "a.tsv").write_text("label\ttext_a\n1\t很好\n0\t很差\n", encoding="utf-8")
    rows = TASK.read(str(tmp_path / "a.tsv"), TaskConfig())
    assert [(r.text, r.label) for r in rows] == [("很好", "1"), ("很差", "0")]
    (tmp_path / "b.jsonl").write_text('{"Review": "fine", "Sentiment": "pos"}\n{"Review": "meh", "Sentiment": "neg"}\n')
    rows = read_records(tmp_path / "b.jsonl")
    assert pick_column(rows, "b", "", TEXT_COLUMNS, "text") == "Review"  # case-insensitive
    assert pick_column(rows, "b", "", LABEL_COLUMNS, "label") == "Sentiment"


def test_explicit_columns_and_quoted_csv(tmp_path):
    (tmp_path / "c.csv").write_text('id,body,stars\n1,"good, really",5\n2,bad,1\n')
    rows = TASK.read(str(tmp_path / "c.csv"), TaskConfig(text_column="body", label_column="stars"))
    assert rows[0].text == "good, really" and rows[1].label == "1"
    with pytest.raises(DataError, match="cannot tell which column holds the text.*--task.text_column"):
        TASK.read(str(tmp_path / "c.csv"), TaskConfig())
    with pytest.raises(DataError, match="no column 'nope'"):
        TASK.read(str(tmp_path / "c.csv"), TaskConfig(text_column="nope", label_column="stars"))


@pytest.mark.parametrize("name,content,message", [
    ("e.csv", "", "empty file"),
    ("h.csv", "text,label\n", "no rows"),
    ("f.csv", "text,label\ngood,1\nbad,0,extra\n", r"f.csv:3: 3 fields"),
    ("j.jsonl", '{"text": "a", "label": 1}\n{oops\n', r"j.jsonl:2: not a JSON object"),
    ("x.parquet", "x", "unknown file type"),
    ("m.csv", "text,label\ngood,\n", "row 1: missing label"),
    ("t.csv", "text,label\n ,1\n", "row 1: empty 'text'"),
])
def test_bad_files(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        TASK.read(str(tmp_path / name), TaskConfig())


def test_dataset_spec(tmp_path):
    assert dataset_spec("sst2:train") == ("sst2", "train")
    assert dataset_spec("squad:dev:0-29") == ("squad", "dev:0-29")
    assert dataset_spec(str(tmp_path / "x.csv")) is None
    with pytest.raises(DataError, match="unknown dataset for sentiment"):
        TASK.read("imdb:train", TaskConfig())


@pytest.mark.parametrize("recipe", sorted((__import__("pathlib").Path(__file__).resolve().parents[3] / "configs" /
                                           "finetune").glob("*.yaml")), ids=lambda p: p.stem)
def test_recipes_load(recipe):
    from lmlab.tasks import get_task
    from lmlab.tasks.finetune import load_finetune_config

    task = {"sst2": "sentiment", "chnsenticorp": "sentiment", "cmrc2018": "qa", "squad": "qa",
            "dialogsum": "summarization", "csl": "summarization"}.get(recipe.stem, "translation")
    cfg = load_finetune_config(get_task(task), True, str(recipe), ["--train.max_steps=7"])
    assert cfg.train.max_steps == 7 and cfg.task.epochs == 0  # an explicit step budget beats the epochs
