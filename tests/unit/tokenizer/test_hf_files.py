"""Hugging Face tokenizer files that pad and truncate on their own (sentence-transformers'
tokenizer.json: ``"padding": {"strategy": {"Fixed": 128}}``, truncation 128): lmlab switches both
off, pads each batch itself and marks the pads in the attention mask."""

import json

from lmlab.tasks.sentiment import TASK as SENTIMENT
from lmlab.tasks.sentiment import LabeledExample
from lmlab.tasks.task import TaskConfig, encoder_inputs, load_task_tokenizer
from lmlab.tokenizer.tokenizer import Tokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "gob", "of", "drivel", "film", "good", "##s"]


def padded_tokenizer_dir(tmp_path):
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

    tok = Backend(models.WordPiece({t: i for i, t in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                 ("[SEP]", 3)])
    tok.enable_padding(pad_id=0, pad_token="[PAD]", length=128)
    tok.enable_truncation(max_length=128)
    d = tmp_path / "tok"
    d.mkdir()
    tok.save(str(d / "tokenizer.json"))
    data = json.loads((d / "tokenizer.json").read_text())
    assert data["padding"]["strategy"] == {"Fixed": 128} and data["truncation"]["max_length"] == 128
    (d / "tokenizer_config.json").write_text(json.dumps({
        "pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
        "mask_token": "[MASK]", "model_max_length": 512}))
    return d


def test_the_files_own_padding_and_truncation_are_off(tmp_path):
    tok = Tokenizer.load(padded_tokenizer_dir(tmp_path))
    assert tok.encode("a gob of drivel") == [5, 6, 7, 8]
    assert tok.encode_batch(["a gob of drivel", "films"]) == [[5, 6, 7, 8], [9, 11]]
    assert len(tok.encode("good " * 300)) == 300  # no truncation at 128 either
    assert tok.special_tokens == {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def test_a_sentiment_batch_marks_only_the_pads(tmp_path):
    tok = load_task_tokenizer(padded_tokenizer_dir(tmp_path))
    cfg = TaskConfig(max_length=64)
    meta = {"labels": ["negative", "positive"]}
    feats = SENTIMENT.features([LabeledExample("a gob of drivel", "negative"), LabeledExample("films", "positive")],
                               tok, meta, cfg)
    assert feats[0]["input_ids"] == [2, 5, 6, 7, 8, 3] and feats[1]["input_ids"] == [2, 9, 11, 3]
    batch = encoder_inputs(feats, tok.pad_id, token_types=True)
    assert batch["input_ids"].tolist() == [[2, 5, 6, 7, 8, 3], [2, 9, 11, 3, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]]
