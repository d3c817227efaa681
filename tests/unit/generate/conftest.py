"""Tiny models with odd shapes (d_model 36, 3 heads, vocab 97) and a byte-level BPE tokenizer
trained on the project's mixed English/Chinese fixture."""

from pathlib import Path

import pytest
import torch

from lmlab.model import Transformer, preset

FIXTURE = Path(__file__).parents[2] / "fixtures" / "text" / "mixed.txt"
V = 97
SHAPE = dict(d_model=36, n_heads=3, n_layers=2, d_ff=44, max_seq_len=48, dropout=0.0, attn_dropout=0.0)


# Random models at the default init repeat one token forever; these initialisations give varied
# continuations (checked by `test_tiny_models_are_not_degenerate`), so equalities mean something.
VARIED = {"gpt2": dict(init_std=0.3), "llama": dict(init_std=0.1, n_kv_heads=1),
          "transformer": dict(init_std=0.1, tie_embeddings=False)}


def tiny(family: str, vocab_size: int = V, seed: int = 0, **kw) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(preset(f"{family}-tiny", vocab_size=vocab_size, **{**SHAPE, **VARIED[family], **kw})).eval()


@pytest.fixture(scope="session")
def bpe_dir(tmp_path_factory):
    from lmlab.tokenizer.train import train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "bpe"
    train_tokenizer(FIXTURE, out, kind="bpe", vocab_size=400, overrides=["--min_frequency=1"])
    return out


@pytest.fixture(scope="session")
def bpe(bpe_dir):
    from lmlab.tokenizer.tokenizer import Tokenizer

    return Tokenizer.load(bpe_dir)
