"""The bag-of-n-grams classifier against its formulas, written out densely."""

import math

import numpy as np
import pytest
import torch

from lmlab.errors import ConfigError
from lmlab.model.ngram import NgramClassifier, NgramConfig, nb_ratios


def test_naive_bayes_ratios_by_hand():
    # vocabulary: 0 = padding, n-grams 1..3; four texts of classes 0, 0, 1, 1
    ids = [np.array([1, 2]), np.array([1]), np.array([2, 3]), np.array([3])]
    r = nb_ratios(ids, [0, 0, 1, 1], vocab_size=4, n_labels=2, alpha=1.0)
    p1, q1 = np.array([1, 2, 3]), np.array([3, 2, 1])  # α + texts of class 1 / of class 0 with grams 1..3
    expected = np.log(p1 / p1.sum()) - np.log(q1 / q1.sum())
    assert r.shape == (4, 2) and r[0].tolist() == [0.0, 0.0]
    assert np.allclose(r[1:, 1].numpy(), expected) and np.allclose(r[:, 0].numpy(), -r[:, 1].numpy())


def test_multiclass_ratios_are_one_against_the_rest():
    rng = np.random.default_rng(0)
    V, C = 11, 3
    ids = [np.unique(rng.integers(1, V, size=4)) for _ in range(9)]
    labels = [i % C for i in range(9)]
    r = nb_ratios(ids, labels, V, C, alpha=0.5).numpy()
    counts = np.zeros((C, V))
    for x, y in zip(ids, labels):
        for f in x:
            counts[y, f] += 1
    for c in range(C):
        p = 0.5 + counts[c, 1:]
        q = 0.5 + np.delete(counts, c, axis=0).sum(0)[1:]
        assert np.allclose(r[1:, c], np.log(p / p.sum()) - np.log(q / q.sum()), atol=1e-6)


def test_forward_is_the_dense_linear_model():
    torch.manual_seed(0)
    B, V, C = 3, 99, 3
    model = NgramClassifier(NgramConfig(vocab_size=V, n_labels=C))
    with torch.no_grad():
        model.weight.normal_()
        model.bias.normal_()
        model.ratios.normal_()
        model.ratios[0] = 0
    rows = [[5, 17, 98], [1], [2, 3, 4, 60, 61, 62, 97]]
    ids = torch.zeros(B, 7, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
    x = torch.zeros(B, V)  # the binary bag of each text
    for i, r in enumerate(rows):
        x[i, r] = 1
    expected = x @ (model.ratios * model.weight) + model.bias
    out = model(ids, attention_mask=(ids != 0).long(), labels=torch.tensor([0, 2, 1]))
    assert torch.allclose(out.logits, expected, atol=1e-5)
    assert out.loss.item() == pytest.approx(torch.nn.functional.cross_entropy(expected, torch.tensor([0, 2, 1])).item(),
                                            rel=1e-5)
    assert torch.allclose(model(ids).logits, expected, atol=1e-5)  # no mask: the padding id marks itself


def test_learns_a_separable_bag_and_config_checks():
    model = NgramClassifier(NgramConfig(vocab_size=6, n_labels=2))
    ids = [np.array([1, 3]), np.array([1, 4]), np.array([2, 3]), np.array([2, 5])]
    labels = [0, 0, 1, 1]
    model.set_ratios(ids, labels)
    x = torch.tensor(np.stack(ids))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    for _ in range(50):
        opt.zero_grad()
        model(x, labels=torch.tensor(labels)).loss.backward()
        opt.step()
    assert model(x).logits.argmax(-1).tolist() == labels
    assert not math.isnan(model.ratios.sum().item())
    with pytest.raises(ConfigError, match="n_labels"):
        NgramConfig(n_labels=1)
