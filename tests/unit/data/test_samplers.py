"""Samplers: block alignment, exact resume from state_dict, whole-sequence coverage, masking."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lmlab.corpus.pipeline import clean_corpus
from lmlab.data.samplers import CausalBlockSampler, MaskedSequenceSampler, iter_eval_blocks, mask_tokens
from lmlab.data.shards import TokenShards, shard_corpus
from lmlab.errors import CheckpointMismatch, ConfigError
from lmlab.tokenizer.tokenizer import Tokenizer
from lmlab.tokenizer.train import train_tokenizer

FIXTURE = Path(__file__).parents[2] / "fixtures" / "text" / "mixed.txt"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("samplers")
    clean_corpus([FIXTURE], root / "corpus", overrides=["--split.valid=0", "--shard_bytes=2500"])
    train_tokenizer(root / "corpus", root / "wp", kind="wordpiece", vocab_size=800, overrides=["--min_frequency=1"])
    shard_corpus(root / "corpus", root / "wp", root / "shards")
    return TokenShards(root / "shards"), Tokenizer.load(root / "wp")


def test_causal_blocks_are_contiguous_slices(setup):
    shards, _ = setup
    flat = [np.asarray(s, dtype=np.int64) for s in shards.shards]
    sampler = CausalBlockSampler(shards, block_size=13, batch_size=5, seed=1)
    for _ in range(20):
        x, y = sampler.next_batch()
        assert x.shape == (5, 13) and x.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
        for row_x, row_y in zip(x.numpy(), y.numpy()):
            full = np.concatenate([row_x, row_y[-1:]])
            assert any(any(np.array_equal(s[i:i + 14], full) for i in range(len(s) - 13)) for s in flat)


def test_causal_resume_is_exact(setup):
    shards, _ = setup
    a = CausalBlockSampler(shards, 7, 3, seed=11)
    for _ in range(4):
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))  # survives JSON
    expected = [a.next_batch() for _ in range(3)]
    b = CausalBlockSampler(shards, 7, 3, seed=11)
    b.load_state_dict(state)
    for (x1, y1), (x2, y2) in zip(expected, [b.next_batch() for _ in range(3)]):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(CausalBlockSampler(shards, 7, 3, seed=12).batch_at(4)[0], expected[0][0])
    with pytest.raises(CheckpointMismatch, match="block_size"):
        CausalBlockSampler(shards, 8, 3, seed=11).load_state_dict(state)
    with pytest.raises(ConfigError, match="no shard"):
        CausalBlockSampler(shards, 10**7, 1)


def test_eval_blocks_cover_in_order(setup):
    shards, _ = setup
    xs = [x for x, _ in iter_eval_blocks(shards, 11, 4)]
    total = sum(x.shape[0] for x in xs)
    assert total == sum((len(s) - 1) // 11 for s in shards.shards)
    assert torch.equal(xs[0][0], torch.from_numpy(np.asarray(shards.shards[0][:11], dtype=np.int64)))


def test_masked_sequences_cover_every_document_once_per_epoch(setup):
    shards, tok = setup
    L = 9  # short windows so that documents are split
    s = MaskedSequenceSampler(shards, L, batch_size=1, pad_id=tok.pad_id, cls_id=tok.cls_id, sep_id=tok.sep_id, seed=2)
    seen = []
    for _ in range(len(s)):
        b = s.next_batch()
        ids = b["input_ids"][0][b["attention_mask"][0].bool()].tolist()
        assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id and len(ids) <= L
        seen.append(tuple(ids[1:-1]))
    assert s.epoch == 0
    # reassemble: windows of each document, in stored order, concatenate to the document
    ordered = [tuple(b["input_ids"][0][1:int(b["attention_mask"][0].sum()) - 1].tolist()) for b in
               MaskedSequenceSampler(shards, L, 1, tok.pad_id, tok.cls_id, tok.sep_id, shuffle=False).iter_epoch()]
    assert sorted(seen) == sorted(ordered)
    rebuilt = [t for w in ordered for t in w]
    docs = [t for i in range(shards.num_documents) for t in shards.document(i)[:-1].tolist()]
    assert rebuilt == docs


def test_masked_resume_and_padding(setup):
    shards, tok = setup
    a = MaskedSequenceSampler(shards, 32, 4, tok.pad_id, tok.cls_id, tok.sep_id, seed=5)
    for _ in range(len(a) // 4 + 2):  # crosses an epoch boundary
        a.next_batch()
    state = a.state_dict()
    assert state["epoch"] == 1
    want = [a.next_batch() for _ in range(3)]
    b = MaskedSequenceSampler(shards, 32, 4, tok.pad_id, tok.cls_id, tok.sep_id, seed=5)
    b.load_state_dict(state)
    for w, g in zip(want, [b.next_batch() for _ in range(3)]):
        assert torch.equal(w["input_ids"], g["input_ids"]) and torch.equal(w["attention_mask"], g["attention_mask"])
    batch = want[0]
    assert torch.all(batch["input_ids"][batch["attention_mask"] == 0] == tok.pad_id)


def test_mask_tokens_follows_80_10_10():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (64, 128), generator=g)
    ids[:, 0] = 2
    attn = torch.ones_like(ids)
    attn[:, 100:] = 0
    inputs, labels = mask_tokens(ids, attn, mask_id=4, vocab_size=1000, special_ids=[2], prob=0.15, generator=g)
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, 100:].any()
    rate = chosen.sum().item() / (64 * 99)
    assert 0.13 < rate < 0.17
    assert torch.equal(labels[chosen], ids[chosen])
    masked = (inputs == 4) & chosen
    assert 0.75 < masked.sum().item() / chosen.sum().item() < 0.85
    unchanged = (inputs == ids) & chosen
    assert 0.07 < unchanged.sum().item() / chosen.sum().item() < 0.14  # 10 % kept + random hits
