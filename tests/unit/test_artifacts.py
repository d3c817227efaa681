import errno
import os

import pytest

from lmlab.artifacts import ArtifactWriter, verify, write_json
from lmlab.errors import ArtifactCorrupt, ArtifactError, DiskFull


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
    with pytest.raises(DiskFull, match="no space left.*as it was before.*Free some space") as e:
        with ArtifactWriter(tmp_path / "a", kind="test", overwrite=True) as w:
            (w.path / "f").write_text("new")
    assert str(tmp_path / "a") in str(e.value) and e.value.exit_code == 4
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


def _point_manifest_at(directory, entry, target):
    """Make the manifest list `entry` with the size and hash of `target`, as a forged manifest would."""
    import json

    from lmlab.artifacts import sha256_file

    m = json.loads((directory / "manifest.json").read_text())
    m["files"][entry] = {"sha256": sha256_file(target), "bytes": target.stat().st_size}
    (directory / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("entry", ["ABSOLUTE", "../outside.txt", "sub/../../outside.txt", "link.txt",
                                   "dirlink/outside.txt"])
def test_manifest_entries_may_not_leave_the_directory(tmp_path, entry):
    """An entry that names a file outside the artifact (absolute, through `..` or through a
    symlink) is refused by name, even when that file's hash matches: verify reads nothing outside."""
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    with ArtifactWriter(tmp_path / "a", kind="test") as w:
        (w.path / "f").write_text("x")
        (w.path / "sub").mkdir()
    (tmp_path / "a" / "link.txt").symlink_to(outside)
    (tmp_path / "a" / "dirlink").symlink_to(tmp_path)
    entry = str(outside) if entry == "ABSOLUTE" else entry
    _point_manifest_at(tmp_path / "a", entry, outside)
    with pytest.raises(ArtifactCorrupt, match="manifest.json") as e:
        verify(tmp_path / "a")
    assert repr(entry) in str(e.value) and "outside" in str(e.value)


@pytest.mark.parametrize("entry", ["/dev/zero", "fifo"])
def test_a_manifest_naming_a_device_or_a_pipe_fails_at_once(tmp_path, entry):
    """`/dev/zero` (size 0, endless to read) or a named pipe (open blocks) would hang every reader."""
    import json
    import signal

    with ArtifactWriter(tmp_path / "a", kind="test") as w:
        (w.path / "f").write_text("x")
    if entry == "fifo":
        os.mkfifo(tmp_path / "a" / "fifo")
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    m["files"][entry] = {"sha256": "0" * 64, "bytes": 0}
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(m))

    def hang(*_):
        raise TimeoutError("verify hangs")
    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(5)
    try:
        with pytest.raises(ArtifactCorrupt, match=f"manifest.json.*{entry}"):
            verify(tmp_path / "a")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_symlink_inside_the_directory_is_allowed(tmp_path):
    with ArtifactWriter(tmp_path / "a", kind="test") as w:
        (w.path / "f").write_text("x")
    (tmp_path / "a" / "g").symlink_to("f")
    _point_manifest_at(tmp_path / "a", "g", tmp_path / "a" / "f")
    assert "g" in verify(tmp_path / "a")["files"]


def test_disk_full_in_the_weights_or_a_single_file_is_typed(tmp_path, monkeypatch):
    """safetensors reports ENOSPC as its own error (from Rust); a lone atomic file write as OSError."""
    import safetensors.torch
    import torch
    from safetensors import SafetensorError

    from lmlab.artifacts import save_tensors

    def full(*a, **k):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(DiskFull, match="model.safetensors: no space left"):
        save_tensors({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
    write_json(tmp_path / "summary.json", {"v": 1})

    def enospc(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", enospc)
    with pytest.raises(DiskFull, match="summary.json: no space left"):
        write_json(tmp_path / "summary.json", {"v": 2})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    assert '"v": 1' in (tmp_path / "summary.json").read_text()
