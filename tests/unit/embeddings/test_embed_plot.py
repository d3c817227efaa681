"""PCA projection plot: coordinates by closed form, CJK labels rendered or a clear error."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from lmlab.embeddings import plot as P  # noqa: E402
from lmlab.embeddings.vectors import WordVectors  # noqa: E402
from lmlab.errors import DataError  # noqa: E402
from lmlab import fonts as F  # noqa: E402


def test_pca_2d_matches_eigendecomposition():
    x = np.random.default_rng(1).normal(size=(9, 5)) * [5, 3, 1, 0.5, 0.1]
    coords, var = P.pca_2d(x)
    xc = x - x.mean(0)
    w, v = np.linalg.eigh(xc.T @ xc)
    top = v[:, ::-1][:, :2]
    np.testing.assert_allclose(np.abs(coords), np.abs(xc @ top), rtol=1e-8)  # axes up to sign
    np.testing.assert_allclose(var, w[::-1][:2] / w.sum(), rtol=1e-8)


def _cjk_font_or_skip():
    fonts = F.font_files()
    if len(fonts) < 2:
        pytest.skip("no CJK font installed (apt-get install fonts-wqy-microhei)")
    return fonts


@pytest.fixture
def vec_dir(tmp_path):
    words = ["北京", "上海", "东京", "king", "queen", "巴黎"]
    WordVectors(words, np.random.default_rng(0).normal(size=(6, 4))).save(tmp_path / "v")
    return tmp_path / "v", words


def test_plot_writes_png_with_cjk_labels_covered(vec_dir, tmp_path):
    fonts = _cjk_font_or_skip()
    assert F.uncovered("北京上海king", [f for _, f in fonts]) == []
    directory, words = vec_dir
    msg = P.plot_vectors(str(directory), words, out=str(tmp_path / "p.png"))
    data = (tmp_path / "p.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000 and fonts[1][0] in msg


def test_missing_glyphs_are_an_error_not_tofu(vec_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(F, "CJK_FAMILIES", [])  # as on a machine without CJK fonts
    directory, words = vec_dir
    with pytest.raises(DataError, match="fonts-wqy-microhei"):
        P.plot_vectors(str(directory), words, out=str(tmp_path / "p.png"))
    assert not (tmp_path / "p.png").exists()
    with pytest.raises(DataError, match="not in the vocabulary.*nope"):
        P.plot_vectors(str(directory), ["king", "nope"], out=str(tmp_path / "p.png"))
