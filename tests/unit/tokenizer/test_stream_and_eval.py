"""Streaming decoder never emits half a character; evaluation figures against hand counts."""

import random

import pytest

from lmlab.corpus.filters import word_count
from lmlab.tokenizer.evaluate import evaluate_tokenizer
from lmlab.tokenizer.tokenizer import Tokenizer

TEXTS = ["中文和 emoji 👨‍👩‍👧 mixed", "naïve café e\u0301", "שלום עולם", "plain ascii words here",
         "长长的一句中文，没有空格也没有标点"]


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram", "char"])
def test_stream_pieces_are_whole_characters_and_concatenate_to_decode(trained, kind):
    tok = Tokenizer.load(trained[kind])
    for text in TEXTS:
        ids = tok.encode(text)
        pieces = list(tok.iter_decode(ids))
        assert "".join(pieces) == tok.decode(ids)
        if kind == "bpe":
            assert not any("\ufffd" in p for p in pieces)
            assert len(ids) > len(pieces) or text.isascii()  # some characters spanned several tokens


def test_bpe_stream_holds_incomplete_bytes(trained):
    tok = Tokenizer.load(trained["bpe"])
    ids = tok.encode("👨‍👩‍👧")
    dec = tok.stream_decoder()
    out = [dec.push(i) for i in ids]
    assert len(ids) > 3 and "" in out  # at least one token ended inside a character
    assert "".join(out) + dec.flush() == "👨‍👩‍👧"


def test_bpe_stream_random_ids_match_decode(trained):
    tok = Tokenizer.load(trained["bpe"])
    rng = random.Random(0)
    for _ in range(50):
        ids = [rng.randrange(2, tok.vocab_size) for _ in range(rng.randint(1, 12))]
        pieces = list(tok.iter_decode(ids))
        joined = "".join(pieces)
        assert joined.encode("utf-8").decode("utf-8") == joined
        assert joined.replace("\ufffd", "") == tok.decode(ids).replace("\ufffd", "")


def test_eval_figures(trained, tmp_path):
    held = tmp_path / "held.txt"
    lines = ["hello world again", "我们喜欢月光", "a rare ☃ snowman"]
    held.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = Tokenizer.load(trained["char"])
    r = evaluate_tokenizer(tok, held)
    n_tokens = sum(len(tok.encode(t)) for t in lines)
    assert r["documents"] == 3 and r["tokens"] == n_tokens
    assert r["bytes_per_token"] == round(sum(len(t.encode()) for t in lines) / n_tokens, 4)
    assert r["tokens_per_word"] == round(n_tokens / sum(word_count(t) for t in lines), 4)
    assert r["unk_rate"] == round(1 / n_tokens, 6)  # the snowman
    assert r["roundtrip_exact"] == round(2 / 3, 6)
    bpe = evaluate_tokenizer(Tokenizer.load(trained["bpe"]), held)
    assert bpe["roundtrip_exact"] == 1.0 and bpe["unk_rate"] == 0.0
    wp = evaluate_tokenizer(Tokenizer.load(trained["wordpiece"]), held)
    assert wp["roundtrip_normalized"] >= 2 / 3 - 1e-9
