"""The n-gram vocabulary of the bag-of-n-grams classifier: which grams a text has, ids, files."""

import json

import pytest

from lmlab.errors import ArtifactCorrupt, ArtifactError, ConfigError
from lmlab.tokenizer.ngrams import FILE, NgramVocab, auto_unit


def test_char_grams_are_every_substring_up_to_n_once():
    v = NgramVocab([], "char", 3)
    assert v.grams("好好好") == {"好", "好好", "好好好"}  # binary: a repeated gram once
    assert v.grams("房间很干净") == {"房", "间", "很", "干", "净", "房间", "间很", "很干", "干净",
                                    "房间很", "间很干", "很干净"}
    # NFKC (full-width letters and punctuation), lowercase, runs of white space as one space
    assert v.grams("ＯＫ，\t\n好") == {"o", "k", ",", " ", "好", "ok", "k,", ", ", " 好", "ok,", "k, ", ", 好"}


def test_word_grams_split_punctuation_and_lowercase():
    v = NgramVocab([], "word", 2)
    assert v.grams("Great film!") == {"great", "film", "!", "great film", "film !"}
    assert NgramVocab([], "word", 2, lowercase=False).grams("Great") == {"Great"}


def test_build_orders_by_frequency_and_encode_drops_unseen():
    v = NgramVocab.build(["a b", "a c", "a b"], unit="word", n_max=2, min_count=2)
    assert v.ngrams == ["<pad>", "a", "a b", "b"]  # by count, then alphabetically; "c", "a c" occur once
    assert v.encode("b a b z").tolist() == [1, 2, 3]  # sorted, each once; "z", "b a", "b z" unknown
    assert v.encode("b a z").tolist() == [1, 3]
    assert v.encode("zzz").tolist() == [] and v.vocab_size == 4 and v.pad_id == 0


def test_save_load_round_trip_and_corruption(tmp_path):
    v = NgramVocab.build(["很好", "很差"], unit="char", n_max=2)
    v.save(tmp_path / "v")
    w = NgramVocab.load(tmp_path / "v")
    assert w.ngrams == v.ngrams and w.fingerprint == v.fingerprint
    assert w.encode("很好").tolist() == v.encode("很好").tolist()
    assert NgramVocab.build(["很好"], unit="char", n_max=2).fingerprint != v.fingerprint
    path = tmp_path / "v" / FILE
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "ngrams": data["ngrams"] + ["x"]}))
    with pytest.raises(ArtifactCorrupt):  # the manifest's hash no longer matches
        NgramVocab.load(tmp_path / "v")
    with pytest.raises(ArtifactError):
        NgramVocab.load(tmp_path / "missing")


def test_unit_choice():
    assert auto_unit(["这家酒店很好", "服务 差 OK"]) == "char"
    assert auto_unit(["a fine film", "很好 but mostly English words here"]) == "word"
    with pytest.raises(ConfigError, match="unit"):
        NgramVocab([], "byte", 2)
