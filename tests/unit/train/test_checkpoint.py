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


def _dots(root):
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def test_a_kill_between_the_two_renames_of_an_overwrite_loses_no_step(tmp_path):
    """Overwriting step-4 renames the old copy away, then the new one into place: a SIGKILL
    between the two leaves no step-00000004. Resuming puts the complete copy back and resumes
    there, not from the step before."""
    import subprocess
    import sys
    from pathlib import Path

    from lmlab.train.checkpoint import RunLock

    out = tmp_path / "run"
    make_trainer(out, max_steps=4, save_every_steps=2, keep_last=0).fit()
    root = out / "checkpoints"
    with open(root / "step-00000004" / "model.safetensors", "r+b") as f:  # so that the rerun rewrites step 4
        f.seek(200)
        f.write(b"\xff\xfe")
    child = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from helpers import make_trainer
real = os.replace
def replace(src, dst):
    if os.path.basename(dst) == "step-00000004" and ".tmp-" in os.path.basename(src):
        os._exit(9)  # killed between renaming the old copy away and the new one into place
    real(src, dst)
os.replace = replace
make_trainer({str(out)!r}, max_steps=4, save_every_steps=2, keep_last=0).fit()
"""
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr
    assert not (root / "step-00000004").exists()  # the kill landed in the window
    tr = make_trainer(out, max_steps=4, save_every_steps=2, keep_last=0)
    with RunLock(out):
        tr._resume()
    assert tr.step == 4 and tr.last_checkpoint.endswith("step-00000004")
    assert latest_checkpoint(root).name == "step-00000004"
    assert _dots(root) == []


def test_an_error_between_the_two_renames_puts_the_old_copy_back(run, tmp_path, monkeypatch):
    import json
    import shutil

    from lmlab.artifacts import ArtifactWriter, verify
    from lmlab.train.checkpoint import KIND

    root = tmp_path / "c"
    shutil.copytree(run / "checkpoints", root)
    before = (root / "step-00000012" / "state.json").read_text()
    real = os.replace

    def replace(src, dst):
        if os.path.basename(dst) == "step-00000012" and ".tmp-" in os.path.basename(src):
            raise OSError(5, "Input/output error")
        real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        with ArtifactWriter(root / "step-00000012", kind=KIND, overwrite=True) as w:
            (w.path / "state.json").write_text(json.dumps({"step": 12, "new": True}))
    monkeypatch.setattr(os, "replace", real)
    verify(root / "step-00000012", kind=KIND)
    assert (root / "step-00000012" / "state.json").read_text() == before
    assert _dots(root) == []


@pytest.mark.parametrize("left", [["old"], ["old", "partial-tmp"], ["tmp", "old"]])
def test_discovery_puts_back_a_checkpoint_whose_overwrite_was_cut_short(run, tmp_path, left):
    """Leftovers of an overwrite killed between its renames: the new copy (`.tmp-`, complete once
    its manifest verifies) is preferred, else the old one (`.old-`); the rest is removed."""
    import shutil

    from lmlab.train.checkpoint import recover_interrupted

    root = tmp_path / "c"
    shutil.copytree(run / "checkpoints", root)
    step = root / "step-00000012"
    if "tmp" in left:
        shutil.copytree(step, root / ".step-00000012.tmp-77-beef")
        (root / ".step-00000012.tmp-77-beef" / "NEW").write_text("")  # not in its manifest: still verifies
    if "partial-tmp" in left:
        (root / ".step-00000012.tmp-78-cafe").mkdir()  # killed while building: no manifest
    os.replace(step, root / ".step-00000012.old-77-dead")
    assert latest_checkpoint(root).name == "step-00000008"
    recover_interrupted(root)
    assert latest_checkpoint(root).name == "step-00000012"
    assert (step / "NEW").exists() == ("tmp" in left)
    assert _dots(root) == []


def test_disk_full_at_any_write_of_a_save_keeps_the_previous_checkpoint(run, tmp_path, monkeypatch, figure):
    """A4: ENOSPC at a random write of a checkpoint save (a JSON file, the weights, an fsync, a
    rename), 30 trials: a typed DiskFull (exit status 4) or a committed save, the previous
    checkpoint still verifies, no temporary directory is left."""
    import builtins
    import errno
    import shutil
    from pathlib import Path

    import safetensors.torch

    import lmlab.artifacts
    from lmlab.artifacts import verify
    from lmlab.errors import DiskFull
    from lmlab.train.checkpoint import KIND, save_checkpoint

    tr = make_trainer(tmp_path / "t")
    model_state, optim_state = tr.model.state_dict(), tr.optimizer.state_dict()
    state = dict(model_state=model_state, optimizer_state=optim_state, scaler=None, trainer_state={"x": 1},
                 run_config={"test": True}, model_config=tr.model.config)
    calls = {"n": 0, "fail_at": -1}

    def counted(fn):
        def wrapper(*a, **k):
            calls["n"] += 1
            if calls["n"] == calls["fail_at"]:
                raise OSError(errno.ENOSPC, "No space left on device")
            return fn(*a, **k)
        return wrapper

    def writing_open(file, mode="r", *a, **k):  # a write to a file the artifact code opens itself
        f = builtins.open(file, mode, *a, **k)
        if "w" in mode or "a" in mode:
            f.write = counted(f.write)
        return f

    rng = random.Random(0)
    ok = typed = leftovers = 0
    for trial in range(30):
        root = tmp_path / f"trial{trial}"
        shutil.copytree(run / "checkpoints" / "step-00000012", root / "step-00000012")
        calls.update(n=0, fail_at=rng.randint(1, 24))  # a save makes 21-22 such calls
        with monkeypatch.context() as m:
            m.setattr(os, "fsync", counted(os.fsync))
            m.setattr(os, "replace", counted(os.replace))
            m.setattr(Path, "write_text", counted(Path.write_text))
            m.setattr(safetensors.torch, "save_file", counted(safetensors.torch.save_file))
            m.setattr(lmlab.artifacts, "open", writing_open, raising=False)
            step = 12 if trial % 2 else 16  # overwrite the previous step, or write the next one
            try:
                save_checkpoint(root, step, **state)
            except DiskFull as e:
                typed += e.exit_code == 4 and "no space left" in str(e)
            else:  # past the last write, or at the directory fsync after the rename: committed
                verify(root / f"step-{step:08d}", kind=KIND)
                typed += 1
        try:
            verify(root / "step-00000012", kind=KIND)
            ok += 1
        except Exception:
            pass
        leftovers += len([p for p in root.iterdir() if p.name.startswith(".")])
    figure(previous_verifies=ok, typed_errors=typed, leftover_tmp_dirs=leftovers, trials=30)
    assert (ok, typed, leftovers) == (30, 30, 0)
