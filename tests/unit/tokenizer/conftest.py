from pathlib import Path

import pytest

from lmlab.tokenizer.train import train_tokenizer

FIXTURE = Path(__file__).parents[2] / "fixtures" / "text" / "mixed.txt"
SIZES = {"bpe": 400, "wordpiece": 800, "unigram": 250, "char": 500}


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One tokenizer directory of each kind, trained on the project's mixed en/zh fixture."""
    root = tmp_path_factory.mktemp("tokenizers")
    out = {}
    for kind, size in SIZES.items():
        train_tokenizer(FIXTURE, root / kind, kind=kind, vocab_size=size, overrides=["--min_frequency=1"])
        out[kind] = root / kind
    return out
