"""The proving ground: a real Chinese novel and real IMDB reviews through clean → tokenizer → shards → batches."""

import os
from pathlib import Path

import pytest
import torch

from lmlab.corpus.pipeline import clean_corpus, iter_documents
from lmlab.data.samplers import CausalBlockSampler
from lmlab.data.shards import TokenShards, shard_corpus
from lmlab.tokenizer.evaluate import evaluate_tokenizer
from lmlab.tokenizer.tokenizer import Tokenizer
from lmlab.tokenizer.train import train_tokenizer

SHARED = Path(os.environ.get("LMLAB_DATA", Path(__file__).parents[4] / "shared" / "data"))
pytestmark = pytest.mark.skipif(not (SHARED / "sidamingzhu").exists(), reason=f"shared datasets not found at {SHARED}")


def test_novel_with_crlf_and_long_lines(tmp_path):
    novel = SHARED / "sidamingzhu" / "红楼梦.txt"
    summary = clean_corpus([novel], tmp_path / "c", overrides=["--read.doc_per=line", "--split.valid=0.05"])
    docs = list(iter_documents(tmp_path / "c"))
    assert summary["documents_out"] > 1000 and not any("\r" in d for d in docs)
    train_tokenizer(tmp_path / "c", tmp_path / "t", kind="bpe", vocab_size=3000)
    report = evaluate_tokenizer(tmp_path / "t", tmp_path / "c", split="valid")
    assert report["roundtrip_exact"] == 1.0 and report["bytes_per_token"] > 1.5  # merges beyond single bytes
    shard_corpus(tmp_path / "c", tmp_path / "t", tmp_path / "s")
    tok = Tokenizer.load(tmp_path / "t")
    x, y = CausalBlockSampler(TokenShards(tmp_path / "s", tokenizer=tok), 64, 4, seed=0).next_batch()
    text = tok.decode(x[0].tolist())
    assert sum("\u4e00" <= c <= "\u9fff" for c in text) > 20  # real Chinese came through
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_imdb_tar_reviews_lose_their_html(tmp_path):
    summary = clean_corpus([SHARED / "imdb" / "aclImdb_unsup.tar.gz"], tmp_path / "c",
                           overrides=["--read.doc_per=file", "--split.valid=0", "--read.chunk_bytes=1048576"])
    assert summary["documents_in"] == 50001  # 50,000 reviews + urls_unsup.txt
    for i, doc in enumerate(iter_documents(tmp_path / "c")):
        assert "<br" not in doc and "&quot;" not in doc
        if i == 3000:
            break
