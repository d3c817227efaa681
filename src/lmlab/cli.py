"""The command table: ``lmlab <stage> <action>`` → one library function. No logic lives here.

Each row names the function by import path (imported only when its command runs, so that
``lmlab --help`` is instant), its help line and its arguments. Unrecognised
``--section.field=value`` arguments are passed as config overrides to functions that take
``overrides``. An `LmlabError` is printed as ``error: ...`` with exit status 2, never as a
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from lmlab.errors import LmlabError


def arg(*flags: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    return flags, kwargs


OUT = arg("--out", required=True, help="output directory (created atomically)")
OVERWRITE = arg("--overwrite", action="store_true", help="replace an existing output directory")


@dataclass
class Command:
    name: str  # "hf import"
    target: str  # "lmlab.hf.convert:import_hf"
    help: str
    args: list[tuple[tuple[str, ...], dict[str, Any]]] = field(default_factory=list)


COMMANDS: list[Command] = [
    Command("quickstart", "lmlab.quickstart:quickstart",
            "run the whole pipeline on a built-in default corpus and print a report",
            [arg("--out", default="out/quickstart", help="output directory"),
             arg("--data", default=None, help="use a dataset from $LMLAB_DATA (e.g. tinyshakespeare)"),
             OVERWRITE]),
    Command("model info", "lmlab.model.summary:model_info",
            "parameters and FLOPs per token of a preset, recipe or model directory",
            [arg("source", nargs="?", default="gpt2-tiny",
                 help="a preset (bert-base, gpt2-small, llama-tiny, transformer-tiny, ...) "
                      "or an lmlab model directory"),
             arg("--seq-len", type=int, default=None, help="sequence length for FLOPs")]),
    Command("hf import", "lmlab.hf.convert:import_hf",
            "convert a Hugging Face model directory on disk into an lmlab model directory",
            [arg("hf_dir"), arg("out_dir"),
             arg("--allow-pickle", action="store_true",
                 help="also read pytorch_model.bin (pickle; only for files you trust)"),
             OVERWRITE]),
    Command("embed train", "lmlab.embeddings.train:train_embeddings",
            "train word vectors (Word2Vec or GloVe) on text files, one document per line",
            [arg("corpus", nargs="+", help="text files (.txt, .gz) or directories of them"), OUT,
             arg("--algo", choices=["word2vec", "glove"], default=None, help="default word2vec"),
             arg("--dim", type=int, default=None, help="vector size (default 100)"),
             arg("--window", type=int, default=None, help="context words each side (default 5)"),
             arg("--min-count", type=int, default=None, help="drop rarer tokens (default 5)"),
             arg("--epochs", type=int, default=None, help="passes (default 5)"),
             arg("--tokenizer", default=None,
                 help="words (default) | whitespace | jieba | a directory with tokenizer.json"),
             arg("--threads", type=int, default=None, help="worker threads (default 2; 1 = reproducible)"),
             arg("--seed", type=int, default=None),
             arg("--config", default=None, help="YAML recipe (overrides of the defaults)"),
             OVERWRITE]),
    Command("embed export", "lmlab.embeddings.vectors:export_vectors",
            "write word vectors as word2vec text/binary or GloVe text (gensim reads all three)",
            [arg("directory"), arg("--format", default="word2vec-text",
                                   choices=["word2vec-text", "word2vec-binary", "glove-text"]),
             arg("--out", required=True, help="output file")]),
    Command("embed import", "lmlab.embeddings.vectors:import_vectors",
            "read word2vec text/binary or GloVe text vectors into a word-vectors directory",
            [arg("file"), arg("--format", default="word2vec-text",
                              choices=["word2vec-text", "word2vec-binary", "glove-text"]),
             OUT, OVERWRITE]),
    Command("embed eval", "lmlab.embeddings.evaluate:evaluate_vectors",
            "analogy accuracy (3CosAdd, 3CosMul) and similarity correlation (Spearman, Pearson)",
            [arg("directory"),
             arg("--analogies", action="append",
                 help="questions-words format file, or google | ca8 (repeatable)"),
             arg("--similarity", action="append",
                 help="word1<TAB>word2<TAB>score file, or wordsim353 | simlex999 | wordsim240 (repeatable)"),
             arg("--restrict-vocab", type=int, default=300_000,
                 help="only the N most frequent words answer and count as known (gensim's default)"),
             arg("--method", choices=["add", "mul", "both"], default="both"),
             arg("--case-sensitive", action="store_true"),
             arg("--json", dest="json_out", default=None, help="also write full results here")]),
    Command("embed neighbors", "lmlab.embeddings.vectors:neighbors",
            "nearest words; a quoted 'king - man + woman' is an analogy query",
            [arg("directory"), arg("words", nargs="+"), arg("--topn", type=int, default=10),
             arg("--method", choices=["add", "mul"], default="add")]),
    Command("embed plot", "lmlab.embeddings.plot:plot_vectors",
            "2-D PCA projection of chosen words as a PNG (CJK labels supported)",
            [arg("directory"), arg("words", nargs="*", help="words to show (default: the most frequent)"),
             arg("--out", required=True, help="PNG file"),
             arg("--top", type=int, default=50, help="with no WORDS: plot this many most frequent words"),
             arg("--font", default=None, help="a .ttf/.otf/.ttc file to use for labels")]),
    Command("hf export", "lmlab.hf.convert:export_hf",
            "write an lmlab model directory in the Hugging Face layout (from_pretrained loads it)",
            [arg("model_dir"), arg("out_dir"), OVERWRITE]),
]


def _resolve(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmlab",
        description="Large language models from theory to practice. "
                    "Each command reads and writes a directory of artifacts.",
    )
    from lmlab import __version__

    parser.add_argument("--version", action="version", version=f"lmlab {__version__}")
    groups: dict[str, argparse._SubParsersAction] = {}
    top = parser.add_subparsers(dest="command", metavar="<stage>")
    stages: dict[str, argparse.ArgumentParser] = {}
    for cmd in COMMANDS:
        words = cmd.name.split()
        if len(words) == 1:
            sub = top.add_parser(words[0], help=cmd.help, description=cmd.help)
        else:
            stage, action = words
            if stage not in stages:
                stages[stage] = top.add_parser(stage, help=f"{stage} commands")
                groups[stage] = stages[stage].add_subparsers(dest="action", metavar="<action>", required=True)
            sub = groups[stage].add_parser(action, help=cmd.help, description=cmd.help)
        for flags, kwargs in cmd.args:
            sub.add_argument(*flags, **kwargs)
        sub.set_defaults(_target=cmd.target)
    return parser


def _show(result: Any) -> None:
    if result is None:
        return
    if isinstance(result, str):
        print(result)
    else:
        print(json.dumps(result, indent=2, ensure_ascii=False, default=str))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "_target", None):
        parser.print_help()
        return 0
    fn = _resolve(args._target)
    kwargs = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("command", "action")}
    params = inspect.signature(fn).parameters
    overrides = [e for e in extra if e.startswith("--") and "=" in e and "." in e.split("=", 1)[0]]
    unknown = [e for e in extra if e not in overrides]
    if unknown or (overrides and "overrides" not in params):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    if "overrides" in params:
        kwargs["overrides"] = overrides
    try:
        _show(fn(**kwargs))
    except LmlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
