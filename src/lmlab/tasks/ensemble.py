"""`lmlab ensemble TASK MODEL_DIR MODEL_DIR... --out DIR`: several fine-tuned models as one.

    lmlab finetune sentiment ... --out out/sst2-s1 --train.seed=1     (and seeds 2, 3)
    lmlab ensemble sentiment out/sst2-s1/model out/sst2-s2/model out/sst2-s3/model --out out/sst2-x3/model
    lmlab evaluate sentiment out/sst2-x3/model --data sst2:dev

The ensemble averages its members' logits: class logits for sentiment, start and end logits of
each window for QA (then the span search runs once, on the averages). Members are fine-tuning
runs of one task that read their inputs alike: the same tokenizer (runs from one ``--init``
share it), the same labels, and the same task fields that shape the inputs (`INPUT_FIELDS`); the
first member's task config is the ensemble's. Generation tasks (summarization, translation) are
not ensembled: their decoders would have to be averaged step by step inside the beam search.

The directory is a task model directory that `evaluate`, `predict` and `pipeline` read (not
`serve`, whose models are single networks):

    DIR/  task.json ("ensemble": ["members/0", ...])  members/0/ (a copy of MODEL_DIR)  ...  manifest.json
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch
from torch import nn

from lmlab.artifacts import ArtifactWriter, read_json, verify, write_json
from lmlab.errors import ArtifactError, ConfigError
from lmlab.model import load_model
from lmlab.model.pretrained import resolve_model_dir
from lmlab.model.ngram import NgramOutput
from lmlab.model.transformer import ModelOutput
from lmlab.tasks import get_task
from lmlab.tasks.qa.ranker import SentenceRanker
from lmlab.tasks.task import load_task_tokenizer, nest_task_config

ENSEMBLE_KIND = "lmlab-ensemble"
ENSEMBLE_TASKS = ("sentiment", "qa")
# Weights of two members' sentence rankers closer than this are one ranker, and the first member's
# grades the sentences for all: fits on one and on two threads of CMRC2018 differ by up to 0.014.
RANKER_TOLERANCE = 0.05
# TaskConfig fields that decide what a member's inputs look like; members must agree on them
INPUT_FIELDS = ("max_length", "qa.stride", "qa.question_match", "qa.answer_cues", "qa.sentence_match",
                "qa.sentence_ranker", "lowercase", "truncation")


class Ensemble(nn.Module):
    """Members run on the same inputs; their logits are averaged ([B, n_labels] or [B, T, 2])."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.config = members[0].config  # type_vocab_size, n_labels, ... agree across members

    def forward(self, **inputs) -> ModelOutput | NgramOutput:
        outs = [m(**inputs) for m in self.members]
        logits = torch.stack([o.logits.float() for o in outs]).mean(0)
        return dataclasses.replace(outs[0], logits=logits, loss=None)  # the rest (hidden states) is member 0's


def make_ensemble(task: str, model_dirs: list[str], out: str, overwrite: bool = False) -> dict:
    """Copy the members into one task model directory, after checking that they can be averaged."""
    T = get_task(task)
    if T.name not in ENSEMBLE_TASKS:
        raise ConfigError(f"ensemble: {T.name} models cannot be ensembled (only {', '.join(ENSEMBLE_TASKS)}): "
                          "a generation model's decoder would have to be averaged inside the search")
    if len(model_dirs) < 2:
        raise ConfigError("ensemble: give at least two model directories")
    try:
        dirs = [resolve_model_dir(d) for d in model_dirs]  # a run directory: its model/
    except ArtifactError as e:
        raise ArtifactError(f"ensemble: {e}") from None
    infos = [_member_info(d, T.name) for d in dirs]
    first, first_tok = infos[0], _tokenizer_fingerprint(dirs[0])
    for d, info in zip(dirs[1:], infos[1:]):
        key = _meta_difference(first["meta"], info["meta"])
        if key == "labels":
            raise ConfigError(f"ensemble: {d} has labels {info['meta'].get('labels')}, {dirs[0]} has "
                              f"{first['meta'].get('labels')}; members must share the label set")
        if key is not None:
            raise ConfigError(f"ensemble: {d} and {dirs[0]} differ in their {key} (fitted on other training "
                              "data?); fine-tune the members on one training set")
        differ = [f for f in INPUT_FIELDS if _field(info["config"], f) != _field(first["config"], f)]
        if differ:
            raise ConfigError(f"ensemble: {d} and {dirs[0]} differ in task.{', task.'.join(differ)}; members must "
                              "read their inputs alike")
        if _tokenizer_fingerprint(d) != first_tok:
            raise ConfigError(f"ensemble: {d} and {dirs[0]} have different tokenizers; fine-tune the members "
                              "from one --init (which carries the tokenizer) to ensemble them")
    names = [f"members/{i}" for i in range(len(dirs))]
    stage = {"stage": "ensemble", "task": T.name, "members": [str(d) for d in dirs]}
    with ArtifactWriter(out, kind=ENSEMBLE_KIND, config=stage, overwrite=overwrite) as w:
        for d, name in zip(dirs, names):
            shutil.copytree(d, w.path / name, ignore=shutil.ignore_patterns(".lock"))
        write_json(w.path / "task.json", {"task": T.name, "meta": first["meta"], "config": first["config"],
                                          "ensemble": names})
    return {"out": str(out), "task": T.name, "members": len(dirs)}


def load_ensemble(model_dir: Path, info: dict) -> tuple[Ensemble, Path]:
    """(the Ensemble, its tokenizer directory) of a directory `make_ensemble` wrote."""
    verify(model_dir, kind=ENSEMBLE_KIND, only=["task.json"])
    members = [load_model(model_dir / name) for name in info["ensemble"]]
    return Ensemble(members).eval(), model_dir / info["ensemble"][0] / "tokenizer"


def _member_info(d: Path, task: str) -> dict:
    path = d / "task.json"
    if not path.exists():
        raise ArtifactError(f"ensemble: {d} is not a fine-tuned task model (no task.json)")
    info = read_json(path)
    if info.get("task") != task:
        raise ArtifactError(f"ensemble: {d} is a {info.get('task')!r} model, not {task!r}")
    if "ensemble" in info:
        raise ArtifactError(f"ensemble: {d} is itself an ensemble; list its members instead")
    if not (d / "model.json").exists() or not (d / "tokenizer").is_dir():
        raise ArtifactError(f"ensemble: {d} lacks model.json or tokenizer/; is it a complete task model?")
    return {**info, "config": nest_task_config(info.get("config", {}))}


def _field(config: dict, key: str):
    """A dotted field ("qa.stride") of a task config dict; None where it is not set."""
    for part in key.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def _meta_difference(a: dict, b: dict) -> str | None:
    """The first key of two members' task metadata on which they differ, or None."""
    for key in sorted(a.keys() | b.keys()):
        x, y = a.get(key), b.get(key)
        if (key == "sentence_ranker" and x and y and x["features"] == y["features"]
                and SentenceRanker(x).close_to(SentenceRanker(y), RANKER_TOLERANCE)):
            continue
        if x != y:
            return key
    return None


def _tokenizer_fingerprint(d: Path) -> str:
    return load_task_tokenizer(d / "tokenizer").fingerprint  # as token shards check theirs
