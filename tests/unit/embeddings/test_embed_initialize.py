"""init_embeddings: rows filled by token, PCA when dimensions differ, norms kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmlab.embeddings.initialize import init_embeddings, normalize_token, pca_project
from lmlab.embeddings.vectors import WordVectors
from lmlab.errors import DataError


@pytest.fixture
def wv():
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "mat", "dog"]
    return WordVectors(words, rng.normal(size=(6, 7)).astype(np.float32))


def test_equal_dims_copies_matched_rows_up_to_one_scale(wv):
    torch.manual_seed(0)
    weight = torch.randn(5, 7) * 0.02
    before = weight.clone()
    vocab = {"[PAD]": 0, "cat": 1, "mat": 2, "zebra": 3, "the": 4}
    stats = init_embeddings(weight, vocab, wv, projection="none")
    assert stats["matched"] == 3 and stats["match_rate"] == pytest.approx(3 / 5)
    assert stats["unmatched_examples"] == ["[PAD]", "zebra"]
    for tok in ("cat", "mat", "the"):
        np.testing.assert_allclose(weight[vocab[tok]].numpy(), stats["scale"] * wv[tok], rtol=1e-5)
    assert torch.equal(weight[0], before[0]) and torch.equal(weight[3], before[3])
    # rescaled so the mean row norm of the filled rows is what it was
    before_norm = before[[1, 2, 4]].norm(dim=1).mean().item()
    assert weight[[1, 2, 4]].norm(dim=1).mean().item() == pytest.approx(before_norm, rel=1e-5)


def test_pca_when_dimensions_differ_preserves_geometry(wv):
    weight = torch.zeros(6, 3)
    stats = init_embeddings(weight, wv.words, wv, projection="pca", rescale=False)
    assert stats["projection"] == "pca" and stats["matched"] == 6 and 0 < stats["variance_kept"] <= 1
    proj, kept = pca_project(wv.vectors, 3)
    np.testing.assert_allclose(weight.numpy(), proj, rtol=1e-5, atol=1e-6)
    # closed form: the projection keeps the top-3 eigenvalues of the covariance
    x = wv.vectors.astype(np.float64) - wv.vectors.mean(0)
    eig = np.sort(np.linalg.eigvalsh(x.T @ x))[::-1]
    assert kept == pytest.approx(eig[:3].sum() / eig.sum())
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(proj.T @ proj))[::-1], eig[:3], rtol=1e-6)


def test_normalized_matching_strips_subword_markers():
    assert [normalize_token(t) for t in ("Ġthe", "▁Cat", "##sat", "Ġ")] == ["the", "cat", "sat", "ġ"]
    wv = WordVectors(["the", "cat"], np.eye(2, 4, dtype=np.float32))
    weight = torch.zeros(3, 4)
    stats = init_embeddings(weight, ["Ġthe", "▁Cat", "cat"], wv, projection="none", match="normalized",
                            rescale=False)
    assert stats["exact"] == 1 and stats["normalized"] == 2 and stats["match_rate"] == 1.0
    assert weight[0].tolist() == [1, 0, 0, 0] and weight[1].tolist() == [0, 1, 0, 0]


def test_errors_are_clear(wv):
    with pytest.raises(DataError, match="d_model=5"):
        init_embeddings(torch.zeros(6, 5), wv.words, wv, projection="none")
    with pytest.raises(DataError, match="fewer than d_model=9"):
        init_embeddings(torch.zeros(6, 9), wv.words, wv)
    with pytest.raises(DataError, match="outside the 2 rows"):
        init_embeddings(torch.zeros(2, 7), {"cat": 5}, wv)
