"""What every fine-tuning task shares: its config, the tokenizer, and a shuffled batch source for
the training loop. The model from ``--init`` is `lmlab.model.pretrained.model_from_init` (of the
directory `lmlab.hf.init_source.resolve_init` finds); the directory a fine-tuned model is saved in
is `lmlab.tasks.task_model`.

A task (one file each: sentiment, qa, summarization, translation) subclasses `Task` and adds
a reader, the head it needs, an objective (``prepare(batch, g) -> Prepared``) and a metric;
the training itself is the one loop of `lmlab.train.loop`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np
import torch

from lmlab.config import check, read_yaml
from lmlab.errors import ArtifactError, ConfigError
from lmlab.tokenizer.ngrams import FILE as NGRAM_FILE
from lmlab.tokenizer.ngrams import NgramVocab

TRUNCATIONS = ("end", "start", "middle")
RECIPES = Path(__file__).with_name("recipes")  # package data: the tasks' default configs


@dataclass
class QAConfig:
    """task.qa: what only extractive QA reads."""

    stride: int = 48  # tokens shared by consecutive windows of a long context
    max_answer_length: int = 30  # longest answer span, tokens
    negative_windows: float = 1.0  # training: fraction kept of the windows that lack the answer
    question_match: bool = False  # context tokens whose word occurs in the question get segment 2 (qa/features.py)
    answer_cues: bool = False  # (Chinese) segments also mark where the question's wh-word sits (qa/features.py)
    decode: str = "max"  # the span with the best start+end logit, or expected_f1 (the best expected F1)
    sentence_match: bool = False  # segments also mark the context sentences that share most with the question
    sentence_ranker: bool = False  # with sentence_match: rank sentences by a ranker fit on the training questions

    def __post_init__(self) -> None:
        check(self.stride >= 0, "task.qa.stride", "must be >= 0")
        check(0 < self.negative_windows <= 1, "task.qa.negative_windows", "must be in (0, 1]")
        check(self.max_answer_length >= 1, "task.qa.max_answer_length", "must be >= 1")
        check(self.decode in ("max", "expected_f1"), "task.qa.decode", "must be max or expected_f1")
        check(self.sentence_match or not self.sentence_ranker, "task.qa.sentence_ranker",
              "ranks the sentences that task.qa.sentence_match marks: set task.qa.sentence_match=true too")


@dataclass
class Seq2SeqConfig:
    """task.seq2seq: what only the encoder–decoder tasks (summarization, translation) read."""

    max_target_length: int = 64  # target tokens (training truncates, generation stops)
    num_beams: int = 1  # decoding: 1 = greedy
    length_penalty: float = 1.0  # beam search: score / length^penalty
    no_repeat_ngram_size: int = 0  # decoding: forbid repeating n-grams of this size (0 = off)
    direction: str = ""  # translation datasets: en-de, de-en (multi30k), en-zh, zh-en (tatoeba)
    split_cjk: bool = False  # tokenizer trained from scratch (bpe): a CJK character per piece, the same in both sides

    def __post_init__(self) -> None:
        check(self.max_target_length >= 2, "task.seq2seq.max_target_length", "must be >= 2")
        check(1 <= self.num_beams <= 64, "task.seq2seq.num_beams", "must be in [1, 64] (1 = greedy)")
        check(math.isfinite(self.length_penalty), "task.seq2seq.length_penalty", "must be a finite number")
        check(self.no_repeat_ngram_size >= 0, "task.seq2seq.no_repeat_ngram_size", "must be >= 0 (0 = off)")


@dataclass
class TaskConfig:
    epochs: float = 0.0  # passes over the training data; > 0 sets train.max_steps
    # tokens per input (the source of a seq2seq task); longer inputs are truncated, QA contexts windowed
    max_length: int = 128
    text_column: str = ""  # generic files: column of the text / source (default: found by name)
    label_column: str = ""  # generic files: column of the label / target (default: found by name)
    lang: str = "auto"  # metric language: en, zh, or auto (from the references)
    eval_max_examples: int = 0  # examples scored at each in-training evaluation (0 = all)
    predict_batch_size: int = 32  # examples per forward pass in evaluation and prediction
    vocab_size: int = 8000  # tokenizer trained from the training file when there is no --init
    lowercase: bool = False  # that tokenizer: uncased (wordpiece)
    vectors: str = ""  # from scratch: word-vectors directory (`lmlab embed train`) initialising the token embeddings
    truncation: str = "end"  # classification inputs over max_length lose their end, start, or middle (Sun et al. 2019)
    group_by_length: bool = False  # training batches of similar lengths (less padding; EpochSource)
    qa: QAConfig = field(default_factory=QAConfig)
    seq2seq: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)

    # keys of the flat TaskConfig before its sections: named in the error a recipe or override that
    # still uses one gets, and moved by `nest_task_config` when a model directory's task.json is read
    moved: ClassVar[dict[str, str]] = {**{f.name: "qa" for f in fields(QAConfig)},
                                       **{f.name: "seq2seq" for f in fields(Seq2SeqConfig)}}

    def __post_init__(self) -> None:
        check(self.epochs >= 0, "task.epochs", "must be >= 0")
        check(self.max_length >= 8, "task.max_length", "must be >= 8")
        check(self.lang in ("auto", "en", "zh"), "task.lang", "must be auto, en or zh")
        check(self.eval_max_examples >= 0, "task.eval_max_examples", "must be >= 0")
        check(self.predict_batch_size >= 1, "task.predict_batch_size", "must be >= 1")
        check(self.vocab_size >= 64, "task.vocab_size", "must be >= 64")
        check(self.truncation in TRUNCATIONS, "task.truncation", f"must be one of {', '.join(TRUNCATIONS)}")


def nest_task_config(data: dict[str, Any]) -> dict[str, Any]:
    """A task config as a task.json written before task.qa and task.seq2seq existed stores it
    (every field at the top level) → the nested form; a nested one is returned as it is."""
    out = {k: v for k, v in data.items() if k not in TaskConfig.moved}
    for key, section in TaskConfig.moved.items():
        if key in data:
            out[section] = {**out.get(section, {}), key: data[key]}
    return out


class Task:
    """Base class; see sentiment.py for a complete task."""

    name = ""
    head = ""  # the model head the task trains
    default_preset = ""  # model preset when training from scratch
    tokenizer_kind = "wordpiece"  # tokenizer trained from scratch
    select_metric = ""  # metric for best checkpoint / early stopping (without the val_ prefix)
    recipe_name = ""  # its default config: recipes/<recipe_name>-{pretrained,scratch}.yaml ("": none)

    # -- data ---------------------------------------------------------------------------------
    def read(self, spec: str, cfg: TaskConfig, data_root: str | None = None) -> list[Any]:
        raise NotImplementedError

    def texts(self, examples: list[Any]) -> Iterable[str]:
        """Texts a from-scratch tokenizer is trained on."""
        raise NotImplementedError

    def meta(self, train: list[Any], cfg: TaskConfig) -> dict[str, Any]:
        """What the model directory must remember beyond the config (e.g. label names)."""
        return {}

    def features(self, examples: list[Any], tok, meta: dict, cfg: TaskConfig) -> list[dict]:
        raise NotImplementedError

    def objective(self, tok, meta: dict, cfg: TaskConfig):
        raise NotImplementedError

    def model_fields(self, meta: dict, cfg: TaskConfig) -> dict[str, Any]:
        return {"head": self.head}

    def recipe(self, pretrained: bool) -> dict[str, Any]:
        """Default config of the task (overridden by --config and --section.field=value)."""
        return read_recipe(self.recipe_name, pretrained) if self.recipe_name else {}

    def max_positions(self, cfg: TaskConfig) -> int:
        """Positions the model needs for inputs of this config."""
        return cfg.max_length

    # -- use ----------------------------------------------------------------------------------
    def evaluate(self, model, tok, meta: dict, cfg: TaskConfig, examples: list[Any]) -> tuple[dict, list[dict]]:
        """(metrics, one prediction record per example)."""
        raise NotImplementedError

    def predict(self, model, tok, meta: dict, cfg: TaskConfig, inputs: list[Any]) -> list[dict]:
        raise NotImplementedError


def read_recipe(name: str, pretrained: bool) -> dict[str, Any]:
    """The default config of task recipe `name`, for fine-tuning an ``--init`` model (`pretrained`) or
    training from scratch: recipes/NAME-pretrained.yaml or recipes/NAME-scratch.yaml."""
    return read_yaml(RECIPES / f"{name}-{'pretrained' if pretrained else 'scratch'}.yaml")


# -- batching ----------------------------------------------------------------------------------

class EpochSource:
    """`batch_at(g)`: micro-batch g of an endless sequence of epochs, each a permutation seeded
    by (seed, epoch) — a pure function of g, as the loop's exact resume requires.

    With `group_by_length` (Hugging Face's `group_by_length`) each run of `MEGA` batches of the
    permutation is sorted by length, longest first, so that a batch pads its rows to a similar
    length: the same examples per epoch, a fraction of the padding (SST-2: 3.0× the real tokens
    in random batches of 32, 1.05× grouped)."""

    MEGA = 50

    def __init__(self, features: list[dict], batch_size: int, seed: int, group_by_length: bool = False):
        if not features:
            raise ConfigError("no training examples")
        self.features, self.batch_size, self.seed = features, batch_size, seed
        self.lengths = np.array([len(f["input_ids"]) for f in features]) if group_by_length else None
        self._orders: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            if len(self._orders) > 4:
                self._orders.clear()
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.features))
            if self.lengths is not None:
                mega = self.MEGA * self.batch_size
                order = np.concatenate([run[np.argsort(-self.lengths[run], kind="stable")]
                                        for run in np.split(order, range(mega, len(order), mega))])
            self._orders[epoch] = order
        return self._orders[epoch]

    def batch_at(self, g: int) -> list[dict]:
        n = len(self.features)
        positions = range(g * self.batch_size, (g + 1) * self.batch_size)
        return [self.features[int(self._order(p // n)[p % n])] for p in positions]


def in_batches(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def pad(rows: list[list[int]], value: int) -> torch.Tensor:
    """Right-pad to the longest row → [B, T] int64."""
    width = max(1, max(len(r) for r in rows))
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def encoder_inputs(batch: list[dict], pad_id: int, token_types: bool) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and, when `token_types` (the model has a segment table) and the
    features carry them, token_type_ids of features."""
    ids = pad([f["input_ids"] for f in batch], pad_id)
    mask = pad([[1] * len(f["input_ids"]) for f in batch], 0)
    out = {"input_ids": ids, "attention_mask": mask}
    if token_types and "token_type_ids" in batch[0]:
        out["token_type_ids"] = pad([f["token_type_ids"] for f in batch], 0)
    return out


def to_model(model, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inputs onto the model's device (evaluation inside training may run on a GPU)."""
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in inputs.items()}


def pad_id_of(tok) -> int:
    return tok.pad_id if tok.pad_id is not None else 0


def truncate(ids: list[int], n: int, where: str = "end") -> list[int]:
    """At most `n` of `ids`, cutting at the end, the start, or the middle. "middle" keeps the first
    quarter and the last three quarters: a review's verdict tends to sit at its end, its topic at its
    start (head+tail truncation, Sun et al. 2019, "How to fine-tune BERT for text classification")."""
    if len(ids) <= n:
        return ids
    if where == "start":
        return ids[len(ids) - n:]
    if where == "middle":
        head = n // 4
        return ids[:head] + ids[len(ids) - (n - head):]
    return ids[:n]


def wrap_single(tok, ids: list[int], max_length: int, truncation: str = "end") -> list[int]:
    """[CLS] ids [SEP] for BERT-style vocabularies, else ids [+ eos]; truncated to fit."""
    if tok.cls_id is not None and tok.sep_id is not None:
        return [tok.cls_id] + truncate(ids, max_length - 2, truncation) + [tok.sep_id]
    if tok.eos_id is not None:
        return truncate(ids, max_length - 1, truncation) + [tok.eos_id]
    return truncate(ids, max_length, truncation)


# -- tokenizers --------------------------------------------------------------------------------

def load_task_tokenizer(directory: str | Path):
    """An lmlab tokenizer directory (written by `lmlab tokenizer train` or `lmlab hf import`), Hugging
    Face tokenizer files alone (an older import), or a bag-of-n-grams vocabulary."""
    from lmlab.tokenizer.tokenizer import Tokenizer

    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: no tokenizer directory")
    if (directory / NGRAM_FILE).exists():  # the bag-of-n-grams classifier's vocabulary
        return NgramVocab.load(directory)
    return Tokenizer.load(directory)


def train_task_tokenizer(task: Task, texts: Iterable[str], work: Path, cfg: TaskConfig):
    """A tokenizer trained on the task's training texts (written to work/tokenizer)."""
    from lmlab.tokenizer.train import TokenizerConfig, train_tokenizer

    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "tokenizer-texts.txt"
    with open(corpus, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(" ".join(t.split()) + "\n")  # one document per line
    specials = {"bpe": {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}}.get(task.tokenizer_kind, {})
    tcfg = TokenizerConfig(kind=task.tokenizer_kind, vocab_size=cfg.vocab_size, lowercase=cfg.lowercase,
                           split_cjk=cfg.seq2seq.split_cjk,
                           special_tokens=specials, model_max_length=cfg.max_length)
    train_tokenizer([str(corpus)], work / "tokenizer", config=tcfg, overwrite=True)
    return load_task_tokenizer(work / "tokenizer")

