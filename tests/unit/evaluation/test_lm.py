"""Perplexity and bits per byte: the sliding window against a direct cross-entropy."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmlab.errors import ArtifactError
from lmlab.evaluation.lm import evaluate_lm, sequence_nll
from lmlab.model import Transformer, preset


def _model():
    torch.manual_seed(3)
    return Transformer(preset("gpt2-tiny", vocab_size=37, d_model=24, n_heads=2, n_layers=2, d_ff=40,
                              max_seq_len=64)).eval()


def _direct(model, ids):
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x).logits
    return float(F.cross_entropy(logits[0, :-1], x[0, 1:], reduction="sum"))


def test_one_window_equals_cross_entropy():
    model = _model()
    ids = torch.randint(37, (29,), generator=torch.Generator().manual_seed(1)).tolist()
    nll, n = sequence_nll(model, ids, block_size=64, stride=32)
    assert n == 28
    assert nll == pytest.approx(_direct(model, ids), rel=1e-5)


def test_disjoint_windows_are_sums_of_chunks():
    model = _model()
    ids = torch.randint(37, (23,), generator=torch.Generator().manual_seed(2)).tolist()
    nll, n = sequence_nll(model, ids, block_size=8, stride=8)
    # windows [0,8) [8,16) [16,23): each scores its own tokens after its first; the first token of
    # windows 2 and 3 has no context inside the window and is scored... only by a window that
    # contains its predecessor, so with stride == block it is not scored
    want = sum(_direct(model, ids[b:b + 8]) for b in (0, 8, 16))
    assert n == 7 + 7 + 6 and nll == pytest.approx(want, rel=1e-5)


def test_overlapping_windows_score_each_token_once():
    model = _model()
    ids = torch.randint(37, (40,), generator=torch.Generator().manual_seed(4)).tolist()
    _, n = sequence_nll(model, ids, block_size=16, stride=5)
    assert n == 39


def test_evaluate_lm_command(tmp_path):
    from lmlab.model import save_model
    from lmlab.tokenizer.train import train_tokenizer

    text = "the quick brown fox jumps over the lazy dog\n" * 20
    (tmp_path / "c.txt").write_text(text)
    train_tokenizer([str(tmp_path / "c.txt")], tmp_path / "tok", kind="char", vocab_size=40,
                    overrides=["--min_frequency=1"])
    from lmlab.tokenizer.tokenizer import Tokenizer
    v = Tokenizer.load(tmp_path / "tok").vocab_size
    torch.manual_seed(0)
    model = Transformer(preset("gpt2-tiny", vocab_size=v, d_model=16, n_heads=2, n_layers=1, d_ff=32,
                               max_seq_len=32))
    save_model(model, tmp_path / "m", tokenizer_dir=tmp_path / "tok")
    (tmp_path / "eval.txt").write_text("the lazy dog jumps\n")
    r = evaluate_lm(tmp_path / "m", tmp_path / "eval.txt")
    assert r["scored_tokens"] == len("the lazy dog jumps\n") - 1 and r["bytes"] == r["scored_tokens"]
    assert r["bits_per_byte"] == pytest.approx(math.log2(r["perplexity"]))  # char tokenizer: 1 byte/token
    assert 1 < r["perplexity"] < 3 * v  # untrained: near uniform
    from lmlab.tasks.evaluate import evaluate_task  # the `lmlab evaluate lm` row
    written = evaluate_task("lm", str(tmp_path / "m"), str(tmp_path / "eval.txt"))
    assert written["written"] == str(tmp_path / "eval" / "lm-eval.txt.json")
    assert written["perplexity"] == pytest.approx(r["perplexity"])


def test_wrong_model_kind(tmp_path):
    from lmlab.model import save_model
    save_model(Transformer(preset("bert-tiny", vocab_size=30, d_model=16, n_heads=2, n_layers=1, d_ff=32)),
               tmp_path / "bert")
    (tmp_path / "t.txt").write_text("hello")
    with pytest.raises(ArtifactError, match="causal LM"):
        evaluate_lm(tmp_path / "bert", tmp_path / "t.txt")
