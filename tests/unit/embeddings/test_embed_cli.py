"""The ``lmlab embed ...`` commands end to end through the CLI table."""

from __future__ import annotations

import json

import pytest

from lmlab.cli import main

pytest.importorskip("gensim")


def test_train_eval_export_neighbors(cluster_corpus, tmp_path, capsys):
    path, topics = cluster_corpus
    out = tmp_path / "vec"
    assert main(["embed", "train", str(path), "--out", str(out), "--dim", "8", "--min-count", "1",
                 "--epochs", "2", "--word2vec.negative=3"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["vocab_size"] == 19 and stats["algo"] == "word2vec"
    assert "negative: 3" in (out / "config.yaml").read_text()
    q = tmp_path / "q.txt"
    q.write_text(": topics\nfruit0 fruit1 metal0 metal1\nfruit2 fruit3 unknown metal3\n", encoding="utf-8")
    assert main(["embed", "eval", str(out), "--analogies", str(q), "--method", "add",
                 "--json", str(tmp_path / "r.json")]) == 0
    assert "1/2 covered (50.0%)" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["analogies"][0]["coverage"] == 0.5
    assert main(["embed", "export", str(out), "--format", "glove-text", "--out", str(tmp_path / "v.txt")]) == 0
    assert len((tmp_path / "v.txt").read_text().splitlines()) == 19
    assert "wrote 19 vectors of dimension 8" in capsys.readouterr().out
    assert main(["embed", "neighbors", str(out), "fruit0", "--topn", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "fruit0:" and len(lines) == 3 and all("\t" in line for line in lines[1:])


def test_errors_exit_2_without_traceback(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    assert main(["embed", "train", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "v")]) == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "v").exists()
    assert main(["embed", "eval", str(tmp_path / "nope")]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", ["embed-glove.yaml", "embed-word2vec-zh.yaml"])
def test_shipped_recipes_load(recipe):
    from pathlib import Path

    from lmlab.config import load_config
    from lmlab.embeddings.train import EmbedConfig

    cfg = load_config(EmbedConfig, Path(__file__).parents[3] / "configs" / recipe, ["--dim=7"])
    assert cfg.dim == 7 and cfg.algo in ("glove", "word2vec")
    assert cfg.glove.x_max == 10 if cfg.algo == "glove" else cfg.vocab.tokenizer == "jieba"
