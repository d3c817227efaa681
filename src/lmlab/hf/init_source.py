"""The ``--init`` of `lmlab pretrain` and `lmlab finetune`: an lmlab model directory, a run directory
(whose ``model/`` is read), or ``hf:HF_DIR``, a Hugging Face model directory imported once into the
run's ``hf-import/`` and then read like any lmlab model directory."""

from __future__ import annotations

from pathlib import Path

from lmlab.errors import ArtifactError
from lmlab.hf.convert import import_hf
from lmlab.model.pretrained import resolve_model_dir


def resolve_init(init: str | None, work: Path) -> Path | None:
    """``MODEL_DIR`` (or a run directory), or ``hf:HF_DIR`` (imported once into work/hf-import) → an lmlab
    model directory."""
    if not init:
        return None
    if init.startswith("hf:"):
        target = work / "hf-import"
        if not (target / "manifest.json").exists():
            import_hf(init[3:], target, overwrite=True)
        return target
    path = Path(init)
    if (path / "config.json").is_file() and not (path / "model.json").is_file():
        raise ArtifactError(f"--init {init}: a Hugging Face model directory; write hf:{init}")
    try:
        return resolve_model_dir(path)
    except ArtifactError as e:
        raise ArtifactError(f"--init {e}") from None
