"""Checkpoint discovery ignores junk, retention keeps the newest, corruption is refused."""

import os
import random

import pytest

from lmlab.errors import ArtifactCorrupt
from lmlab.train.checkpoint import apply_retention, latest_checkpoint, list_checkpoints, load_checkpoint

from .helpers import make_trainer


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    make_trainer(out, max_steps=12, save_every_steps=4, keep_last=0).fit()
    return out


def test_discovery_skips_junk(run, tmp_path, figure):
    import shutil

    rng = random.Random(0)
    ok = 0
    for trial in range(20):
        root = tmp_path / f"layout{trial}" / "checkpoints"
        shutil.copytree(run / "checkpoints", root)
        junk = rng.sample(["nomanifest", "stepx", "badhash", "tmp", "deleting"], k=rng.randint(1, 5))
        if "nomanifest" in junk:
            (root / "step-99999999").mkdir()
        if "stepx" in junk:
            (root / "step-x").mkdir()
        if "badhash" in junk:
            shutil.copytree(root / "step-00000012", root / "step-00000016")
            with open(root / "step-00000016" / "model.safetensors", "r+b") as f:
                f.seek(100)
                f.write(b"\x00\x01")
        if "tmp" in junk:
            (root / ".step-00000020.tmp-123-abcd").mkdir()
        if "deleting" in junk:
            (root / ".deleting-step-00000024-1").mkdir()
        ok += latest_checkpoint(root).name == "step-00000012"
    figure(correct_layouts=ok)
    assert ok == 20


def test_retention_keeps_the_newest(run, tmp_path):
    import shutil

    root = tmp_path / "c"
    shutil.copytree(run / "checkpoints", root)
    (root / ".step-00000016.tmp-999-dead").mkdir()  # a save cut short by kill -9
    apply_retention(root, 2)
    assert [s for s, _ in list_checkpoints(root)] == [8, 12]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_corrupted_checkpoint_is_refused(run, tmp_path):
    import shutil

    path = tmp_path / "step-00000012"
    shutil.copytree(run / "checkpoints" / "step-00000012", path)
    with open(path / "optimizer.safetensors", "r+b") as f:
        f.truncate(os.path.getsize(path / "optimizer.safetensors") - 7)
    tr = make_trainer(tmp_path / "x")
    with pytest.raises(ArtifactCorrupt, match="optimizer.safetensors"):
        load_checkpoint(path, tr.model, tr.optimizer)
