"""Artifact directories: atomic commit, sha256 manifest, safe formats only.

Every stage writes a directory. It is built under a temporary sibling name
(``.NAME.tmp-PID-XXXX``) and becomes visible under its real name only after every file and
the ``manifest.json`` (sha256 and size of each file, format version, library versions) are
written and fsynced: a directory with a manifest is complete, one without is not an artifact.
Readers verify hashes and raise `ArtifactCorrupt` naming the file; a manifest entry that
leaves the directory (an absolute path, ``..``, a symlink out) or names anything but a regular
file is refused before it is opened. Weights are safetensors, configs JSON or YAML; nothing here
can unpickle.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import platform
import secrets
import shutil
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from lmlab.config import dump_config
from lmlab.errors import ArtifactCorrupt, ArtifactError, ConfigError, DiskFull

if TYPE_CHECKING:  # torch is imported by the functions that read or write tensors: a stage that has none
    import torch   # (`lmlab corpus clean`) runs without torch's 200 MiB in its memory

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def no_space(e: BaseException) -> bool:
    """Whether `e` reports a full device or an exhausted quota (safetensors, written in Rust,
    reports it in its message)."""
    if isinstance(e, DiskFull):
        return True
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(e)
    return f"(os error {errno.ENOSPC})" in text or f"(os error {errno.EDQUOT})" in text


def _disk_full(what: Path, left: str, e: BaseException) -> DiskFull:
    quota = isinstance(e, OSError) and e.errno == errno.EDQUOT or f"(os error {errno.EDQUOT})" in str(e)
    return DiskFull(f"{what}: no space left on the device{' (disk quota exceeded)' if quota else ''}; {left}. "
                    "Free some space there "
                    "(a training run keeps fewer checkpoints with a lower --train.keep_last) and run the "
                    "command again: a training run resumes from its last checkpoint")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a single file atomically: temp file in the same directory, fsync, rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if no_space(e):
            raise _disk_full(path, "the file is as it was before", e) from e
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactCorrupt(f"{path}: not valid JSON ({e})") from None


def library_versions() -> dict[str, str]:
    import lmlab

    from importlib.metadata import PackageNotFoundError, version

    versions = {"lmlab": lmlab.__version__, "python": platform.python_version()}
    for name in ("torch", "safetensors", "tokenizers", "transformers", "numpy"):
        try:  # from the installed metadata: importing transformers alone takes most of a second
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return versions


class ArtifactWriter:
    """Context manager that builds an artifact directory and commits it atomically.

    >>> with ArtifactWriter(out, kind="lmlab-model", config=cfg) as w:
    ...     save_tensors(state, w.path / "model.safetensors")
    On an exception the temporary directory is removed and `out` is left as it was.
    """

    def __init__(self, out_dir: str | Path, kind: str, config: Any = None,
                 overwrite: bool = False, extra: dict[str, Any] | None = None):
        self.out_dir = Path(out_dir)
        self.kind = kind
        self.config = config
        self.overwrite = overwrite
        self.extra = extra or {}
        self.path = self.out_dir.parent / f".{self.out_dir.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"

    def __enter__(self) -> "ArtifactWriter":
        if self.out_dir.exists() and not self.overwrite and any(self.out_dir.iterdir()):
            raise ArtifactError(
                f"{self.out_dir}: already exists and is not empty; choose another output "
                "directory or pass --overwrite"
            )
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.path.mkdir()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            if no_space(exc):
                raise self._disk_full(exc) from exc
            return
        try:
            self._commit()
        except BaseException as e:
            shutil.rmtree(self.path, ignore_errors=True)
            if no_space(e):
                raise self._disk_full(e) from e
            raise

    def _disk_full(self, e: BaseException) -> DiskFull:
        left = (f"{self.out_dir} is as it was before" if self.out_dir.exists()
                else "nothing was written")
        return _disk_full(self.out_dir, f"{left}, no partial copy is left", e)

    def _commit(self) -> None:
        if self.config is not None and not (self.path / "config.yaml").exists():
            (self.path / "config.yaml").write_text(dump_config(self.config), encoding="utf-8")
        files = {}
        for p in sorted(self.path.rglob("*")):
            if p.is_file():
                rel = p.relative_to(self.path).as_posix()
                files[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        manifest = {
            "kind": self.kind,
            "format_version": FORMAT_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": library_versions(),
            "files": files,
            **self.extra,
        }
        (self.path / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        with open(self.path / MANIFEST, "rb") as f:
            os.fsync(f.fileno())
        _fsync_dir(self.path)
        # A directory cannot be renamed over a non-empty one: the old copy steps aside first. A
        # kill between the two renames leaves both complete under dot-names; `recover` puts one back.
        old = None
        if self.out_dir.exists():
            old = self.out_dir.parent / f".{self.out_dir.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
            os.replace(self.out_dir, old)
        try:
            os.replace(self.path, self.out_dir)
        except BaseException:
            if old is not None:
                os.replace(old, self.out_dir)
            raise
        try:  # committed: the rename is visible; a failed directory fsync only weakens durability
            _fsync_dir(self.out_dir.parent)
        except OSError:
            pass
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def recover(out_dir: str | Path) -> bool:
    """Put back `out_dir` when a replacement was cut short between its two renames (see
    `ArtifactWriter`): the new copy if its manifest verifies, else the old one; other leftovers
    of `out_dir` are removed. Only for a caller that holds the directory's lock (a run's)."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        return False
    leftovers = sorted(out_dir.parent.glob(f".{out_dir.name}.tmp-*")) + \
        sorted(out_dir.parent.glob(f".{out_dir.name}.old-*"))
    restored = False
    for path in leftovers:
        if not restored:
            try:
                verify(path)
            except ArtifactError:
                pass
            else:
                os.replace(path, out_dir)
                _fsync_dir(out_dir.parent)
                restored = True
                continue
        shutil.rmtree(path, ignore_errors=True)
    return restored


def claim(directory: str | Path, options: dict[str, Any], record: str, what: str = "data") -> None:
    """Refuse a `directory` of derived artifacts (a run's data, its tokenizer) built with other
    `options` than these, naming each field; record them in `record` before a first build.
    Refused rather than rebuilt: the directory belongs to the run whose checkpoints sit beside
    it, and a rebuild would change that run's inputs under it."""
    directory = Path(directory)
    path = directory / record
    if path.exists():
        have = read_json(path)
        changed = [f"{k}: {have.get(k)!r} when it was built, {options.get(k)!r} now"
                   for k in sorted(set(have) | set(options)) if have.get(k) != options.get(k)]
        if changed:
            raise ConfigError(f"{directory}: holds {what} built with other options ({'; '.join(changed)}). "
                              f"Restore the options, delete {directory} to rebuild it (the checkpoints beside it, "
                              "if any, then no longer resume), or give another --out")
        return
    if directory.is_dir() and any(not p.name.startswith(".") for p in directory.iterdir()):
        raise ConfigError(f"{directory}: holds {what} without a record of the options it was built with; delete "
                          f"{directory} to rebuild it, or give another --out")
    directory.mkdir(parents=True, exist_ok=True)
    write_json(path, options)


def read_manifest(directory: str | Path, kind: str | None = None) -> dict[str, Any]:
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: no such directory")
    if not (directory / MANIFEST).exists():
        raise ArtifactError(
            f"{directory}: no {MANIFEST}; this is not a complete lmlab artifact "
            "(an interrupted write, or a directory made by another tool)"
        )
    manifest = read_json(directory / MANIFEST)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ArtifactCorrupt(f"{directory / MANIFEST}: malformed manifest")
    if kind is not None and manifest.get("kind") != kind:
        raise ArtifactError(f"{directory}: holds a {manifest.get('kind')!r} artifact, expected {kind!r}")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ArtifactError(
            f"{directory}: format version {manifest['format_version']} is newer than this lmlab "
            f"understands ({FORMAT_VERSION}); upgrade lmlab"
        )
    return manifest


def inside(directory: str | Path, rel: str) -> Path | None:
    """``directory/rel`` when `rel` stays inside `directory`: relative, no ``..`` component, and
    not leaving it through a symlink (one to a file inside is fine); else None."""
    pure = PurePosixPath(rel)
    if not rel or pure.is_absolute() or ".." in pure.parts:
        return None
    path = Path(directory) / pure
    try:
        if not path.resolve().is_relative_to(Path(directory).resolve()):
            return None
    except (OSError, RuntimeError):  # a symlink loop
        return None
    return path


def verify(directory: str | Path, kind: str | None = None, only: list[str] | None = None) -> dict[str, Any]:
    """Check the manifest's hashes (of `only` files, or all); return the manifest."""
    directory = Path(directory)
    manifest = read_manifest(directory, kind)
    for rel, meta in manifest["files"].items():
        if only is not None and rel not in only:
            continue
        p = inside(directory, rel) if isinstance(rel, str) else None
        if p is None:  # e.g. "/dev/zero": reading it would never end
            raise ArtifactCorrupt(f"{directory / MANIFEST}: entry {rel!r} points outside {directory}; an "
                                  "artifact lists only its own files: rewrite it with the command that made it")
        if not p.exists():
            raise ArtifactCorrupt(f"{p}: listed in the manifest but missing")
        if not p.is_file():  # a pipe blocks its reader, a device may never end
            raise ArtifactCorrupt(f"{directory / MANIFEST}: entry {rel!r} is not a regular file; rewrite the "
                                  "artifact with the command that made it")
        if not isinstance(meta, dict) or p.stat().st_size != meta.get("bytes") or sha256_file(p) != meta.get("sha256"):
            raise ArtifactCorrupt(f"{p}: contents differ from the manifest (truncated or modified)")
    return manifest


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path,
                 metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    try:
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    except Exception as e:
        if no_space(e):
            raise _disk_full(Path(path), "the file is incomplete", e) from None
        raise
    # safetensors writes through a private temporary file (mode 0600); give the weights the mode
    # any other file of the directory gets, so that a model shared with a group stays readable
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def load_tensors(path: str | Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file; any parse failure becomes `ArtifactCorrupt` naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: weights file not found")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError, OverflowError) as e:
        raise ArtifactCorrupt(f"{path}: not a valid safetensors file ({e})") from None
