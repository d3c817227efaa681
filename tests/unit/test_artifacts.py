import errno
import os

import pytest

from lmlab.artifacts import ArtifactWriter, verify, write_json
from lmlab.errors import ArtifactCorrupt, ArtifactError


def test_commit_writes_manifest_and_config(tmp_path):
    with ArtifactWriter(tmp_path / "a", kind="test", config={"x": 1}) as w:
        write_json(w.path / "data.json", {"v": 1})
    m = verify(tmp_path / "a", kind="test")
    assert set(m["files"]) == {"data.json", "config.yaml"}
    assert "torch" in m["versions"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_failure_leaves_nothing_and_keeps_previous(tmp_path):
    with ArtifactWriter(tmp_path / "a", kind="test") as w:
        (w.path / "f").write_text("old")
    with pytest.raises(RuntimeError):
        with ArtifactWriter(tmp_path / "a", kind="test", overwrite=True) as w:
            (w.path / "f").write_text("new")
            raise RuntimeError("boom")
    assert (tmp_path / "a" / "f").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_disk_full_during_commit_keeps_previous(tmp_path, monkeypatch):
    with ArtifactWriter(tmp_path / "a", kind="test") as w:
        (w.path / "f").write_text("old")
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        with ArtifactWriter(tmp_path / "a", kind="test", overwrite=True) as w:
            (w.path / "f").write_text("new")
    monkeypatch.setattr(os, "fsync", real_fsync)
    verify(tmp_path / "a")
    assert (tmp_path / "a" / "f").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_tampering_is_detected(tmp_path):
    with ArtifactWriter(tmp_path / "a", kind="test") as w:
        (w.path / "vocab.json").write_text('{"a": 1}')
    (tmp_path / "a" / "vocab.json").write_text('{"a": 2}')
    with pytest.raises(ArtifactCorrupt, match="vocab.json"):
        verify(tmp_path / "a")
    with pytest.raises(ArtifactError, match="expected 'model'"):
        verify(tmp_path / "a", kind="model")


def test_weights_get_the_mode_of_any_other_file(tmp_path):
    import torch

    from lmlab.artifacts import save_tensors

    old = os.umask(0o022)
    try:
        save_tensors({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
        (tmp_path / "other.json").write_text("{}")
    finally:
        os.umask(old)
    mode = lambda name: (tmp_path / name).stat().st_mode & 0o777  # noqa: E731
    assert mode("model.safetensors") == mode("other.json") == 0o644  # not safetensors' private 0600
