"""Hugging Face model directories as transformers' `save_pretrained` writes them, with no network:
a GPT-2 and a BERT from random configs (hidden 36, 3 heads, 2 layers) and tiny tokenizers
(byte-level BPE and WordPiece) trained on the project's sentiment fixture."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "tasks"


def fixture_texts() -> list[str]:
    with open(FIX / "sentiment_train.csv", encoding="utf-8") as f:
        return [row["review"] for row in csv.DictReader(f)]


def wordpiece_tokenizer(texts: list[str], vocab_size: int = 160):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def bytelevel_tokenizer(texts: list[str], vocab_size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


@pytest.fixture(scope="session")
def hf_gpt2(tmp_path_factory):
    """A GPT2LMHeadModel directory with its byte-level BPE tokenizer (bos = eos = unk = <|endoftext|>)."""
    import torch

    out = tmp_path_factory.mktemp("hf-gpt2") / "gpt2"
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bytelevel_tokenizer(fixture_texts()), bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        unk_token="<|endoftext|>")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=len(fast), n_embd=36, n_layer=2, n_head=3, n_positions=128, n_inner=44,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id))
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def hf_bert(tmp_path_factory):
    """A BertModel directory (as all-MiniLM-L6-v2 is) with its WordPiece tokenizer."""
    import torch

    out = tmp_path_factory.mktemp("hf-bert") / "bert"
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=wordpiece_tokenizer(fixture_texts()), unk_token="[UNK]", pad_token="[PAD]",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(
        vocab_size=len(fast), hidden_size=36, num_hidden_layers=2, num_attention_heads=3, intermediate_size=44,
        max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out
