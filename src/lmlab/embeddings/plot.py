"""2-D PCA projection of chosen word vectors, saved as PNG, with CJK labels that render.

PCA: the chosen rows, centred, projected on their top two right singular vectors (the axis
labels give each component's share of the variance).

Fonts: labels that may hold Chinese are drawn through `lmlab.fonts` (DejaVu Sans, then a
CJK family or the ``--font`` file; a character no font covers is an error naming the fix).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from lmlab.errors import DataError
from lmlab.embeddings.vectors import WordVectors
from lmlab.fonts import plot_fonts


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `x` [n, d] → coordinates [n, 2] and the explained-variance share of each axis."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    var = s**2 / max(float((s**2).sum()), 1e-300)
    coords = x @ vt[:2].T
    if coords.shape[1] < 2:  # a single dimension: pad the second axis
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
        var = np.pad(var, (0, 2 - len(var)))
    return coords, var[:2]


def plot_vectors(directory: str, words: list[str] | None = None, out: str = "", top: int = 50,
                 font: str | None = None, title: str | None = None) -> str:
    """CLI: ``lmlab embed plot DIR [WORD...] --out FILE.png``; returns a one-line summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not out:
        raise DataError("--out FILE.png is required")
    wv = WordVectors.load(directory)
    words = list(words or wv.words[:top])
    missing = [w for w in words if w not in wv]
    if missing:
        raise DataError(f"not in the vocabulary of {directory}: {', '.join(missing[:10])}"
                        + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else ""))
    if len(words) < 2:
        raise DataError("plot at least two words")
    families = plot_fonts("".join(words), font)
    coords, var = pca_2d(wv.vectors[[wv.id(w) for w in words]])
    fig, ax = plt.subplots(figsize=(8, 8), dpi=120)
    ax.scatter(coords[:, 0], coords[:, 1], s=12, color="tab:blue")
    for (x, y), w in zip(coords, words):
        ax.annotate(w, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=11, fontfamily=families)
    ax.set_xlabel(f"PC1 ({var[0]:.1%} of variance)")
    ax.set_ylabel(f"PC2 ({var[1]:.1%} of variance)")
    ax.set_title(title or f"{Path(directory).name}: {len(words)} words, PCA", fontfamily=families)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    from lmlab.artifacts import atomic_write_bytes

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buf.getvalue())
    return f"wrote {out}: {len(words)} words, fonts {', '.join(families)}"
