"""The config reference: every field of every stage's config, with its type, default and meaning.

``lmlab config show [SECTION]`` prints it; ``lmlab config show --markdown`` writes
docs/config.md. The meaning of a field is the comment written next to it in its dataclass
(`field_docs`): the comment at the end of the field's line, or a block of comment lines right
above it, or, for a block that names the values of the field above it (``# interleaved: ...``
under ``sinusoidal_layout``), right below it. The comments stay the single source: a dataclass
reads as before, and nothing has to be written twice.

A section is one dataclass and the ``--PREFIX.FIELD=VALUE`` overrides that reach it
(``train.`` → ``--train.lr=3e-4``, or a recipe's ``train:`` mapping). Nested dataclasses are
sections of their own; `SECTIONS` lists them all, and a test walks every command's root config
to check that none is missing.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import io
import json
import textwrap
import tokenize
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from lmlab.errors import ConfigError


@dataclass(frozen=True)
class Section:
    name: str  # what `lmlab config show NAME` takes
    config: str  # the dataclass, "module:Class" (imported only when shown)
    prefix: str  # the fields' keys as typed: "train." → --train.lr=3e-4; "" for a recipe's top level
    commands: tuple[str, ...]  # the lmlab commands that read it
    note: str = ""
    overrides: bool = True  # False: set by the commands' own flags, not --PREFIX.FIELD=VALUE


SECTIONS: tuple[Section, ...] = (
    Section("corpus", "lmlab.corpus.pipeline:CleanConfig", "", ("corpus clean",),
            "The top level of a cleaning recipe; its stages are the sections read, normalize, filter, dedup "
            "and split."),
    Section("read", "lmlab.corpus.read:ReadConfig", "read.", ("corpus clean",)),
    Section("normalize", "lmlab.corpus.normalize:NormalizeConfig", "normalize.", ("corpus clean",)),
    Section("filter", "lmlab.corpus.filters:FilterConfig", "filter.", ("corpus clean",)),
    Section("dedup", "lmlab.corpus.dedup:DedupConfig", "dedup.", ("corpus clean",)),
    Section("split", "lmlab.corpus.split:SplitConfig", "split.", ("corpus clean",)),
    Section("tokenizer", "lmlab.tokenizer.train:TokenizerConfig", "tokenizer.", ("tokenizer train",),
            "--kind and --vocab-size are flags for the two most used fields; in a recipe (--config) the fields "
            "are at its top level."),
    Section("shard", "lmlab.data.shards:ShardConfig", "shard.", ("data shard",),
            "In a recipe (--config) the fields are at its top level."),
    Section("embed", "lmlab.embeddings.train:EmbedConfig", "", ("embed train",),
            "The top level of a word-vectors recipe (--dim, --window, --epochs, --threads, --seed are also "
            "flags); its parts are the sections vocab, word2vec and glove."),
    Section("vocab", "lmlab.embeddings.vocab:VocabConfig", "vocab.", ("embed train",),
            "--tokenizer and --min-count are flags for two of them."),
    Section("word2vec", "lmlab.embeddings.word2vec:Word2VecConfig", "word2vec.", ("embed train",)),
    Section("glove", "lmlab.embeddings.glove:GloVeConfig", "glove.", ("embed train",)),
    Section("pretrain", "lmlab.train.pretrain:PretrainConfig", "", ("pretrain",),
            "The top level of a pretraining recipe (--objective=mlm); its parts are the sections model, data, "
            "train and optim."),
    Section("data", "lmlab.train.pretrain:DataConfig", "data.", ("pretrain",),
            "Give exactly one of dataset, inputs, corpus, shards. With no data section at all a run reads "
            "dataset: tinyshakespeare; a recipe or override that sets a data field names its source too."),
    Section("model", "lmlab.model.config:TransformerConfig", "model.", ("pretrain", "finetune", "model init"),
            "The defaults below are TransformerConfig's own; model.preset (FAMILY-SIZE, e.g. bert-tiny; pretrain's "
            "default is gpt2-tiny, each task has its own) sets its family's and size's values first, and "
            "`lmlab model info PRESET` prints them. With finetune --init, only dropout, attn_dropout and copy "
            "apply."),
    Section("ngram", "lmlab.model.ngram:NgramConfig", "model.", ("finetune",),
            "With --model.preset=ngram (sentiment only): a bag-of-n-grams classifier instead of a Transformer."),
    Section("train", "lmlab.train.loop:TrainConfig", "train.", ("pretrain", "finetune")),
    Section("optim", "lmlab.train.optim:OptimConfig", "optim.", ("pretrain", "finetune")),
    Section("finetune", "lmlab.tasks.finetune:FinetuneConfig", "", ("finetune",),
            "The top level of a fine-tuning recipe (configs/finetune/); its parts are the sections task, model, "
            "train, optim and lora. Each task starts from its own defaults (a preset, a learning rate, the metric "
            "that selects the best weights; src/lmlab/tasks/recipes/), which a recipe and the command line "
            "override."),
    Section("task", "lmlab.tasks.task:TaskConfig", "task.", ("finetune", "evaluate", "predict"),
            "What every task reads; the fields only QA or only the seq2seq tasks read are the sections "
            "task.qa and task.seq2seq. evaluate and predict start from the config the model was trained with; "
            "decoding fields (task.seq2seq.num_beams, …) may change there."),
    Section("task.qa", "lmlab.tasks.task:QAConfig", "task.qa.", ("finetune", "evaluate", "predict"),
            "Extractive QA only."),
    Section("task.seq2seq", "lmlab.tasks.task:Seq2SeqConfig", "task.seq2seq.", ("finetune", "evaluate", "predict"),
            "Summarization and translation only."),
    Section("lora", "lmlab.tasks.lora:LoRAConfig", "lora.", ("finetune",)),
    Section("generation", "lmlab.generate.config:GenerationConfig", "", ("generate", "serve"),
            "`lmlab generate` takes the main ones as flags (--max-new-tokens, --top-p, …); a request to "
            "`lmlab serve` as fields of its JSON body; Python as keywords of lmlab.generate.generate.",
            overrides=False),
    Section("serve", "lmlab.serve.limits:ServeConfig", "", ("serve",),
            "`lmlab serve` takes host, port, api_key, max_batch_size, max_queue, request_timeout_s, max_tokens "
            "and log_prompts as flags (--api-key, …); the other limits keep their defaults.",
            overrides=False),
)


@dataclass(frozen=True)
class FieldDoc:
    key: str  # as typed: "train.lr"
    type: str  # "float", "clm | mlm | denoise", "int | None"
    default: str  # YAML, as a recipe or an override writes it: "0.001", "true", "null"
    doc: str  # the comment next to the field in its dataclass; "" if it has none


def config_class(section: Section) -> type:
    module, _, name = section.config.partition(":")
    return getattr(importlib.import_module(module), name)


# -- the comments next to the fields -----------------------------------------------------------

def field_docs(cls: type) -> dict[str, str]:
    """{field: its comment} for the dataclass `cls` (and the dataclasses it inherits from)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update({k: v for k, v in _own_field_docs(klass).items() if v})
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (a frozen or compiled install): types and defaults still show
        return {}
    body = ast.parse(source).body[0].body
    comments, code = _comments(source)
    starts = [min([n.lineno] + [d.lineno for d in getattr(n, "decorator_list", [])]) for n in body]
    fields = [(i, n) for i, n in enumerate(body) if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    hints = _hints(cls)
    docs = {n.target.id: [] for _, n in fields}
    for j, (i, node) in enumerate(fields):
        name = node.target.id
        docs[name] += [comments[ln] for ln in range(node.lineno, node.end_lineno + 1) if ln in comments]
        end = starts[i + 1] if i + 1 < len(body) else len(source.splitlines()) + 1
        nxt = body[i + 1] if i + 1 < len(body) else None
        after = _blocks(range(node.end_lineno + 1, end), comments, code)
        for block in after:
            below_this = block[0] == node.end_lineno + 1
            above_next = block[-1] == end - 1 and isinstance(nxt, ast.AnnAssign) and isinstance(nxt.target, ast.Name)
            names_values = _first_word(comments[block[0]]) in _literal_values(hints.get(name))
            text = [comments[ln] for ln in block]
            if above_next and not (below_this and not docs[name] and names_values):
                docs[nxt.target.id] = text + docs[nxt.target.id]
            elif below_this:
                docs[name] += text
    return {k: " ".join(v) for k, v in docs.items()}


def _comments(source: str) -> tuple[dict[int, str], set[int]]:
    """({line: comment text}, lines that hold code)."""
    comments: dict[int, str] = {}
    code: set[int] = set()
    skip = (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in skip:
            code.update(range(tok.start[0], tok.end[0] + 1))
    return comments, code


def _blocks(lines: range, comments: dict[int, str], code: set[int]) -> list[list[int]]:
    """Runs of consecutive comment-only lines within `lines`."""
    blocks: list[list[int]] = []
    for ln in lines:
        if ln in comments and ln not in code:
            if blocks and blocks[-1][-1] == ln - 1:
                blocks[-1].append(ln)
            else:
                blocks.append([ln])
    return blocks


def _first_word(text: str) -> str:
    return text.split(":", 1)[0].strip() if ":" in text else ""


def _literal_values(tp: Any) -> set[str]:
    if get_origin(tp) is Literal:
        return {str(a) for a in get_args(tp)}
    return set().union(*(_literal_values(a) for a in get_args(tp))) if get_args(tp) else set()


def _hints(cls: type) -> dict[str, Any]:
    try:
        return get_type_hints(cls)
    except Exception:  # an annotation that does not evaluate here: show it as written
        return {f.name: f.type for f in dataclasses.fields(cls)}


# -- types and defaults as a user writes them ----------------------------------------------------

def type_name(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if tp is type(None):
        return "None"
    if tp is Any:
        return "Any"
    if tp is Path:
        return "path"
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]" if args else name
    return getattr(tp, "__name__", str(tp))


def yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        plain = value and value.isprintable() and value == value.strip() and value[0] not in "[{'\"&*!|>%@`#"
        return value if plain else json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return yaml_value(f.default)
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return "(a mapping)" if dataclasses.is_dataclass(value) else yaml_value(value)
    return "(required)"


def section_fields(section: Section) -> list[FieldDoc]:
    """The section's own fields (a field that is itself a dataclass is a section of its own)."""
    cls = config_class(section)
    hints, docs = _hints(cls), field_docs(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init or dataclasses.is_dataclass(hints.get(f.name)):
            continue
        rows.append(FieldDoc(section.prefix + f.name, type_name(hints.get(f.name, f.type)), _default(f),
                             docs.get(f.name, "")))
    return rows


def sections_of(command: str) -> list[Section]:
    """The sections a command reads through --PREFIX.FIELD=VALUE (for its --help)."""
    return [s for s in SECTIONS if command in s.commands and s.overrides]


# -- rendering ---------------------------------------------------------------------------------

def _select(name: str | None) -> list[tuple[Section, list[FieldDoc]]]:
    if name is None:
        return [(s, section_fields(s)) for s in SECTIONS]
    chosen = [s for s in SECTIONS if s.name == name]
    if chosen:
        return [(chosen[0], section_fields(chosen[0]))]
    found = [(s, [r for r in section_fields(s) if r.key == name]) for s in SECTIONS if name.startswith(s.prefix)]
    found = [(s, rows) for s, rows in found if rows]
    if not found:
        raise ConfigError(f"config show: {name!r} is neither a section nor a field; sections: "
                          f"{', '.join(s.name for s in SECTIONS)} (or a field, e.g. optim.lr)")
    return found


def _how(section: Section) -> str:
    commands = ", ".join(f"lmlab {c}" for c in section.commands)
    if not section.overrides:
        return commands
    where = f"--{section.prefix}FIELD=VALUE" if section.prefix else "--FIELD=VALUE"
    return f"{commands}; {where}"


def render_text(selected: list[tuple[Section, list[FieldDoc]]]) -> str:
    out = []
    for section, rows in selected:
        out.append(f"[{section.name}]  {_how(section)}")
        if section.note:
            out.append(textwrap.fill(section.note, 100, initial_indent="  ", subsequent_indent="  "))
        for r in rows:
            out.append(f"  {r.key}: {r.type} = {r.default}")
            if r.doc:
                out.append(textwrap.fill(r.doc, 100, initial_indent="      ", subsequent_indent="      "))
        out.append("")
    return "\n".join(out).rstrip("\n")


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("<", "&lt;")


def _code(text: str) -> str:
    return "`" + text.replace("|", "\\|") + "`"


def render_markdown(selected: list[tuple[Section, list[FieldDoc]]]) -> str:
    total = sum(len(rows) for _, rows in selected)
    out = [
        "# Config reference",
        "",
        "<!-- Generated by `lmlab config show --markdown > docs/config.md`; tests/docs/test_config_md.py",
        "     fails when it is out of date. Edit the comments next to the fields in src/lmlab, then regenerate. -->",
        "",
        f"Every field of every stage's config: {total} fields in {len(selected)} sections. A field is set in a",
        "recipe (`--config FILE.yaml`, a mapping per section) or on the command line with",
        "`--SECTION.FIELD=VALUE`, which comes last; an unknown key is an error that lists the valid ones.",
        "Each run writes the resolved config to its `config.yaml`. In a terminal: `lmlab config show SECTION`",
        "or `lmlab config show optim.lr`.",
        "",
        "| section | commands | set with |",
        "|---|---|---|",
    ]
    for section, _ in selected:
        cmds = ", ".join(_code(f"lmlab {c}") for c in section.commands)
        how = _code(f"--{section.prefix}FIELD=VALUE") if section.overrides else "flags (see below)"
        out.append(f"| [{section.name}](#{section.name}) | {cmds} | {how} |")
    for section, rows in selected:
        out += ["", f"## {section.name}", ""]
        cmds = ", ".join(_code(f"lmlab {c}") for c in section.commands)
        out.append(f"Read by {cmds}." + (f" {section.note}" if section.note else ""))
        out += ["", "| field | type | default | meaning |", "|---|---|---|---|"]
        for r in rows:
            out.append(f"| {_code(r.key)} | {_code(r.type)} | {_code(r.default)} | {_md(r.doc)} |")
    return "\n".join(out)  # print() adds the last newline


def show_config(section: str | None = None, markdown: bool = False) -> str:
    """`lmlab config show [SECTION|FIELD] [--markdown]`: the config reference."""
    selected = _select(section)
    return render_markdown(selected) if markdown else render_text(selected)


__all__ = ["SECTIONS", "Section", "FieldDoc", "field_docs", "section_fields", "sections_of", "show_config",
           "type_name", "yaml_value"]
