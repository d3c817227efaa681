"""Every shipped recipe parses into a valid PretrainConfig (typos in recipes fail here)."""

from pathlib import Path

import pytest

from lmlab.config import load_config
from lmlab.train.pretrain import PretrainConfig, build_model_config

RECIPES = sorted((Path(__file__).parents[2] / "configs" / "pretrain").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_is_valid(recipe):
    cfg = load_config(PretrainConfig, recipe)
    model = build_model_config(cfg, vocab_size=cfg.data.vocab_size, pad_id=0)
    assert model.max_seq_len >= cfg.data.block_size
