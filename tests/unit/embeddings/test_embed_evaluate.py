"""Analogy and similarity evaluation against gensim and scipy."""

from __future__ import annotations

import numpy as np
import pytest

from lmlab.embeddings.evaluate import (evaluate_analogies, evaluate_similarity, evaluate_vectors, rankdata,
                                       read_analogies, read_similarity, spearman, pearson)
from lmlab.embeddings.vectors import WordVectors
from lmlab.errors import DataError

gensim = pytest.importorskip("gensim")
from gensim.models import KeyedVectors  # noqa: E402

WORDS = ([f"w{i}" for i in range(37)] + ["Paris", "paris", "France", "berlin", "Germany", "germany",
                                          "King", "queen", "man", "woman"])


@pytest.fixture
def setup(tmp_path):
    rng = np.random.default_rng(11)
    vec = rng.normal(size=(len(WORDS), 5)).astype(np.float32)  # 5 dims: many different answers
    wv = WordVectors(WORDS, vec)
    kv = KeyedVectors(5)
    kv.add_vectors(WORDS, vec)
    lines = []
    for s in range(3):
        lines.append(f": section-{s}")
        lines += [" ".join(rng.choice(WORDS, 4, replace=False)) for _ in range(70)]
        lines.append("zzz Paris yyy France")  # unknown words
    path = tmp_path / "q.txt"
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")  # CRLF like ca8
    return wv, kv, path


@pytest.mark.parametrize("restrict", [47, 29])
@pytest.mark.parametrize("case_insensitive", [True, False])
def test_3cosadd_matches_gensim_evaluate_word_analogies(setup, restrict, case_insensitive):
    wv, kv, path = setup
    score, sections = kv.evaluate_word_analogies(str(path), restrict_vocab=restrict,
                                                 case_insensitive=case_insensitive)
    ours = evaluate_analogies(wv, path, restrict_vocab=restrict, case_insensitive=case_insensitive,
                              methods=("add",))
    add = ours["methods"]["3CosAdd"]
    assert [s["correct"] for s in add["sections"]] == [len(s["correct"]) for s in sections[:-1]]
    assert [s["covered"] for s in add["sections"]] == [len(s["correct"]) + len(s["incorrect"]) for s in sections[:-1]]
    assert add["accuracy"] == pytest.approx(score)
    assert ours["questions"] == 213 and ours["covered"] == sum(s["covered"] for s in add["sections"])
    assert ours["coverage"] == pytest.approx(ours["covered"] / 213)


def test_3cosmul_matches_gensim_most_similar_cosmul(setup):
    """gensim's evaluate ignores 3CosMul, so the oracle is its most_similar_cosmul per question,
    with evaluate_word_analogies' answer rule (first of the top 5 that is not a question word)."""
    wv, kv, path = setup
    correct = 0
    for q in read_analogies(path):
        a, b, c, d = (w.upper() for w in q.words)
        upper = {w.upper(): w for w in reversed(WORDS)}
        if not all(x in upper for x in (a, b, c, d)):
            continue
        sims = kv.most_similar_cosmul(positive=[upper[b], upper[c]], negative=[upper[a]], topn=5)
        predicted = None
        for w, _ in sims:
            predicted = w.upper()
            if predicted not in (a, b, c):
                break
        correct += predicted == d
    ours = evaluate_analogies(wv, path, restrict_vocab=len(WORDS), methods=("mul",))
    assert ours["methods"]["3CosMul"]["correct"] == correct > 0


def test_similarity_matches_gensim_and_scipy(setup, tmp_path):
    wv, kv, _ = setup
    rng = np.random.default_rng(2)
    rows = ["# comment", "Word 1\tWord 2\tHuman (mean)"]  # header row is skipped
    for _ in range(40):
        a, b = rng.choice(WORDS, 2, replace=False)
        rows.append(f"{a}\t{b}\t{rng.integers(0, 6)}")  # integer scores: many ties
    rows.append("unknown\tParis\t3.5")
    path = tmp_path / "sim.tsv"
    path.write_text("\r\n".join(rows) + "\r\n", encoding="utf-8")
    r = evaluate_similarity(wv, path)
    p, s, oov = kv.evaluate_word_pairs(str(path))
    assert r["pearson"] == pytest.approx(p[0], abs=1e-6)
    assert r["spearman"] == pytest.approx(s[0], abs=1e-6)
    assert r["oov_share"] * 100 == pytest.approx(oov) and r["covered"] == 40


def test_rank_correlations_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 31).astype(float), rng.normal(size=31)
    np.testing.assert_allclose(rankdata(x), stats.rankdata(x))
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)  # closed form


def test_malformed_files_name_the_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text(": s\na b c d\na b c\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.txt: line 3: expected 4 words"):
        read_analogies(bad)
    bad.write_text("a b c d\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 1: a question before the first"):
        read_analogies(bad)
    bad.write_text("a\tb\t1.0\nc\td\tlots\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2: expected 'word1<TAB>word2<TAB>score'"):
        read_similarity(bad)
    with pytest.raises(DataError, match="not found"):
        read_similarity(tmp_path / "nope.tsv")


def test_real_benchmark_files_parse():
    assert len(read_analogies("google")) == 19544
    assert len(read_similarity("wordsim353")) == 353
    assert len(read_similarity("simlex999")) == 999


def test_chinese_benchmark_files_parse(monkeypatch):
    import os
    from pathlib import Path

    data = os.environ.get("LMLAB_DATA") or str(Path(__file__).parents[4] / "shared" / "data")
    if not Path(data, "ca8").is_dir():
        pytest.skip("Chinese benchmark files not found (set LMLAB_DATA)")
    monkeypatch.setenv("LMLAB_DATA", data)
    qs = read_analogies("ca8")
    assert len(qs) == 953 and not any("\r" in w for q in qs for w in q.words)
    assert len(read_similarity("wordsim240")) == 240


def test_eval_command_writes_json(setup, tmp_path):
    wv, _, path = setup
    wv.save(tmp_path / "vec")
    out = evaluate_vectors(str(tmp_path / "vec"), analogies=[str(path)], json_out=str(tmp_path / "r.json"))
    assert "3CosAdd: accuracy" in out and "3CosMul" in out and (tmp_path / "r.json").exists()
    with pytest.raises(DataError, match="nothing to evaluate"):
        evaluate_vectors(str(tmp_path / "vec"))
