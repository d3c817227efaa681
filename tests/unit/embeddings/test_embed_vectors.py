"""WordVectors: artifact round trip, exports read by gensim, queries against gensim's KeyedVectors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmlab.embeddings.vectors import WordVectors, neighbors, _parse_query
from lmlab.errors import ArtifactCorrupt, DataError, UnknownWord

gensim = pytest.importorskip("gensim")
from gensim.models import KeyedVectors  # noqa: E402


@pytest.fixture
def wv():
    rng = np.random.default_rng(3)
    words = ["king", "queen", "man", "woman", "北京", "东京", "don't"] + [f"w{i}" for i in range(24)]
    return WordVectors(words, rng.normal(size=(len(words), 7)).astype(np.float32), np.arange(len(words), 0, -1))


def reference(wv):
    kv = KeyedVectors(wv.dim)
    kv.add_vectors(wv.words, wv.vectors)
    return kv


@pytest.mark.parametrize("fmt,binary,no_header", [("word2vec-text", False, False),
                                                   ("word2vec-binary", True, False),
                                                   ("glove-text", False, True)])
def test_exports_read_back_by_gensim_with_equal_vectors(wv, tmp_path, fmt, binary, no_header):
    path = wv.export(tmp_path / f"v.{fmt}", fmt)
    kv = KeyedVectors.load_word2vec_format(str(path), binary=binary, no_header=no_header)
    assert kv.index_to_key == wv.words
    np.testing.assert_array_equal(kv.vectors, wv.vectors)  # exact: %.9g round-trips float32


def test_export_refuses_words_with_spaces(tmp_path):
    wv = WordVectors(["a b", "c"], np.ones((2, 3)))
    with pytest.raises(DataError, match="whitespace"):
        wv.export(tmp_path / "x.txt")
    assert not (tmp_path / "x.txt").exists()
    with pytest.raises(DataError, match="unknown export format"):
        WordVectors(["c"], np.ones((1, 3))).export(tmp_path / "y", "npz")  # type: ignore[arg-type]


def test_queries_match_gensim(wv):
    kv = reference(wv)
    assert wv.similarity("king", "北京") == pytest.approx(float(kv.similarity("king", "北京")), abs=1e-6)
    for pos, neg in [(["king", "woman"], ["man"]), (["北京"], []), (["w3", "w5", "w7"], ["w1", "queen"])]:
        ours = wv.most_similar(pos, neg, topn=6)
        ref = kv.most_similar(positive=pos, negative=neg, topn=6)
        assert [w for w, _ in ours] == [w for w, _ in ref]
        np.testing.assert_allclose([s for _, s in ours], [s for _, s in ref], atol=1e-5)
        ours = wv.most_similar_cosmul(pos, neg, topn=6)
        ref = kv.most_similar_cosmul(positive=pos, negative=neg, topn=6)
        assert [w for w, _ in ours] == [w for w, _ in ref]
        np.testing.assert_allclose([s for _, s in ours], [s for _, s in ref], rtol=1e-4)
    restricted = wv.most_similar("king", topn=3, restrict_vocab=10)
    assert [w for w, _ in restricted] == [w for w, _ in kv.most_similar("king", topn=3, restrict_vocab=10)]
    assert all(wv.id(w) < 10 for w, _ in restricted)
    assert wv.analogy("man", "king", "woman", topn=4) == wv.most_similar(["king", "woman"], ["man"], topn=4)


def test_unknown_word_is_a_typed_error(wv):
    with pytest.raises(UnknownWord, match="'prince' is not in the vocabulary"):
        wv.most_similar("prince")
    with pytest.raises(KeyError):  # also a KeyError, as dict users expect
        wv["prince"]


def test_artifact_round_trip_and_corruption(wv, tmp_path):
    wv.save(tmp_path / "vec", stats={"x": 1})
    back = WordVectors.load(tmp_path / "vec")
    assert back.words == wv.words and back.counts.tolist() == wv.counts.tolist()
    np.testing.assert_array_equal(back.vectors, wv.vectors)
    manifest = json.loads((tmp_path / "vec" / "manifest.json").read_text())
    assert manifest["kind"] == "lmlab-word-vectors" and "vectors.safetensors" in manifest["files"]
    blob = bytearray((tmp_path / "vec" / "vectors.safetensors").read_bytes())
    blob[-3] ^= 0xFF
    (tmp_path / "vec" / "vectors.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ArtifactCorrupt, match="vectors.safetensors"):
        WordVectors.load(tmp_path / "vec")


def test_mismatched_shapes_and_duplicates_are_rejected():
    with pytest.raises(DataError, match="do not match 3 words"):
        WordVectors(["a", "b", "c"], np.zeros((2, 4)))
    with pytest.raises(DataError, match="duplicate word 'a'"):
        WordVectors(["a", "b", "a"], np.zeros((3, 4)))


def test_neighbors_command_text(wv, tmp_path):
    wv.save(tmp_path / "vec")
    out = neighbors(str(tmp_path / "vec"), ["king - man + woman", "nope"], topn=2)
    expected = wv.most_similar(["king", "woman"], ["man"], topn=2)
    assert f"  {expected[0][0]}\t{expected[0][1]:.4f}" in out
    assert "nope: not in the vocabulary" in out
    assert _parse_query("a + b - c") == (["a", "b"], ["c"])


@pytest.mark.parametrize("fmt", ["word2vec-text", "word2vec-binary", "glove-text"])
def test_import_reads_gensim_written_files(wv, tmp_path, fmt):
    from lmlab.embeddings.vectors import read_vectors_file

    kv = reference(wv)
    path = tmp_path / "v"
    kv.save_word2vec_format(str(path), binary=fmt == "word2vec-binary", write_header=fmt != "glove-text")
    back = read_vectors_file(path, fmt)
    assert back.words == wv.words
    np.testing.assert_allclose(back.vectors, wv.vectors, rtol=1e-6)


def test_import_errors_name_the_line(tmp_path):
    from lmlab.embeddings.vectors import read_vectors_file

    bad = tmp_path / "bad.txt"
    bad.write_text("3 2\na 1 2\nb 1 2 3\nc 1 2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.txt: line 3: 3 values, expected 2"):
        read_vectors_file(bad)
    bad.write_text("3 2\na 1 2\nb 1 2\n", encoding="utf-8")
    with pytest.raises(DataError, match="promised 3 vectors, found 2"):
        read_vectors_file(bad)
    bad.write_bytes(b"2 4\nab " + np.zeros(4, "<f4").tobytes() + b"\ncd " + b"\0" * 6)
    with pytest.raises(DataError, match="record 2: truncated"):
        read_vectors_file(bad, "word2vec-binary")


def test_import_of_binary_or_valueless_text_is_a_data_error(tmp_path):
    """A pickle handed to `embed import --format glove-text` (C1): bytes that are not UTF-8, or
    lines of one word and no values, are refused by line, not decoded into vectors of size 0."""
    import pickle

    from lmlab.embeddings.vectors import read_vectors_file

    bad = tmp_path / "v.txt"
    bad.write_bytes(b"a 1 2\nb 3 4\n\x80\x02cbuiltins\nopen\n")
    with pytest.raises(DataError, match=r"v.txt: line 3: not UTF-8"):
        read_vectors_file(bad, "glove-text")
    bad.write_bytes(pickle.dumps({"w": 1}, protocol=0))  # text: one token per line
    with pytest.raises(DataError, match=r"line 1: a word without values"):
        read_vectors_file(bad, "glove-text")
