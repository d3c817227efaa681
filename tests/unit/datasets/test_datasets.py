"""Dataset readers on the shared data (skipped without it) and on tiny project-made fixtures."""

import gzip
import json
import os
from pathlib import Path

import pytest

import lmlab.datasets as D
from lmlab.datasets.qa import load_stats
from lmlab.errors import DataError

SHARED = Path(os.environ.get("LMLAB_DATA", Path(__file__).parents[4] / "shared" / "data"))
needs_data = pytest.mark.skipif(not (SHARED / "README.md").exists(), reason=f"shared datasets not found at {SHARED}")


def test_missing_dataset_says_where_and_how(tmp_path):
    with pytest.raises(D.DatasetMissing, match=rf"{tmp_path}/sst2/train.tsv not found.*gluebenchmark"):
        D.sst2("train", data_root=tmp_path)


def test_no_root_at_all(monkeypatch):
    monkeypatch.delenv("LMLAB_DATA", raising=False)
    with pytest.raises(D.DatasetMissing, match="--data-root"):
        D.sst2()


def test_dialogsum_python_literal_lines_never_eval(tmp_path):
    d = tmp_path / "dialogsum"
    d.mkdir()
    (d / "dialogsum.train.jsonl").write_text(
        "{'fname': 't0', 'dialogue': \"#Person1#: it's ok\", 'summary': 's', 'topic': 'x'}\n"
        '{"fname": "t1", "dialogue": "d", "summary": "s2", "topic": "y"}\n'
        "__import__('os').system('echo pwned')\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dialogsum.train.jsonl:3: neither JSON nor a Python dict literal"):
        D.dialogsum("train", data_root=tmp_path)


def test_schema_errors_name_file_and_line(tmp_path):
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "dev.tsv").write_text("sentence\tlabel\ngood movie \t1\nextra\ttab\t0\n")
    with pytest.raises(DataError, match=r"dev.tsv:3: 3 tab-separated fields"):
        D.sst2("dev", data_root=tmp_path)
    (tmp_path / "multi30k").mkdir()
    (tmp_path / "multi30k" / "val.en.gz").write_bytes(gzip.compress(b"a\nb\n"))
    (tmp_path / "multi30k" / "val.de.gz").write_bytes(gzip.compress(b"a\n"))
    with pytest.raises(DataError, match="line-aligned"):
        D.multi30k("val", data_root=tmp_path)


def test_qa_spans_checked_and_bad_ones_dropped(tmp_path):
    (tmp_path / "cmrc2018").mkdir()
    data = {"data": [{"title": "t", "paragraphs": [{"context": "北京是中国的首都。", "qas": [
        {"id": "q1", "question": "首都?", "answers": [{"text": "北京", "answer_start": 0}]},
        {"id": "q2", "question": "bad", "answers": [{"text": "上海", "answer_start": 0}]}]}]}]}
    (tmp_path / "cmrc2018" / "cmrc2018_trial.json").write_text(json.dumps(data, ensure_ascii=False))
    rows = D.cmrc2018("trial", data_root=tmp_path)
    assert [r.id for r in rows] == ["q1"] and load_stats()["dropped_answers"] == 1
    del data["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"]
    (tmp_path / "cmrc2018" / "cmrc2018_trial.json").write_text(json.dumps(data, ensure_ascii=False))
    with pytest.raises(DataError, match="question q1: an answer lacks 'answer_start'"):
        D.cmrc2018("trial", data_root=tmp_path)


@needs_data
def test_shared_datasets_have_documented_sizes():
    r = str(SHARED)
    assert len(D.sst2("train", r)) == 67349 and len(D.sst2("dev", r)) == 872
    assert not D.sst2("dev", r)[0].text.endswith(" ")
    assert len(D.chnsenticorp("dev", r)) == 1200
    assert len(D.dialogsum("train", r)) == 12460 and len(D.dialogsum("dev", r)) == 500
    assert len(D.csl_ts("dev", r)) == 1000
    assert len(D.multi30k("val", r)) == 1014
    assert len(D.ca8(r)) == 953 and len(D.zh_wordsim(r)) == 240
    rows = D.squad("dev", r)
    assert len(rows) == 8582 and all(x.context[a.start:a.start + len(a.text)] == a.text
                                     for x in rows for a in x.answers)
    text = D.tinyshakespeare("all", r)
    assert len(text) == 1115394 and D.tinyshakespeare("train", r) + D.tinyshakespeare("valid", r) == text
    novels = D.sidamingzhu(r)
    assert len(novels) == 4 and all("\r" not in n.text for n in novels)
    first = next(D.chinese_poetry("quantangshi", r))
    assert first.author and first.paragraphs


def test_list_datasets_marks_missing_ones(tmp_path):
    (tmp_path / "ca8").mkdir()
    (tmp_path / "ca8" / "ca_translated.txt").write_text(": s\na b c d\n", encoding="utf-8")
    table = D.root.list_datasets(str(tmp_path))
    assert "ca8              ok" in table and "sst2             MISSING  obtain: https://gluebenchmark.com" in table
    assert D.ca8(tmp_path)[0] == D.Analogy("s", "a", "b", "c", "d")
