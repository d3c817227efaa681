"""`lmlab finetune` takes the run lock of --out before it writes anything there (its tokenizer
under work/): a second run on a directory in use is refused with the directory untouched."""

from pathlib import Path

import pytest

from lmlab.errors import ArtifactError
from lmlab.tasks.finetune import finetune

FIX = Path(__file__).parents[2] / "fixtures" / "tasks"


def test_a_second_finetune_in_a_directory_in_use_writes_nothing(tmp_path, another_run):
    with another_run(tmp_path) as pid:
        with pytest.raises(ArtifactError, match=f"pid {pid}"):
            finetune("sentiment", str(FIX / "sentiment_train.csv"), out=str(tmp_path),
                     overrides=["--train.max_steps=1", "--train.progress=false"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]


def test_a_tokenizer_built_with_other_options_is_refused_by_field(tmp_path):
    """The tokenizer a run trained with task.vocab_size=120 (under --out, in work/) is not reused for
    100 without a word (nor for other training texts): the message names the field, both values and
    the ways out; the same options reuse it."""
    from lmlab.errors import ConfigError

    args = ["--train.max_steps=1", "--train.progress=false", "--model.d_model=32", "--model.n_layers=1",
            "--model.n_heads=2", "--model.d_ff=64"]
    train = str(FIX / "sentiment_train.csv")
    finetune("sentiment", train, out=str(tmp_path), overrides=[*args, "--task.vocab_size=120"])
    vocab = (tmp_path / "work" / "tokenizer" / "vocab.txt").read_bytes()
    with pytest.raises(ConfigError, match=r"task.vocab_size: 120 .* 100 now") as e:
        finetune("sentiment", train, out=str(tmp_path), overrides=[*args, "--task.vocab_size=100"])
    assert f"delete {tmp_path / 'work'}" in str(e.value) and "another --out" in str(e.value)
    other = tmp_path.parent / "other.csv"
    other.write_text("\n".join((FIX / "sentiment_train.csv").read_text().splitlines()[:-3]) + "\n")
    with pytest.raises(ConfigError, match="train: "):
        finetune("sentiment", str(other), out=str(tmp_path), overrides=[*args, "--task.vocab_size=120"])
    assert (tmp_path / "work" / "tokenizer" / "vocab.txt").read_bytes() == vocab
    again = finetune("sentiment", train, out=str(tmp_path), overrides=[*args, "--task.vocab_size=120",
                                                                         "--train.max_steps=2"])
    assert again["steps"] == 2
