"""Summarisation: dialogue → summary (DialogSum, English), abstract → title (CSL, Chinese).

    lmlab finetune summarization --train dialogsum:train --eval dialogsum:dev --out out/dialogsum
    lmlab finetune summarization --train csl:dev:0-799 --eval csl:dev:800-999 --out out/csl
    lmlab predict summarization out/dialogsum/model "#Person1#: Hi ... #Person2#: ..."

Data: ``dialogsum:train|dev`` (the train file is Python dict literals, read safely by
`lmlab.datasets.dialogsum`), ``csl:dev`` (the only split here; ``csl:dev:A-B`` takes rows
A..B, so that a run can train and evaluate on disjoint parts), or a CSV/TSV/JSONL file with a
document column (``document dialogue text article abstract source``) and a summary column
(``summary title target highlights``; a JSON list of strings = several references).
Encoder–decoder training and decoding: see `seq2seq`. Metric: ROUGE-1/2/L F ×100
(`lmlab.evaluation.text.rouge`; Chinese by character); the best checkpoint by ROUGE-L.
"""

from __future__ import annotations

import re

from lmlab.errors import DataError
from lmlab.evaluation.text import rouge
from lmlab.tasks.records import dataset_spec
from lmlab.tasks.seq2seq import Pair, Seq2SeqTask, read_pairs

SOURCES = ("document", "dialogue", "text", "article", "abstract", "source", "src")
TARGETS = ("summary", "title", "target", "highlights", "tgt")


def row_range(rows: list, spec: str, rng: str) -> list:
    m = re.fullmatch(r"(\d+)-(\d+)", rng)
    if not m:
        raise DataError(f"{spec}: a row range looks like 0-799")
    picked = rows[int(m.group(1)):int(m.group(2)) + 1]
    if not picked:
        raise DataError(f"{spec}: no rows in {rng} (there are {len(rows)})")
    return picked


class Summarization(Seq2SeqTask):
    name = "summarization"
    select_metric = "rougeL"

    def read(self, spec, cfg, data_root=None):
        import lmlab.datasets as datasets

        named = dataset_spec(spec)
        if not named:
            return read_pairs(spec, cfg, SOURCES, TARGETS)
        name, split = named
        split, _, rng = split.partition(":")
        if name == "dialogsum":
            pairs = [Pair(r.dialogue, [r.summary], f"{spec}:{i + 1}")
                     for i, r in enumerate(datasets.dialogsum(split, data_root))]
        elif name in ("csl", "csl_ts", "csl-ts"):
            pairs = [Pair(r.abstract, [r.title], f"{spec}:{i + 1}")
                     for i, r in enumerate(datasets.csl_ts(split, data_root))]
        else:
            raise DataError(f"{spec}: unknown summarisation dataset; use dialogsum:train|dev, csl:dev[:A-B] or a file")
        return row_range(pairs, spec, rng) if rng else pairs

    def score(self, predictions, references, cfg):
        return rouge(predictions, references, cfg.lang)

    def predict(self, model, tok, meta, cfg, inputs):
        return self._predict(model, tok, cfg, inputs, "summary")


TASK = Summarization()
