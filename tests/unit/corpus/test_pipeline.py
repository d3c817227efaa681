"""clean_corpus end to end: stats, determinism for any worker count, splits, atomic failure."""

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from lmlab.artifacts import verify
from lmlab.corpus.pipeline import CleanConfig, clean_corpus, corpus_stats, iter_documents
from lmlab.corpus.split import SplitConfig, split_of
from lmlab.errors import ArtifactError, DataError

FIXTURE = Path(__file__).parents[2] / "fixtures" / "text" / "mixed.txt"


def make_inputs(root: Path) -> list[Path]:
    lines = FIXTURE.read_text(encoding="utf-8").splitlines()
    (root / "a.txt").write_text("\n".join(lines[:60]) + "\n" + lines[0] + "\n", encoding="utf-8")  # one exact dup
    (root / "b.txt.gz").write_bytes(gzip.compress(("\n".join(lines[60:]) + "\n").encode("utf-8")))
    (root / "c.txt").write_bytes("繁體中文的句子。\n".encode("gb18030") + b"bad \xff byte line\n")
    (root / "d.jsonl").write_text(json.dumps({"text": "Ａ <b>tagged</b> &amp; full-width line"}) + "\n{broken\n",
                                  encoding="utf-8")
    return [root / n for n in ("a.txt", "b.txt.gz", "c.txt", "d.jsonl")]


def digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())
            if p.name not in ("manifest.json", "config.yaml")}  # config.yaml records the worker count


def test_clean_counts_everything(tmp_path):
    inputs = make_inputs(tmp_path)
    out = tmp_path / "corpus"
    summary = clean_corpus(inputs, out, overrides=["--filter.min_chars=3", "--split.valid=0.2"])
    verify(out, kind="lmlab-corpus")
    stats = json.loads((out / "stats.json").read_text())
    # 61 + 60 + 2 lines + 1 good JSON row (the broken one is a bad row, not a document)
    assert stats["input"]["documents"] == 124 == summary["documents_in"]
    assert stats["duplicates"]["exact"] >= 1
    assert stats["read"]["counts"]["replaced_bytes"] == 1
    assert stats["read"]["counts"]["bad_rows"] == 1
    assert stats["read"]["counts"]["encoding:gb18030"] == 1
    out_docs = stats["output"]["documents"]
    assert out_docs == sum(s["documents"] for s in stats["output"]["splits"].values())
    assert out_docs + stats["duplicates"]["exact"] + sum(stats["dropped"].values()) == 124
    docs = list(iter_documents(out, "train")) + list(iter_documents(out, "valid"))
    assert len(docs) == out_docs and len(set(docs)) == len(docs)
    assert "A tagged & full-width line" in docs and "繁體中文的句子。" in docs
    assert 0 < stats["output"]["splits"]["valid"]["documents"] < out_docs / 2
    table = corpus_stats(out)
    assert "exact duplicates" in table and "gb18030" in table


def test_output_identical_for_any_worker_count(tmp_path):
    inputs = make_inputs(tmp_path)
    over = ["--read.chunk_bytes=2048", "--dedup.near=true", "--split.valid=0.1", "--shard_bytes=4096"]
    clean_corpus(inputs, tmp_path / "w1", workers=1, overrides=over)
    clean_corpus(inputs, tmp_path / "w2", workers=2, overrides=over)
    d1, d2 = digest(tmp_path / "w1"), digest(tmp_path / "w2")
    assert d1 == d2 and sum(n.startswith("train-") for n in d1) >= 2  # several shards were written


def test_near_duplicates_are_reported(tmp_path):
    words = ["".join(chr(97 + (i * k) % 26) for k in (1, 7, 13, 17)) for i in range(200)]
    base = " ".join(words)
    edited = " ".join(words[:100] + ["changed"] + words[101:])
    (tmp_path / "r.txt").write_text(base + "\n" + edited + "\nSomething else entirely.\n")
    clean_corpus([tmp_path / "r.txt"], tmp_path / "c", overrides=["--dedup.near=true", "--split.valid=0"])
    report = [json.loads(line) for line in (tmp_path / "c" / "duplicates.jsonl").read_text().splitlines()]
    assert ([(r["kind"], r["removed"].endswith(":2"), r["kept"].endswith(":1")) for r in report]
            == [("near", True, True)])
    assert json.loads((tmp_path / "c" / "stats.json").read_text())["duplicates"]["near_clusters"] == 1


def test_split_is_a_function_of_text_only():
    cfg = SplitConfig(valid=0.1, test=0.1, seed=3)
    texts = [f"document number {i}" for i in range(5000)]
    splits = [split_of(t, cfg) for t in texts]
    assert splits == [split_of(t, cfg) for t in texts]
    for name in ("valid", "test"):
        assert 0.08 < splits.count(name) / 5000 < 0.12
    assert splits != [split_of(t, SplitConfig(valid=0.1, test=0.1, seed=4)) for t in texts]


def test_strict_failure_leaves_no_output(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"good\nbad \xff\n")
    with pytest.raises(DataError, match=r"bad.txt:2"):
        clean_corpus([tmp_path / "bad.txt"], tmp_path / "out",
                     overrides=["--read.errors=strict", "--read.encoding=utf-8"])
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_refuses_to_overwrite_and_unknown_keys(tmp_path):
    (tmp_path / "a.txt").write_text("hello world\n")
    clean_corpus([tmp_path / "a.txt"], tmp_path / "out")
    with pytest.raises(ArtifactError, match="already exists"):
        clean_corpus([tmp_path / "a.txt"], tmp_path / "out")
    with pytest.raises(Exception, match="filter.min_charz"):
        clean_corpus([tmp_path / "a.txt"], tmp_path / "out2", overrides=["--filter.min_charz=3"])
    with pytest.raises(DataError, match="no documents"):
        (tmp_path / "e.txt").write_text("")
        clean_corpus([tmp_path / "e.txt"], tmp_path / "out3")


def test_config_object_and_t2s(tmp_path):
    pytest.importorskip("opencc")
    (tmp_path / "p.txt").write_text("秦川雄帝宅，函谷壯皇居。\n")
    cfg = CleanConfig()
    cfg.normalize.t2s = True
    cfg.split.valid = 0.0
    clean_corpus([tmp_path / "p.txt"], tmp_path / "o", config=cfg)
    assert list(iter_documents(tmp_path / "o")) == ["秦川雄帝宅,函谷壮皇居。"]
