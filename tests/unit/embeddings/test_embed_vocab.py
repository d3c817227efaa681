"""Tokenisation, vocabulary and the id stream, against plain-Python recomputation."""

from __future__ import annotations

import gzip
from collections import Counter

import numpy as np
import pytest

from lmlab.embeddings import vocab as V
from lmlab.errors import ConfigError, DataError


def decode(enc):
    """Per-line token lists of an EncodedCorpus."""
    ids = enc.ids()
    out, start = [], 0
    for end in enc.line_ends.tolist():
        out.append([enc.vocab.words[i] for i in ids[start:end]])
        start = end
    return out


def test_words_tokenizer_keeps_inner_apostrophes_and_drops_punctuation():
    tok = V.make_tokenizer("words")
    assert tok(["Don't STOP, well-known  (café) 42!\n"]) == [["don't", "stop", "well-known", "café", "42"]]
    assert V.make_tokenizer("words", lowercase=False)(["Big Dog"]) == [["Big", "Dog"]]
    assert V.make_tokenizer("whitespace")(["A, b\tc\n"]) == [["a,", "b", "c"]]


def test_jieba_segments_chinese_and_drops_punctuation():
    pytest.importorskip("jieba")
    toks = V.make_tokenizer("jieba")(["我爱北京天安门。\r\n"])[0]
    assert "北京" in toks and "天安门" in toks and "。" not in toks


def test_tokenizer_directory_gives_model_tokens(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    assert V.make_tokenizer(str(tmp_path))(["hello big world\n"]) == [["hello", "[UNK]", "world"]]
    assert V.VocabConfig(tokenizer=str(tmp_path)).tokenizer == str(tmp_path)
    with pytest.raises(ConfigError, match="vocab.tokenizer"):
        V.VocabConfig(tokenizer=str(tmp_path / "nope"))


@pytest.mark.parametrize("chunk", [3, 1 << 22])
def test_encode_corpus_matches_python_recount(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(V, "CHUNK_TOKENS", chunk)  # small blocks exercise the line-end rewrite
    lines = ["b a c a", "", "a d", "rare b", "", "c c a b d", "x", "b"]
    (tmp_path / "part1.txt").write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "part2.gz", "wt", encoding="utf-8") as f:
        f.write("\r\n".join(lines[4:]) + "\r\n")
    enc = V.encode_corpus([tmp_path], V.VocabConfig(min_count=2, tokenizer="whitespace"), tmp_path,
                          progress=False)
    counts = Counter(t for line in lines for t in line.split())
    kept = {w for w, c in counts.items() if c >= 2}
    # descending count, ties in first-appearance order
    first = {w: i for i, w in reversed(list(enumerate(t for line in lines for t in line.split())))}
    assert enc.vocab.words == sorted(kept, key=lambda w: (-counts[w], first[w]))
    assert enc.vocab.counts.tolist() == [counts[w] for w in enc.vocab.words]
    assert decode(enc) == [[t for t in line.split() if t in kept] for line in lines]
    assert enc.tokens_seen == sum(counts.values()) and enc.lines == len(lines)
    blocks = list(enc.blocks(max_tokens=4))
    assert np.concatenate([b[0] for b in blocks]).tolist() == enc.ids().tolist()


def test_max_vocab_keeps_most_frequent(tmp_path):
    (tmp_path / "c.txt").write_text("a a a b b c\n", encoding="utf-8")
    enc = V.encode_corpus([tmp_path / "c.txt"], V.VocabConfig(min_count=1, max_vocab=2), tmp_path, progress=False)
    assert enc.vocab.words == ["a", "b"] and decode(enc) == [["a", "a", "a", "b", "b"]]


def test_empty_corpus_and_empty_vocabulary_are_clear_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("\n ,,, \n", encoding="utf-8")
    with pytest.raises(DataError, match="no tokens"):
        V.encode_corpus([tmp_path / "empty.txt"], V.VocabConfig(), tmp_path, progress=False)
    (tmp_path / "small.txt").write_text("one two three\n", encoding="utf-8")
    with pytest.raises(DataError, match="min_count=5"):
        V.encode_corpus([tmp_path / "small.txt"], V.VocabConfig(min_count=5), tmp_path, progress=False)
    with pytest.raises(DataError, match="not found"):
        V.encode_corpus([tmp_path / "missing.txt"], V.VocabConfig(), tmp_path, progress=False)


def test_non_utf8_names_the_line(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"fine line\nsecond\nbad \xff\xfe byte\n")
    with pytest.raises(DataError, match=r"bad.txt: line 3: not UTF-8"):
        V.encode_corpus([tmp_path / "bad.txt"], V.VocabConfig(min_count=1), tmp_path, progress=False)


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="vocab.min_count"):
        V.VocabConfig(min_count=0)


def test_cleaned_corpus_directory_is_read_by_its_train_split(tmp_path):
    """The corpus stage's output feeds the embeddings stage directly."""
    import json

    from lmlab.corpus.pipeline import clean_corpus
    from lmlab.embeddings.vocab import VocabConfig, encode_corpus

    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps({"text": f"alpha beta gamma {i}\nsecond line delta"}) + "\n" for i in range(50)))
    clean_corpus([raw], tmp_path / "corpus", overrides=["--split.valid=0.0"])
    enc = encode_corpus([tmp_path / "corpus"], VocabConfig(min_count=1), tmp_path)
    assert {"alpha", "delta", "gamma"} <= set(enc.vocab.words)
