"""A run directory (the --out of finetune / pretrain) stands for its model/ in every command, and
its own config.yaml, given back to --config, reruns it."""

import json

import pytest
import torch

from lmlab.artifacts import load_tensors
from lmlab.cli import main
from lmlab.errors import ArtifactError

from .conftest import FIX, tiny

CORPUS = FIX.parent / "tiny_corpus.txt"
PRETRAIN = ["--objective=clm", "--model.preset=gpt2-tiny", f"--data.inputs=[{CORPUS}]", "--data.dataset=null",
            "--data.tokenizer_kind=char", "--data.vocab_size=80", "--data.block_size=24", "--train.max_steps=4",
            "--model.d_model=32", "--model.n_heads=2", "--model.n_layers=2", "--model.d_ff=64", "--train.batch_size=4",
            "--train.progress=false", "--train.threads=1", "--train.eval_every_steps=4", "--train.eval_batches=1",
            "--train.precision=fp32", "--optim.warmup_steps=1", "--data.valid_fraction=0.1"]


def same_weights(a, b) -> bool:
    x, y = load_tensors(a / "model" / "model.safetensors"), load_tensors(b / "model" / "model.safetensors")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_sentiment_commands_take_a_run_directory(sentiment_model, tmp_path, capsys):
    run, _ = sentiment_model
    dev = str(FIX / "sentiment_dev.csv")
    assert main(["evaluate", "sentiment", str(run), "--data", dev, "--out", str(tmp_path / "e.json")]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.5
    assert main(["predict", "sentiment", str(run), "a wonderful film"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("0", "1")
    assert main(["viz", "attention", str(run), "--text", "a fine film", "--out", str(tmp_path / "viz")]) == 0
    assert main(["hf", "export", str(run), str(tmp_path / "hf")]) == 0
    from lmlab.serve.registry import Registry

    assert Registry.load([str(run)]).names() == [run.name]


def test_an_unfinished_run_directory_says_so(tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ArtifactError, match=r"has not finished\); run the same"):
        from lmlab.tasks.evaluate import evaluate_task

        evaluate_task("sentiment", str(tmp_path / "run"), str(FIX / "sentiment_dev.csv"))


def test_a_finetune_run_reruns_from_its_config_yaml(sentiment_model, tmp_path):
    from lmlab.tasks.finetune import finetune

    init, _ = sentiment_model
    train, dev = str(FIX / "sentiment_train.csv"), str(FIX / "sentiment_dev.csv")
    finetune("sentiment", train, dev, init=str(init), out=str(tmp_path / "a"),
             overrides=tiny("--train.max_steps=6", "--train.eval_every_steps=3", "--train.seed=7"))
    config = tmp_path / "a" / "model" / "config.yaml"
    finetune("sentiment", train, dev, init=str(init), out=str(tmp_path / "b"), config=str(config))
    assert same_weights(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b" / "model" / "config.yaml").read_text() == config.read_text()


def test_a_pretrain_run_reruns_from_its_config_yaml_and_generates_from_its_directory(tmp_path, capsys):
    from lmlab.train.pretrain import pretrain

    pretrain(None, str(tmp_path / "a"), PRETRAIN)
    config = tmp_path / "a" / "model" / "config.yaml"
    pretrain(str(config), str(tmp_path / "b"))
    assert same_weights(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b" / "model" / "config.yaml").read_text() == config.read_text()
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "a"), "--prompt", "the", "--max-new-tokens", "3", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("the")
    assert main(["evaluate", "lm", str(tmp_path / "a"), "--data", str(CORPUS)]) == 0


def test_a_typo_in_a_written_config_is_still_refused(sentiment_model, tmp_path):
    from lmlab.errors import ConfigError
    from lmlab.tasks.finetune import finetune

    init, _ = sentiment_model
    config = (init / "model" / "config.yaml").read_text().replace("  max_steps:", "  max_stpes:")
    (tmp_path / "c.yaml").write_text(config)
    with pytest.raises(ConfigError, match="unknown config key train.max_stpes"):
        finetune("sentiment", str(FIX / "sentiment_train.csv"), None, init=str(init), out=str(tmp_path / "x"),
                 config=str(tmp_path / "c.yaml"))
