"""A flag that sets a config field has no default of its own: argparse gives None and the command
fills the field from its dataclass, so the two cannot drift apart."""

import dataclasses
import subprocess
import sys

import pytest

from lmlab.cli import build_parser
from lmlab.embeddings.train import EmbedConfig
from lmlab.embeddings.vocab import VocabConfig
from lmlab.generate.command import flag_config
from lmlab.generate.config import GenerationConfig
from lmlab.serve.limits import ServeConfig
from lmlab.tokenizer.train import TokenizerConfig

# command → the dataclasses its flags set, and the flags whose dest is not the field's name
CONFIGS = {
    "generate": ([GenerationConfig], {}),
    "serve": ([ServeConfig], {"cors_origin": "cors_origins"}),
    "embed train": ([EmbedConfig, VocabConfig], {}),
    "tokenizer train": ([TokenizerConfig], {}),
}
MAPPED_AT_LEAST = {"generate": 10, "serve": 9, "embed train": 8, "tokenizer train": 2}


def _subparser(name: str):
    parser = build_parser()
    for word in name.split():
        parser = next(a for a in parser._actions if a.dest in ("command", "action")).choices[word]
    return parser


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _mapped(name: str):
    classes, renamed = CONFIGS[name]
    for action in _subparser(name)._actions:
        key = renamed.get(action.dest, action.dest)
        for cls in classes:
            found = {f.name: f for f in dataclasses.fields(cls)}.get(key)
            if found is not None:
                yield action, cls, found


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_flags_default_to_none_or_to_the_dataclass(name):
    mapped = list(_mapped(name))
    assert len(mapped) >= MAPPED_AT_LEAST[name]  # the mapping still finds the flags
    for action, cls, f in mapped:
        if action.default is None:
            continue
        # a store_true flag's False is argparse's own; it must still be the dataclass's default
        assert action.default == _default(f), f"{name} {action.option_strings}: {action.default!r} ≠ {cls.__name__}"


def test_generate_fills_left_out_flags_from_generation_config():
    flags = {action.dest: action.default for action, _, _ in _mapped("generate")}
    assert flag_config(**flags) == GenerationConfig()
    assert flag_config(top_k=5).top_k == 5
    beam = flag_config(num_beams=3, temperature=0.7)  # beam search ignores the sampling temperature
    assert beam.num_beams == 3 and beam.temperature == 0.0


def test_serve_fills_left_out_flags_from_serve_config(monkeypatch):
    from lmlab.serve import app

    seen = []

    class Stop(Exception):
        pass

    def load(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(app.ServeConfig, "check_bind", lambda self: seen.append(self))
    monkeypatch.setattr(app.Registry, "load", load)
    monkeypatch.delenv("LMLAB_API_KEY", raising=False)
    args = build_parser().parse_args(["serve", "m"])
    kwargs = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("command", "action")}
    with pytest.raises(Stop):
        app.serve(**kwargs)
    assert seen == [ServeConfig()]
    with pytest.raises(Stop):
        app.serve(["m"], port=9001, max_queue=3)
    assert (seen[-1].port, seen[-1].max_queue, seen[-1].max_batch_size) == (9001, 3, ServeConfig().max_batch_size)


def test_help_stays_light():
    """``lmlab --help`` builds every subparser without importing a command module."""
    code = ("import sys; from lmlab.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'lmlab.generate', 'lmlab.serve.app', 'lmlab.embeddings.train') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
