"""Masking and denoising: rates, 80/10/10 split, whole words, determinism by batch index."""

import pytest
import torch

from lmlab.train.objectives import CausalLM, Denoising, MaskedLM, chinese_word_starts, word_start_fn

V, MASK, PAD, CLS, SEP = 99, 4, 0, 2, 3


def batch(b=64, t=53):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, V, (b, t), generator=g)
    ids[:, 0], ids[:, -1] = CLS, SEP
    mask = torch.ones_like(ids)
    mask[::3, 40:] = 0
    ids[::3, 40:] = PAD
    return {"input_ids": ids, "attention_mask": mask}


def test_mlm_rates_and_80_10_10(figure):
    obj = MaskedLM(V, MASK, [PAD, CLS, SEP, MASK], seed=0)
    b = batch(256)
    p = obj.prepare(b, 7)
    chosen = p.inputs["labels"] != -100
    eligible = b["attention_mask"].bool() & (b["input_ids"] > SEP)
    assert not (chosen & ~eligible).any()  # never padding or specials
    rate = chosen.sum().item() / eligible.sum().item()
    masked = (p.inputs["input_ids"] == MASK) & chosen
    kept = (p.inputs["input_ids"] == b["input_ids"]) & chosen
    n = chosen.sum().item()
    figure(rate=rate, mask_share=masked.sum().item() / n, kept_share=kept.sum().item() / n)
    assert abs(rate - 0.15) < 0.01
    assert abs(masked.sum().item() / n - 0.8) < 0.03
    assert abs(kept.sum().item() / n - 0.1 - 0.1 / V) < 0.03
    assert torch.equal(p.inputs["labels"][chosen], b["input_ids"][chosen])
    assert p.n_targets == n
    again = obj.prepare(b, 7)
    assert torch.equal(again.inputs["input_ids"], p.inputs["input_ids"])  # pure function of the index
    assert not torch.equal(obj.prepare(b, 8).inputs["input_ids"], p.inputs["input_ids"])


def test_whole_word_masking_masks_all_pieces_of_a_word():
    vocab = [f"w{i}" if i % 3 == 0 else f"##p{i}" for i in range(V)]
    for i in (PAD, CLS, SEP, MASK):
        vocab[i] = f"[S{i}]"
    obj = MaskedLM(V, MASK, [PAD, CLS, SEP, MASK], seed=0, word_starts=word_start_fn(vocab))
    b = batch(128)
    p = obj.prepare(b, 3)
    ids, chosen = b["input_ids"], p.inputs["labels"] != -100
    starts = word_start_fn(vocab)(ids) | ~(b["attention_mask"].bool() & (ids > SEP))
    word = torch.cumsum(starts.long(), 1)
    for row in range(ids.size(0)):
        for w in word[row][chosen[row]].unique():
            members = (word[row] == w) & b["attention_mask"][row].bool() & (ids[row] > SEP)
            assert chosen[row][members].all()
    assert 0.10 < chosen.sum().item() / (b["attention_mask"].bool() & (ids > SEP)).sum().item() < 0.20


def test_chinese_words_from_jieba():
    pytest.importorskip("jieba")
    tokens = ["我", "们", "喜", "欢", "自", "然", "语", "言", "处", "理", "ok", "##ay"]
    starts = chinese_word_starts(tokens)
    assert starts[0] and not starts[1]  # 我们
    assert starts[10] and not starts[11]  # ok ##ay
    assert sum(starts[:10]) < 10


def test_denoising_reconstructs_the_original():
    b = batch(8, 30)
    obj = Denoising(MASK, PAD, start_id=CLS, seed=0)
    p = obj.prepare(b, 0)
    src, labels = p.inputs["input_ids"], p.inputs["labels"]
    assert (src == MASK).any() and src.size(1) < b["input_ids"].size(1)
    real = b["attention_mask"].bool()
    assert torch.equal(labels[real], b["input_ids"][real]) and (labels[~real] == -100).all()
    assert torch.equal(p.inputs["decoder_input_ids"][:, 1:][real[:, 1:]], b["input_ids"][:, :-1][real[:, 1:]])
    kept = (src != MASK) & p.inputs["attention_mask"].bool()
    assert kept.sum() < real.sum()  # about 15 % removed
    assert (real.sum() - kept.sum()).item() / real.sum().item() == pytest.approx(0.15, abs=0.05)


def test_clm_counts_only_real_targets():
    x = torch.zeros(2, 5, dtype=torch.long)
    y = torch.ones(2, 5, dtype=torch.long)
    y[0, :2] = -100
    assert CausalLM().prepare((x, y), 0).n_targets == 8
