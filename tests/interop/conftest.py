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


ALPHABET = ("ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz 0123456789 . , ; : ! ? ' \" ( ) [ ] { } < > / - _ "
            "@ # $ % & * + = ~ | \\ ^ `")


def fixture_lines(name: str) -> list[str]:
    return [line.strip() for line in (FIX.parent / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def train_spm(texts: list[str], vocab_size: int, model_type: str = "unigram") -> bytes:
    """A SentencePiece model (nmt_nfkc, every character of `texts` covered): unigram, as Marian's are."""
    import io

    import sentencepiece

    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=out, model_type=model_type, vocab_size=vocab_size,
        hard_vocab_limit=False, character_coverage=1.0, normalization_rule_name="nmt_nfkc", num_threads=1,
        minloglevel=2)
    return out.getvalue()


@pytest.fixture(scope="session")
def hf_marian(tmp_path_factory):
    """A MarianMTModel directory laid out as Helsinki-NLP/opus-mt-* are: source.spm (English-ish) and
    target.spm (German-ish: it alone knows "ü") with one vocab.json (</s>, <unk>, the union of both
    models' pieces, two language codes, <pad> last), written by MarianTokenizer.save_pretrained; a
    MarianMTModel of odd shapes (d_model 36, 3 heads, 2 encoder and 3 decoder layers, swish, scaled
    embeddings) trained briefly by transformers, and the generation_config.json opus-mt ships (pad
    banned, 4 beams)."""
    import json

    import torch

    pytest.importorskip("sentencepiece", reason="the Marian fixture trains SentencePiece models (dev extra)")
    from lmlab.tokenizer.sentencepiece_model import NORMAL, parse_sentencepiece_model

    root = tmp_path_factory.mktemp("hf-marian")
    raw, out = root / "raw", root / "marian"
    raw.mkdir()
    mixed = fixture_lines("text/mixed.txt")
    english = fixture_lines("tiny_corpus.txt") + fixture_texts() + fixture_lines("tasks/mt_train.en")
    german = fixture_lines("tasks/mt_train.de") + fixture_lines("tasks/mt_dev.de")
    models = {"source.spm": train_spm(english + mixed + [ALPHABET], 250),
              "target.spm": train_spm(german + mixed + fixture_texts() + [ALPHABET], 290)}
    vocab = {"</s>": 0, "<unk>": 1}
    for name, data in models.items():
        (raw / name).write_bytes(data)
        for p in parse_sentencepiece_model(data).pieces:
            if p.type == NORMAL:
                vocab.setdefault(p.piece, len(vocab))
    for code in (">>deu<<", ">>nld<<"):
        vocab[code] = len(vocab)
    vocab["<pad>"] = pad = len(vocab)
    (raw / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    tok = transformers.MarianTokenizer(str(raw / "source.spm"), str(raw / "target.spm"), str(raw / "vocab.json"),
                                       source_lang="en", target_lang="de")
    tok.save_pretrained(out)
    torch.manual_seed(0)
    model = transformers.MarianMTModel(transformers.MarianConfig(
        vocab_size=len(vocab), d_model=36, encoder_layers=2, decoder_layers=3, encoder_attention_heads=3,
        decoder_attention_heads=3, encoder_ffn_dim=44, decoder_ffn_dim=44, max_position_embeddings=64,
        activation_function="swish", scale_embedding=True, init_std=0.1, dropout=0.1, pad_token_id=pad,
        decoder_start_token_id=pad, eos_token_id=0, forced_eos_token_id=0))
    # 80 steps of transformers' own teacher forcing on the en → de number fixture (2 s): a random
    # Marian repeats one token forever, this one translates, and its rows end at different steps
    src, tgt = fixture_lines("tasks/mt_train.en"), fixture_lines("tasks/mt_train.de")
    opt, g = torch.optim.AdamW(model.parameters(), lr=3e-3), torch.Generator().manual_seed(0)
    for _ in range(80):
        rows = torch.randint(0, len(src), (16,), generator=g).tolist()
        batch = tok([src[i] for i in rows], text_target=[tgt[i] for i in rows], return_tensors="pt", padding=True)
        batch["labels"][batch["labels"] == pad] = -100
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval().save_pretrained(out)
    (out / "generation_config.json").write_text(json.dumps({
        "bad_words_ids": [[pad]], "decoder_start_token_id": pad, "eos_token_id": 0, "forced_eos_token_id": 0,
        "max_length": 64, "num_beams": 4, "pad_token_id": pad}))
    return out
