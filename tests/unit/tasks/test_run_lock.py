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
