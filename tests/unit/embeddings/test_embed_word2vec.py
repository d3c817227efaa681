"""Word2Vec through lmlab: learns, reproducible with a seed on one thread, all variants run."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("gensim")

from lmlab.embeddings.train import train_embeddings  # noqa: E402
from lmlab.embeddings.vectors import WordVectors  # noqa: E402
from lmlab.errors import ConfigError  # noqa: E402


def topic_scores(wv, topics):
    same = np.mean([wv.similarity(a, b) for t in topics for a in t for b in t if a != b])
    cross = np.mean([wv.similarity(a, b) for a in topics[0] for b in topics[1]])
    return same, cross


def test_skipgram_learns_topics_and_writes_stats(cluster_corpus, tmp_path):
    path, topics = cluster_corpus
    stats = train_embeddings([str(path)], str(tmp_path / "v"), dim=12, window=3, epochs=8, min_count=1,
                             threads=2, progress=False)
    wv = WordVectors.load(tmp_path / "v")
    same, cross = topic_scores(wv, topics)
    assert same > cross + 0.2, (same, cross)
    assert stats["vocab_size"] == len(wv) == 19 and wv.dim == 12
    assert stats["tokens_seen"] == stats["tokens_kept"] == 900 * 11
    assert len(stats["loss_per_epoch"]) == 8 and stats["loss_per_epoch"][-1] < stats["loss_per_epoch"][0]
    assert (tmp_path / "v" / "config.yaml").read_text().count("architecture: skipgram") == 1


@pytest.mark.parametrize("variant", [["--word2vec.architecture=cbow"], ["--word2vec.objective=hs"]])
def test_cbow_and_hierarchical_softmax_learn(cluster_corpus, tmp_path, variant):
    path, topics = cluster_corpus
    train_embeddings([str(path)], str(tmp_path / "v"), dim=12, window=3, epochs=10, min_count=1,
                     progress=False, overrides=variant)
    same, cross = topic_scores(WordVectors.load(tmp_path / "v"), topics)
    assert same > cross + 0.1, (variant, same, cross)


def _train_in_subprocess(corpus, out, seed):
    """A fresh interpreter each time: Python's string hash is randomised per process, which is
    what broke gensim's seeding."""
    code = ("import sys; from lmlab.embeddings.train import train_embeddings; "
            f"train_embeddings([{str(corpus)!r}], {str(out)!r}, dim=9, epochs=2, min_count=1, threads=1, "
            f"seed={seed}, progress=False)")
    subprocess.run([sys.executable, "-c", code], check=True, env={**__import__("os").environ,
                                                                  "PYTHONHASHSEED": "random"})
    return WordVectors.load(out).vectors


def test_seeded_single_thread_runs_are_bit_reproducible_across_processes(cluster_corpus, tmp_path):
    path, _ = cluster_corpus
    a = _train_in_subprocess(path, tmp_path / "a", 5)
    b = _train_in_subprocess(path, tmp_path / "b", 5)
    np.testing.assert_array_equal(a, b)
    c = train_embeddings([str(path)], str(tmp_path / "c"), dim=9, epochs=2, min_count=1, threads=1, seed=6,
                         progress=False)
    assert c and not np.array_equal(a, WordVectors.load(tmp_path / "c").vectors)


def test_bad_config_names_the_field(cluster_corpus, tmp_path):
    path, _ = cluster_corpus
    with pytest.raises(ConfigError, match="word2vec.sample"):
        train_embeddings([str(path)], str(tmp_path / "v"), overrides=["--word2vec.sample=2"])
    with pytest.raises(ConfigError, match="unknown config key word2vec.negatives"):
        train_embeddings([str(path)], str(tmp_path / "v"), overrides=["--word2vec.negatives=2"])
    assert not (tmp_path / "v").exists()
