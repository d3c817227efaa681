"""`lmlab config show`: the field comments it reads, the sections it covers, and its command."""

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_type_hints

import pytest

from lmlab.cli import build_parser, main
from lmlab.config_reference import (SECTIONS, config_class, field_docs, section_fields, show_config, type_name,
                                    yaml_value)


@dataclass
class Base:
    inherited: int = 1  # from the base class


@dataclass
class Sample(Base):
    plain: int = 3
    trailing: float = 0.5  # a trailing comment
    # a block right above a field
    # that runs over two lines
    above: str = "x"
    mode: Literal["fast", "exact"] = "fast"
    # fast: the quick path; names the values of `mode`, so it is mode's
    # exact: the slow one
    after_mode: int = 0
    spanning: list[str] = field(default_factory=lambda: ["a",  # a comment inside a field that spans lines
                                                         "b"])

    # a comment after a blank line belongs to no field

    last: bool = True  # the last field
    # after the last field: still its

    def method(self) -> None:
        x = 1  # a comment inside a method is no field's
        del x


def test_field_docs_read_trailing_block_and_value_comments():
    docs = field_docs(Sample)
    assert docs["inherited"] == "from the base class"
    assert "plain" not in docs
    assert docs["trailing"] == "a trailing comment"
    assert docs["above"] == "a block right above a field that runs over two lines"
    assert docs["mode"] == "fast: the quick path; names the values of `mode`, so it is mode's exact: the slow one"
    assert "after_mode" not in docs
    assert docs["spanning"] == "a comment inside a field that spans lines"
    assert docs["last"] == "the last field after the last field: still its"
    assert "no field" not in " ".join(docs.values()) and "method" not in " ".join(docs.values())


def test_a_block_between_two_fields_goes_to_the_one_below_unless_it_names_the_values_above():
    docs = field_docs(config_class(next(s for s in SECTIONS if s.name == "model")))
    assert docs["sinusoidal_layout"].startswith("interleaved: PE(pos,2i)=sin")
    assert docs["attention_impl"].startswith("formula: softmax(QKᵀ/√d_k + M)V")
    assert docs["rope_theta"].startswith("RoPE base") and "init_std" not in docs  # its own comment, not the block's
    task = field_docs(config_class(next(s for s in SECTIONS if s.name == "task")))
    assert task["epochs"] == "passes over the training data; > 0 sets train.max_steps"
    assert task["max_length"].startswith("tokens per input")


def test_types_and_defaults_as_written_on_the_command_line():
    assert type_name(Literal["clm", "mlm"]) == "clm | mlm"
    assert type_name(int | None) == "int | None"
    assert type_name(typing.Optional[float]) == "float | None"
    assert type_name(list[str]) == "list[str]"
    assert type_name(dict[str, Any]) == "dict[str, Any]"
    assert type_name(Path) == "path"
    assert [yaml_value(v) for v in (None, True, False, 0.001, 1e-8, 7, "", "text", "\n", [1, "a"], {})] == \
        ["null", "true", "false", "0.001", "1e-08", "7", '""', "text", '"\\n"', '[1, "a"]', "{}"]


def _roots() -> dict[str, type]:
    from lmlab.corpus.pipeline import CleanConfig
    from lmlab.data.shards import ShardConfig
    from lmlab.embeddings.train import EmbedConfig
    from lmlab.generate.config import GenerationConfig
    from lmlab.model.config import TransformerConfig
    from lmlab.model.ngram import NgramConfig
    from lmlab.serve.limits import ServeConfig
    from lmlab.tasks.finetune import FinetuneConfig
    from lmlab.tokenizer.train import TokenizerConfig
    from lmlab.train.pretrain import PretrainConfig

    return {"corpus clean": CleanConfig, "tokenizer train": TokenizerConfig, "data shard": ShardConfig,
            "embed train": EmbedConfig, "pretrain": PretrainConfig, "finetune": FinetuneConfig,
            "model": TransformerConfig, "ngram": NgramConfig, "generate": GenerationConfig, "serve": ServeConfig}


def _reachable(cls: type, seen: set[type]) -> set[type]:
    seen.add(cls)
    for tp in get_type_hints(cls).values():
        if dataclasses.is_dataclass(tp) and tp not in seen:
            _reachable(tp, seen)
    return seen


def test_every_config_dataclass_of_every_command_is_a_section():
    reachable: set[type] = set()
    for root in _roots().values():
        _reachable(root, reachable)
    documented = {config_class(s) for s in SECTIONS}
    assert {c.__name__ for c in reachable - documented} == set()
    assert {c.__name__ for c in documented - reachable} == set()
    assert len({s.name for s in SECTIONS}) == len(SECTIONS)


def _resolve(cls: type, parts: list[str]) -> bool:
    """Whether the dotted key `parts` names a field under dataclass `cls`."""
    hints = get_type_hints(cls)
    if parts[0] not in hints:
        return False
    tp = hints[parts[0]]
    return len(parts) == 1 or (dataclasses.is_dataclass(tp) and _resolve(tp, parts[1:]))


def test_every_key_shown_is_one_its_commands_accept():
    """--KEY=VALUE as shown reaches a field: through the command's root config, or for the sections
    whose command strips its prefix (tokenizer., shard.) or reads one section only (model., task.)."""
    roots = _roots()
    from lmlab.model.config import TransformerConfig
    from lmlab.tasks.task import TaskConfig

    by_prefix = {"tokenizer.": roots["tokenizer train"], "shard.": roots["data shard"], "task.": TaskConfig}
    for section in SECTIONS:
        cls = config_class(section)
        for row in section_fields(section):
            parts = row.key.split(".")
            if section.prefix == "model.":  # the model mapping of pretrain/finetune, and model init
                assert cls in (TransformerConfig, roots["ngram"]) and _resolve(cls, parts[1:]), row.key
            elif section.prefix in by_prefix:
                assert _resolve(by_prefix[section.prefix], parts[1:]), row.key
            elif section.overrides:
                assert any(_resolve(roots[c], parts) for c in section.commands if c in roots), row.key
            else:
                assert _resolve(cls, parts), row.key


def test_every_field_is_shown_once_per_section_with_its_default():
    from lmlab.train.optim import OptimConfig

    rows = {r.key: r for r in section_fields(next(s for s in SECTIONS if s.name == "optim"))}
    assert set(rows) == {f"optim.{f.name}" for f in dataclasses.fields(OptimConfig)}
    assert (rows["optim.lr"].type, rows["optim.lr"].default, rows["optim.lr"].doc) == \
        ("float", repr(OptimConfig().lr), "peak learning rate")
    assert rows["optim.name"].type == "adamw | muon"


# The fields without a comment today. DESIGN.md asks for a one-line doc per field: a new field
# without one fails here (document it next to the field), and so does one that gained a doc and is
# still listed (take it out of this list).
UNDOCUMENTED = {
    "normalize.lowercase", "filter.max_chars", "filter.max_digit_ratio", "dedup.seed", "tokenizer.kind",
    "algo", "seed", "word2vec.architecture", "objective", "mlm_probability", "whole_word_masking",
    "data.tokenizer_kind", "data.vocab_size", "model.arch", "model.position", "model.norm",
    "model.norm_eps", "model.norm_position", "model.activation", "model.pad_token_id", "model.init_std",
    "model.head", "model.n_labels", "model.lowercase", "train.eval_every_steps", "train.save_every_steps",
    "train.log_every_steps", "train.seed", "train.nonfinite", "train.device",
    "train.progress", "optim.schedule", "optim.weight_decay", "optim.beta1", "optim.beta2", "optim.eps",
    "host", "port", "max_input_tokens", "max_batch_size", "max_queue", "batch_window_ms",
    "request_timeout_s", "keep_alive_s", "retry_after_s", "log_prompts",
}


def test_no_new_field_without_a_doc():
    missing = {r.key for s in SECTIONS for r in section_fields(s) if not r.doc}
    assert missing - UNDOCUMENTED == set(), "add a comment next to these fields in their dataclass"
    assert UNDOCUMENTED - missing == set(), "these fields have a doc now: take them out of UNDOCUMENTED"


def test_cli_shows_a_section_a_field_and_names_a_bad_one(capsys):
    assert main(["config", "show", "lora"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[lora]  lmlab finetune; --lora.FIELD=VALUE")
    assert "  lora.rank: int = 0\n      r; 0 = full fine-tuning (no LoRA)" in out
    assert main(["config", "show", "optim.warmup_steps"]) == 0
    out = capsys.readouterr().out
    assert "optim.warmup_steps: int = 100" in out and "optim.lr" not in out
    assert main(["config", "show", "model.vocab_size"]) == 0  # a Transformer's, and the n-gram model's
    out = capsys.readouterr().out
    assert "[model]" in out and "[ngram]" in out and "model.vocab_size: int = 256" in out
    assert main(["config", "show", "optim.lrr"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config show: 'optim.lrr' is neither a section nor a field; sections: corpus")
    assert "Traceback" not in err


def test_markdown_lists_every_field_in_a_table(capsys):
    assert main(["config", "show", "--markdown"]) == 0
    text = capsys.readouterr().out
    total = sum(len(section_fields(s)) for s in SECTIONS)
    rows = [ln for ln in text.splitlines() if ln.startswith("| `")]
    assert len(rows) == total and f"{total} fields in {len(SECTIONS)} sections" in text
    assert all(len(re.split(r"(?<!\\)\|", ln)) == 6 for ln in rows)  # four cells: no bare | inside one
    assert "| `model.sinusoidal_layout` | `interleaved \\| concat` | `interleaved` |" in text


@pytest.mark.parametrize("command,sections", [(["pretrain"], "pretrain|data|model|train|optim"),
                                              (["finetune"],
                                               "model|ngram|train|optim|finetune|task|task.qa|task.seq2seq|lora"),
                                              (["corpus", "clean"], "corpus|read|normalize|filter|dedup|split")])
def test_help_of_a_command_names_its_config_sections(command, sections):
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command[0]]
    if len(command) > 1:
        sub = sub._subparsers._group_actions[0].choices[command[1]]
    assert f"lmlab config show {sections}" in sub.format_help().replace("\n", " ")


def test_show_config_is_plain_text_by_default():
    text = show_config("split")
    assert text.splitlines()[0] == "[split]  lmlab corpus clean; --split.FIELD=VALUE"
