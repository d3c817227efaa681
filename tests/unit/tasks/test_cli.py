"""The finetune / evaluate / predict rows of the command table, run through `lmlab.cli.main`."""

import json

from lmlab.cli import main

from .conftest import FIX, tiny


def test_cli_round_trip(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["finetune", "sentiment", "--train", str(FIX / "sentiment_train.csv"), "--out", str(out),
                 *tiny("--train.max_steps=20")]) == 0  # no --eval: trains, no selection
    capsys.readouterr()
    assert main(["evaluate", "sentiment", str(out / "model"), "--data", str(FIX / "sentiment_dev.csv"),
                 "--out", str(tmp_path / "e.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert 0 <= printed["accuracy"] <= 1 and json.loads((tmp_path / "e.json").read_text())["metrics"]["f1"] >= 0
    assert main(["predict", "sentiment", str(out / "model"), "the film was good"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("0", "1")
    assert main(["evaluate", "sentiment", str(out / "model"), "--data", str(FIX / "sentiment3_train.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "was not seen in training" in err
    assert main(["finetune", "poetry", "--train", "x.csv", "--out", str(tmp_path / "x")]) == 2
    assert "unknown task 'poetry'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing half-written
