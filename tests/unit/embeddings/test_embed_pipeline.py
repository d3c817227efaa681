"""Vectors trained on a tokenizer's tokens fill a model's embedding matrix exactly; failures
leave nothing behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmlab.embeddings.initialize import init_embeddings
from lmlab.embeddings.train import train_embeddings
from lmlab.embeddings.vectors import WordVectors
from lmlab.errors import DataError

pytest.importorskip("gensim")


def test_tokenizer_vectors_line_up_with_the_model_vocabulary(cluster_corpus, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    path, _ = cluster_corpus
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train([str(path)], trainers.BpeTrainer(vocab_size=60, special_tokens=["[UNK]", "[PAD]"],
                                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    (tmp_path / "tok").mkdir()
    tok.save(str(tmp_path / "tok" / "tokenizer.json"))
    train_embeddings([str(path)], str(tmp_path / "vec"), dim=6, epochs=1, min_count=1,
                     tokenizer=str(tmp_path / "tok"), progress=False)
    wv = WordVectors.load(tmp_path / "vec")
    seen = {t for line in path.read_text().splitlines() for t in tok.encode(line).tokens}
    assert set(wv.words) == seen and any(w.startswith("Ġ") for w in wv.words)  # the model's own tokens
    vocab = tok.get_vocab()
    weight = torch.zeros(len(vocab), 6)
    stats = init_embeddings(weight, vocab, wv, projection="none", rescale=False)
    assert stats["exact"] == stats["matched"] == len(seen)
    for t in seen:
        np.testing.assert_array_equal(weight[vocab[t]].numpy(), wv[t])


def test_glove_on_a_corpus_without_pairs_fails_cleanly(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("alpha\nbeta\nalpha\nbeta\n", encoding="utf-8")  # one word per line: no pairs
    with pytest.raises(DataError, match="no two vocabulary words"):
        train_embeddings([str(corpus)], str(tmp_path / "g"), algo="glove", min_count=1, progress=False)
    assert not (tmp_path / "g").exists()
    assert not list(tmp_path.glob(".g.tmp-*"))
