"""Shared fixtures for the embeddings tests: tiny corpora written by the tests themselves."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def cluster_corpus(tmp_path):
    """Lines drawn from one of two disjoint 7-word topics, plus shared filler words: a corpus
    where any working embedding puts same-topic words closer than cross-topic ones."""
    rng = np.random.default_rng(5)
    topics = [[f"fruit{i}" for i in range(7)], [f"metal{i}" for i in range(7)]]
    filler = ["the", "a", "of", "and", "is"]
    lines = []
    for k in range(900):
        topic = topics[k % 2]
        words = [rng.choice(topic) if rng.random() < 0.7 else rng.choice(filler) for _ in range(11)]
        lines.append(" ".join(words))
    path = tmp_path / "cluster.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, topics
