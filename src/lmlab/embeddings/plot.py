"""2-D PCA projection of chosen word vectors, saved as PNG, with CJK labels that render.

PCA: the chosen rows, centred, projected on their top two right singular vectors (the axis
labels give each component's share of the variance).

Fonts: matplotlib's default DejaVu Sans has no CJK glyphs and would draw boxes ("tofu").
Labels are drawn with a font list — DejaVu Sans, then the first installed CJK family of
`CJK_FAMILIES` (or the ``font`` file given) — and matplotlib (≥ 3.6) falls back glyph by glyph.
Before drawing, every label character is checked against the fonts' character maps; a
character that no font covers is an error naming it and the fix (on Debian/Ubuntu
``apt-get install fonts-wqy-microhei`` or ``fonts-noto-cjk``, or ``--font FILE``), never a
silent box.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from lmlab.errors import DataError
from lmlab.embeddings.vectors import WordVectors

CJK_FAMILIES = ["Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN",
                "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Droid Sans Fallback", "AR PL UMing CN",
                "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "Noto Sans CJK JP"]


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


def label_fonts(font: str | None = None) -> list[tuple[str, str]]:
    """(family, file) pairs to draw labels with: DejaVu Sans, then a CJK font if one exists."""
    from matplotlib import font_manager

    fm = font_manager.fontManager
    chosen = [("DejaVu Sans", font_manager.findfont("DejaVu Sans"))]
    if font:
        path = Path(font)
        if not path.is_file():
            raise DataError(f"{path}: font file not found")
        fm.addfont(str(path))
        chosen.insert(0, (font_manager.FontProperties(fname=str(path)).get_name(), str(path)))
        return chosen
    by_name = {f.name: f.fname for f in fm.ttflist}
    for family in CJK_FAMILIES:
        if family in by_name:
            chosen.append((family, by_name[family]))
            break
    return chosen


def uncovered(text: str, font_files: list[str]) -> list[str]:
    """Characters of `text` (other than spaces) that none of the font files has a glyph for."""
    from matplotlib.ft2font import FT2Font

    covered: set[int] = set()
    for f in font_files:
        covered |= set(FT2Font(f).get_charmap())
    return sorted({ch for ch in text if not ch.isspace() and ord(ch) not in covered})


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
    fonts = label_fonts(font)
    bad = uncovered("".join(words), [f for _, f in fonts])
    if bad:
        raise DataError(f"no installed font has glyphs for {''.join(bad[:20])!r}; install a CJK font "
                        "(Debian/Ubuntu: apt-get install fonts-wqy-microhei or fonts-noto-cjk) "
                        "or pass --font FILE")
    coords, var = pca_2d(wv.vectors[[wv.id(w) for w in words]])
    families = [name for name, _ in fonts]
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
