"""A 2-D map of a model's token embeddings: PCA of the rows of the input embedding matrix E.

The rows (one per token, special tokens included) are centred and projected on their top two
principal axes (SVD); the axis labels give each axis's share of the variance. ``--top`` tokens
are labelled with their decoded text (Chinese shows as characters): merged tokens first in id
order (the most frequent merges of a BPE vocabulary), then single bytes. Writes
``embeddings.png`` and ``embeddings.json`` (token, id, x, y for every row).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `x` [n, d] → coordinates [n, 2] and the explained-variance share of each axis."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    var = s**2 / max(float((s**2).sum()), 1e-300)
    return x @ vt[:2].T, var[:2]


def embeddings_command(model_dir: str, out: str, top: int = 60, overwrite: bool = False) -> str:
    """CLI: ``lmlab viz embeddings MODEL_DIR --out DIR``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmlab.artifacts import ArtifactWriter, write_json
    from lmlab.config import check
    from lmlab.generate import load_for_generation
    from lmlab.fonts import font_files, uncovered

    check(isinstance(top, int) and top >= 0, "top", f"must be an integer ≥ 0, got {top!r}")
    model, tok = load_for_generation(model_dir)
    emb = model.embed.tokens.weight.detach().float().cpu().numpy()[: tok.vocab_size]
    coords, var = pca_2d(emb)
    words = [tok.decode([i]) for i in range(len(emb))]
    specials = {i for i in tok.special_ids.values() if i is not None}
    fonts = font_files()
    files = [f for _, f in fonts]
    # label `top` drawable tokens: merged tokens (≥ 2 characters, or one CJK character) first, in
    # id order (a BPE's lowest merge ids are its most frequent pairs), then single bytes
    drawable = [i for i in range(len(words)) if i not in specials and words[i].strip()
                and "\ufffd" not in words[i] and not uncovered(words[i], files)]
    chosen = sorted(drawable, key=lambda i: (len(words[i].strip()) < 2 and ord(words[i].strip()[0]) < 0x2E80, i))[:top]
    with ArtifactWriter(out, kind="lmlab-viz-embeddings", overwrite=overwrite) as w:
        fig, ax = plt.subplots(figsize=(8, 8), dpi=110)
        ax.scatter(coords[:, 0], coords[:, 1], s=4, alpha=0.4, color="tab:blue")
        families = [name for name, _ in fonts]
        for i in chosen:
            ax.annotate(words[i].strip(), coords[i], xytext=(2, 2), textcoords="offset points", fontsize=8,
                        fontfamily=families)
        ax.set_xlabel(f"PC1 ({var[0]:.1%} of variance)")
        ax.set_ylabel(f"PC2 ({var[1]:.1%} of variance)")
        ax.set_title(f"token embeddings of {Path(model_dir).name} ({len(emb)} tokens), PCA", fontfamily=families)
        ax.grid(alpha=0.3)
        fig.savefig(w.path / "embeddings.png", bbox_inches="tight")
        plt.close(fig)
        write_json(w.path / "embeddings.json", {"explained_variance": var.tolist(), "points": [
            {"id": i, "token": words[i], "x": float(coords[i, 0]), "y": float(coords[i, 1])} for i in range(len(emb))]})
    return f"{len(emb)} token embeddings, PCA ({var[0]:.1%} + {var[1]:.1%} of variance) → {out}"
