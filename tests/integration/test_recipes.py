"""Every shipped recipe parses into a valid config (typos in recipes fail here)."""

from pathlib import Path

import pytest
import yaml

from lmlab.config import load_config
from lmlab.train.pretrain import PretrainConfig, build_model_config

CONFIGS = Path(__file__).parents[2] / "configs"
RECIPES = sorted((CONFIGS / "pretrain").glob("*.yaml"))
FINETUNE = sorted((CONFIGS / "finetune").glob("*.yaml"))
TASK_OF = {"sst2": "sentiment", "chnsenticorp": "sentiment", "cmrc2018": "qa", "squad": "qa",
           "dialogsum": "summarization", "csl": "summarization", "multi30k": "translation", "tatoeba": "translation"}


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_is_valid(recipe):
    cfg = load_config(PretrainConfig, recipe)
    if cfg.init or "model" not in yaml.safe_load(recipe.read_text()):  # continues a model (squad-adapt)
        assert load_config(PretrainConfig, recipe, ["--init=out/en-bert/model"]).init
        return
    model = build_model_config(cfg, vocab_size=cfg.data.vocab_size, pad_id=0)
    assert model.max_seq_len >= cfg.data.block_size


@pytest.mark.parametrize("recipe", FINETUNE, ids=[r.stem for r in FINETUNE])
def test_finetune_recipe_is_valid(recipe):
    from lmlab.tasks import get_task
    from lmlab.tasks.finetune import load_finetune_config

    cfg = load_finetune_config(get_task(TASK_OF[recipe.stem.split("-")[0]]), True, str(recipe), [])
    assert cfg.train.select_metric.startswith("val_")
    if cfg.model.get("preset") == "ngram":  # the bag-of-n-grams model's own fields
        from lmlab.model.ngram import NgramConfig

        NgramConfig.from_dict({k: v for k, v in cfg.model.items() if k != "preset"})
