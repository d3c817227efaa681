"""The command table: ``lmlab <stage> <action>`` → one library function. No logic lives here.

Each row names the function by import path (imported only when its command runs, so that
``lmlab --help`` is instant), its help line and its arguments. A flag that sets a config
dataclass field defaults to None and the function fills it from the dataclass, which stays the
one place that default is written (``lmlab config show SECTION`` prints it). Unrecognised
``--section.field=value`` (and top-level ``--field=value``) arguments are passed as config
overrides to functions that take ``overrides``. An `LmlabError` is printed as ``error: ...``,
never as a traceback, with the exit status of its class (`lmlab.errors`).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
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
             arg("--steps", type=int, default=0, help="pretraining steps per model (0: the defaults)"),
             OVERWRITE]),
    Command("info", "lmlab.machine:info",
            "the machine as lmlab sees it (CPU model, ISA flags, CUDA, threads) and what it chooses from it",
            [arg("--json", dest="as_json", action="store_true", help="print JSON")]),
    Command("corpus clean", "lmlab.corpus.pipeline:clean_corpus",
            "read, normalise, filter, deduplicate and split raw text into a corpus directory",
            [arg("inputs", nargs="+", help="files, directories or globs (.txt .jsonl .json .csv .tsv "
                 ".parquet; .gz .bz2 .xz .zst; .tar* .zip)"),
             OUT, arg("--workers", type=int, default=None, help="cleaning processes (output is identical for any)"),
             arg("--config", default=None, help="YAML recipe (CleanConfig overrides)"), OVERWRITE]),
    Command("corpus stats", "lmlab.corpus.pipeline:corpus_stats",
            "print a corpus directory's stats.json as a table", [arg("corpus")]),
    Command("tokenizer train", "lmlab.tokenizer.train:train_tokenizer",
            "train a bpe | wordpiece | unigram | char tokenizer (Hugging Face compatible directory)",
            [arg("corpus", nargs="+", help="corpus directories (train split) or text files (a document per line)"),
             OUT, arg("--kind", choices=["bpe", "wordpiece", "unigram", "char"], default=None),
             arg("--vocab-size", type=int, default=None),
             arg("--config", default=None, help="YAML recipe (TokenizerConfig overrides)"), OVERWRITE]),
    Command("tokenizer encode", "lmlab.tokenizer.tokenizer:encode_command",
            "ids and tokens of a text (or of each line of --file)",
            [arg("tokenizer"), arg("text", nargs="?", default=None), arg("--file", default=None),
             arg("--special", action="store_true", help="add the special tokens (e.g. [CLS] … [SEP])")]),
    Command("tokenizer decode", "lmlab.tokenizer.tokenizer:decode_command",
            "text of a list of ids", [arg("tokenizer"), arg("ids", help='"1 2 3", "1,2,3" or "[1,2,3]"'),
                                      arg("--skip-special", action="store_true")]),
    Command("tokenizer eval", "lmlab.tokenizer.evaluate:evaluate_tokenizer",
            "bytes/token, tokens per word and character, unknown rate, round-trip exactness on held-out text",
            [arg("tokenizer"), arg("heldout", help="a corpus directory (its --split) or a text file"),
             arg("--split", default="valid"), arg("--max-documents", type=int, default=10_000)]),
    Command("data shard", "lmlab.data.shards:shard_corpus",
            "tokenise a corpus once into memory-mapped uint16/uint32 shards (resumes an interrupted run)",
            [arg("corpus", nargs="+", help="corpus directories or text files"),
             arg("--tokenizer", required=True, help="a tokenizer directory"), OUT,
             arg("--config", default=None, help="YAML recipe (ShardConfig overrides)"), OVERWRITE]),
    Command("data datasets", "lmlab.datasets.root:list_datasets",
            "list the public datasets found under the data root (and how to obtain missing ones)",
            [arg("--data-root", default=None, help="folder holding the datasets (default: $LMLAB_DATA)")]),
    Command("model info", "lmlab.model.summary:model_info",
            "parameters and FLOPs per token of a preset, recipe or model directory",
            [arg("source", nargs="?", default="gpt2-tiny",
                 help="a preset (bert-base, gpt2-small, llama-tiny, transformer-tiny, ...) "
                      "or an lmlab model directory"),
             arg("--seq-len", type=int, default=None, help="sequence length for FLOPs")]),
    Command("model init", "lmlab.model.pretrained:init_model",
            "write a randomly initialised model directory (preset + --model.FIELD=VALUE overrides)",
            [arg("--preset", dest="preset_name", default="gpt2-tiny", help="FAMILY-SIZE, e.g. bert-small"),
             OUT, arg("--seed", type=int, default=0), OVERWRITE]),
    Command("pretrain", "lmlab.train.pretrain:pretrain",
            "pretrain a model (causal LM, masked LM or denoising) from a YAML recipe; resumable",
            [arg("--config", default=None, help="recipe YAML (overrides of the defaults)"),
             arg("--out", default="out/pretrain", help="run directory (checkpoints, metrics, model)")]),
    Command("cost", "lmlab.train.cost:estimate_cost",
            "training cost: FLOPs, memory, time and money for a model and a token budget",
            [arg("model", nargs="?", default="gpt2-small", help="a preset or an lmlab model directory"),
             arg("--tokens", type=float, default=1e9), arg("--batch-size", type=int, default=8),
             arg("--seq-len", type=int, default=None),
             arg("--device", default="measure", help="h100, a100, l4, v100, t4, h200, or 'measure' (this machine)"),
             arg("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                 help="auto: training's automatic precision on this machine (bf16 only where native), "
                 "or a named device's 16-bit format"),
             arg("--mfu", type=float, default=None, help="assumed model FLOPs utilisation"),
             arg("--devices", type=int, default=1), arg("--price-per-hour", type=float, default=0.0),
             arg("--activation-checkpointing", action="store_true"),
             arg("--optimizer", default="adamw", choices=["adamw", "muon"], help="the training's optim.name")]),
    Command("generate", "lmlab.generate.command:generate_command",
            "sample text from a model directory (with tokenizer/), streamed to the terminal",
            [arg("model_dir"),
             arg("--prompt", default=None, help="text to continue (the source for an encoder–decoder); "
                 "with --chat, the user's message"),
             arg("--chat", action="store_true", help="render the conversation with the model's chat template "
                 "(tokenizer/chat_template.jinja or tokenizer_config.json; else a plain System/User/Assistant "
                 "prompt) and print only the reply"),
             arg("--messages", default=None, help="JSON file of the conversation, [{role, content}, ...] "
                 "(implies --chat; --prompt adds a last user message)"),
             arg("--max-new-tokens", type=int, default=None),
             arg("--temperature", type=float, default=None, help="0 = greedy"),
             arg("--top-k", type=int, default=None, help="0 = off"),
             arg("--top-p", type=float, default=None, help="1.0 = off"),
             arg("--repetition-penalty", type=float, default=None, help="1.0 = off"),
             arg("--no-repeat-ngram-size", type=int, default=None,
                 help="forbid repeating n-grams of this size; 0 = off"),
             arg("--seed", type=int, default=None),
             arg("--stop", action="append", default=None, help="stop string (repeatable)"),
             arg("--num-beams", type=int, default=None, help="> 1: beam search"),
             arg("--length-penalty", type=float, default=None),
             arg("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                 help="weights' dtype (auto: bfloat16 where the CPU has native bf16, else float32; see lmlab info)"),
             arg("--no-echo", dest="echo", action="store_false", help="do not print the prompt first")]),
    Command("serve", "lmlab.serve.app:serve",
            "OpenAI-compatible HTTP server (+ task endpoints, attention maps, web playground at /)",
            [arg("model_dirs", nargs="+", metavar="MODEL_DIR", help="model directories (NAME=DIR to name one)"),
             arg("--host", default=None, help="bind address; a public one needs --api-key"),
             arg("--port", type=int, default=None),
             arg("--api-key", default=None, help="required as 'Authorization: Bearer KEY' on every route but /health "
                 "(visible in ps: prefer --api-key-file or $LMLAB_API_KEY)"),
             arg("--api-key-file", default=None, metavar="PATH",
                 help="read the API key from PATH (one line; not readable by other users)"),
             arg("--max-batch-size", type=int, default=None, help="requests decoded together; 1 = no dynamic batching"),
             arg("--max-queue", type=int, default=None, help="requests waiting beyond those (then 429)"),
             arg("--request-timeout-s", type=float, default=None),
             arg("--max-tokens", type=int, default=None, help="cap on a request's max_tokens"),
             arg("--log-prompts", action="store_true", help="write prompts to the log (off by default)"),
             arg("--cors-origin", action="append", default=None, metavar="ORIGIN",
                 help="let web pages from ORIGIN (scheme://host[:port]) call the API (repeatable; none by default)"),
             arg("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                 help="weights' dtype (auto: bfloat16 where the CPU has native bf16, else float32; see lmlab info)")]),
    Command("viz attention", "lmlab.viz.attention:attention_command",
            "attention maps of a model for one input: a PNG per layer (heads in a grid) + attention.json",
            [arg("model_dir"), arg("--text", required=True), OUT,
             arg("--max-tokens", type=int, default=64, help="input tokens shown (the rest is cut)"), OVERWRITE]),
    Command("viz positions", "lmlab.viz.positions:positions_command",
            "the sinusoidal positional-encoding matrix and its dot product by distance (PNG + JSON)",
            [arg("--d-model", type=int, required=True), arg("--max-len", type=int, required=True), OUT, OVERWRITE]),
    Command("viz embeddings", "lmlab.viz.embeddings:embeddings_command",
            "2-D PCA map of a model's token embeddings (PNG + JSON)",
            [arg("model_dir"), OUT, arg("--top", type=int, default=60, help="tokens labelled"), OVERWRITE]),
    Command("finetune", "lmlab.tasks.finetune:finetune",
            "fine-tune a task model (sentiment | qa | summarization | translation); resumable",
            [arg("task", help="sentiment, qa, summarization or translation"),
             arg("--train", required=True,
                 help="a CSV/TSV/JSONL (SQuAD JSON for qa) file or a dataset, e.g. sst2:train"),
             arg("--eval", default=None, help="evaluation data (file or dataset, e.g. sst2:dev)"),
             arg("--init", default=None, help="an lmlab model directory, or hf:DIR; none = train from scratch "
                 "(a small Transformer, or with --model.preset=ngram a bag-of-n-grams classifier)"),
             arg("--out", default="out/finetune", help="run directory (checkpoints, metrics, model)"),
             arg("--config", default=None, help="recipe YAML, e.g. configs/finetune/sst2.yaml"),
             arg("--data-root", default=None, help="folder holding the datasets (default: $LMLAB_DATA)")]),
    Command("ensemble", "lmlab.tasks.ensemble:make_ensemble",
            "combine fine-tuned models of one task (sentiment | qa) into one that averages their logits",
            [arg("task", help="sentiment or qa"),
             arg("model_dirs", nargs="+", help="two or more task model directories"), OUT, OVERWRITE]),
    Command("evaluate", "lmlab.tasks.evaluate:evaluate_task",
            "metrics of a task model on labelled data (or perplexity of a causal LM: task lm), as JSON",
            [arg("task", help="sentiment, qa, summarization, translation or lm"), arg("model_dir"),
             arg("--data", required=True, help="a file or a dataset, e.g. sst2:dev"),
             arg("--out", default=None, help="JSON file (default: MODEL_DIR/../eval/TASK-DATA.json)"),
             arg("--data-root", default=None, help="folder holding the datasets (default: $LMLAB_DATA)")]),
    Command("predict", "lmlab.tasks.pipeline:predict_command",
            "run a task model on a text (or on each input of --input FILE)",
            [arg("task"), arg("model_dir"), arg("text", nargs="?", default=None, help="the text (qa: the question)"),
             arg("--context", default=None, help="qa: the passage"),
             arg("--input", default=None, help=".txt (a line each), .jsonl, .csv or .tsv"),
             arg("--output", default=None, help="JSON lines out (default: print)")]),
    Command("hf import", "lmlab.hf.convert:import_hf",
            "convert a Hugging Face model directory on disk into an lmlab model directory",
            [arg("hf_dir"), arg("out_dir"),
             arg("--allow-pickle", action="store_true",
                 help="also read pytorch_model.bin (pickle; only for files you trust)"),
             OVERWRITE]),
    Command("embed train", "lmlab.embeddings.train:train_embeddings",
            "train word vectors (Word2Vec or GloVe) on text files, one document per line",
            [arg("corpus", nargs="+", help="text files (.txt, .gz) or directories of them"), OUT,
             arg("--algo", choices=["word2vec", "glove"], default=None, help="word2vec or glove"),
             arg("--dim", type=int, default=None, help="vector size"),
             arg("--window", type=int, default=None, help="context words each side"),
             arg("--min-count", type=int, default=None, help="drop rarer tokens"),
             arg("--epochs", type=int, default=None, help="passes over the corpus"),
             arg("--tokenizer", default=None,
                 help="words | whitespace | jieba | a directory with tokenizer.json"),
             arg("--threads", type=int, default=None, help="worker threads (1 = reproducible)"),
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
    Command("config show", "lmlab.config_reference:show_config",
            "every config field: its type, default and meaning (docs/config.md is this with --markdown)",
            [arg("section", nargs="?", default=None, help="a section (model, train, optim, task, ...) or a field "
                 "(optim.lr); none: all"),
             arg("--markdown", action="store_true", help="a Markdown page instead of text")]),
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
    from lmlab.config_reference import SECTIONS, sections_of

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
        sections = [s.name for s in sections_of(cmd.name)]
        flag_sections = [s.name for s in SECTIONS if cmd.name in s.commands and not s.overrides]
        if sections:
            sub.epilog = (f"config fields: --SECTION.FIELD=VALUE, --FIELD=VALUE at the top level (or in a recipe); "
                          f"`lmlab config show {'|'.join(sections)}` lists them")
        elif flag_sections:
            sub.epilog = f"the flags' defaults: `lmlab config show {'|'.join(flag_sections)}`"
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
    # --section.field=value, or --field=value for a top-level field (pretrain's --objective=mlm);
    # an unknown key is the config layer's error, which names it
    overrides = [e for e in extra if e.startswith("--") and "=" in e]
    unknown = [e for e in extra if e not in overrides]
    if unknown or (overrides and "overrides" not in params):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    if "overrides" in params:
        kwargs["overrides"] = overrides
    try:
        _show(fn(**kwargs))
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except LmlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`lmlab ... | head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing to flush at exit
        return 1
    except OSError as e:  # a full device met outside the artifact writers (metrics.jsonl, a plot)
        from lmlab.artifacts import no_space
        from lmlab.errors import DiskFull

        if not no_space(e):
            raise
        print(f"error: {e.filename or 'a write'}: no space left on the device; free some space there and run "
              "the command again (a training run resumes from its last checkpoint)", file=sys.stderr)
        return DiskFull.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
