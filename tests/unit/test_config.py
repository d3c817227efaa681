from dataclasses import dataclass, field
from typing import Literal

import pytest

from lmlab.config import check, dump_config, from_dict, load_config, parse_overrides
from lmlab.errors import ConfigError


@dataclass
class Optim:
    lr: float = 1e-3
    schedule: Literal["cosine", "linear"] = "cosine"

    def __post_init__(self):
        check(self.lr > 0, "optim.lr", "must be positive")


@dataclass
class Run:
    steps: int = 10
    name: str | None = None
    optim: Optim = field(default_factory=Optim)
    tags: list[str] = field(default_factory=list)


def test_recipe_then_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps: 5\noptim:\n  lr: 3.0e-4\n")
    cfg = load_config(Run, recipe, ["--optim.schedule=linear", "--steps=7", "--tags=[a, b]"])
    assert cfg == Run(steps=7, optim=Optim(lr=3e-4, schedule="linear"), tags=["a", "b"])
    assert from_dict(Run, __import__("yaml").safe_load(dump_config(cfg))) == cfg


def test_unknown_key_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"optim\.lrr.*valid keys of optim: lr, schedule"):
        from_dict(Run, {"optim": {"lrr": 1}})


@pytest.mark.parametrize("over, msg", [
    ("--steps=abc", "steps: expected an integer"),
    ("--optim.schedule=step", "optim.schedule: 'step' is not one of"),
    ("--optim.lr=-1", "optim.lr: must be positive"),
    ("--steps", "must look like"),
])
def test_bad_values_name_the_field(over, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(Run, None, [over])


def test_yaml_number_strings_and_missing_file(tmp_path):
    assert parse_overrides(["--a.b=2"]) == {"a": {"b": 2}}
    assert load_config(Run, None, ["--optim.lr=1e-3"]).optim.lr == 1e-3
    with pytest.raises(ConfigError, match="not found"):
        load_config(Run, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Run, bad)
