"""The CLI rows of stages ①–②: every command runs, bad input is 'error: …' with status 2."""

import json
from pathlib import Path

from lmlab.cli import main

FIXTURE = Path(__file__).parents[2] / "fixtures" / "text" / "mixed.txt"


def test_pipeline_through_the_cli(tmp_path, capsys):
    c, t, s = tmp_path / "corpus", tmp_path / "tok", tmp_path / "shards"
    assert main(["corpus", "clean", str(FIXTURE), "--out", str(c), "--split.valid=0.2"]) == 0
    assert main(["corpus", "stats", str(c)]) == 0
    assert "output documents" in capsys.readouterr().out
    assert main(["tokenizer", "train", str(c), "--out", str(t), "--kind", "bpe", "--vocab-size", "300",
                 "--tokenizer.min_frequency=1"]) == 0
    capsys.readouterr()
    assert main(["tokenizer", "encode", str(t), "The old sailor"]) == 0
    ids = json.loads(capsys.readouterr().out)["ids"]
    assert main(["tokenizer", "decode", str(t), ",".join(map(str, ids))]) == 0
    assert capsys.readouterr().out == "The old sailor\n"
    assert main(["tokenizer", "eval", str(t), str(c)]) == 0
    assert json.loads(capsys.readouterr().out)["roundtrip_exact"] == 1.0
    assert main(["data", "shard", str(c), "--tokenizer", str(t), "--out", str(s)]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "uint16"


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["corpus", "clean", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.txt: no such file" in capsys.readouterr().err
    assert main(["corpus", "clean", str(FIXTURE), "--out", str(tmp_path / "o"), "--filter.max_chars=-1"]) == 2
    assert "filter.min_chars" in capsys.readouterr().err
    assert main(["tokenizer", "train", str(FIXTURE), "--out", str(tmp_path / "t"), "--kind", "char",
                 "--vocab-size", "50"]) == 0
    capsys.readouterr()
    assert main(["tokenizer", "decode", str(tmp_path / "t"), "1 99999"]) == 2
    assert "outside the vocabulary" in capsys.readouterr().err
    assert main(["data", "shard", str(FIXTURE), "--tokenizer", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "s")]) == 2
    assert "nope: no such directory" in capsys.readouterr().err
