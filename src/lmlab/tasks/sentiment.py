"""Sentiment analysis / text classification, any label set (binary or multi-class).

    lmlab finetune sentiment --train sst2:train --eval sst2:dev --out out/sst2            # from scratch
    lmlab finetune sentiment --train reviews.csv --eval dev.csv --init out/bert/model --out out/cls
    lmlab evaluate sentiment out/sst2/model --data sst2:dev
    lmlab predict sentiment out/sst2/model "a gripping , funny film"

Data: ``sst2:train|dev``, ``chnsenticorp:train|dev`` (label names negative/positive), or a
CSV/TSV/JSONL file whose text column is found among ``sentence text text_a content review …``
and label column among ``label sentiment polarity class …`` (or ``--task.text_column`` /
``--task.label_column``). Label names are those of the training file, sorted (numerically when
all are integers), and kept in the model directory's task.json with their numeric ids
(``"label_ids": {"negative": 0, "positive": 1}``: a named dataset's own ids, or the integer a
label spells). Evaluation data may give a label by name or by that id, so that a model trained on
``sst2:train`` (negative/positive) reads an SST-2 file labelled 0/1, and one trained on that file
reads ``sst2:dev``; any other label is an error naming the row.

Model: head "classification" — BERT pools [CLS] (tanh(W·h₀+b)), a decoder reads its last token
— then softmax over the labels; objective: cross-entropy on the class id. ``--model.preset=ngram``
trains the bag-of-n-grams classifier of `lmlab.model.ngram` instead (NBSVM: logistic regression
on naive-Bayes-scaled n-grams), the linear baseline, in seconds. Inputs are
``[CLS] text [SEP]`` truncated to ``task.max_length`` tokens (stated in the results as
``truncated``), by default at the end; ``--task.truncation=middle`` keeps the first quarter and
the last three quarters of a long text instead, ``start`` its end. Metric: accuracy,
precision/recall/F1 (per class, macro, micro), confusion matrix (`lmlab.evaluation.classification`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lmlab.errors import DataError
from lmlab.evaluation.classification import classification_report
from lmlab.tasks.records import LABEL_COLUMNS, TEXT_COLUMNS, cell, dataset_spec, pick_column, read_records
from lmlab.tasks.task import Task, TaskConfig, encoder_inputs, in_batches, pad_id_of, to_model, wrap_single
from lmlab.train.objectives import Prepared

NAMED = {"sst2": ("sst2", ["negative", "positive"]), "chnsenticorp": ("chnsenticorp", ["negative", "positive"])}


@dataclass
class LabeledExample:
    text: str
    label: str | None  # None when unlabeled (prediction)
    where: str = ""  # file:row, for error messages
    label_id: int | None = None  # a named dataset's numeric id of the label (sst2: 0 = negative)


class Classification:
    name = "classification"
    predicts_tokens = False  # its loss is not per token: no perplexity

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def prepare(self, batch: list[dict], index: int) -> Prepared:
        inputs = encoder_inputs(batch, self.pad_id, token_types=True)
        inputs["labels"] = torch.tensor([f["label"] for f in batch], dtype=torch.long)  # [B]
        return Prepared(inputs, len(batch))


class Sentiment(Task):
    name = "sentiment"
    head = "classification"
    default_preset = "bert-tiny"
    tokenizer_kind = "wordpiece"
    select_metric = "accuracy"
    recipe_name = "sentiment"

    def read(self, spec: str, cfg: TaskConfig, data_root: str | None = None) -> list[LabeledExample]:
        named = dataset_spec(spec)
        if named:
            import lmlab.datasets as datasets

            name, split = named
            if name not in NAMED:
                raise DataError(f"{spec}: unknown dataset for sentiment; use {', '.join(f'{n}:SPLIT' for n in NAMED)} "
                                "or a CSV/TSV/JSONL file")
            reader, names = NAMED[name]
            rows = getattr(datasets, reader)(split, data_root)
            return [LabeledExample(r.text, names[r.label], f"{spec}:{i + 1}", r.label) for i, r in enumerate(rows)]
        rows = read_records(spec)
        text_col = pick_column(rows, spec, cfg.text_column, TEXT_COLUMNS, "text")
        label_col = pick_column(rows, spec, cfg.label_column, LABEL_COLUMNS, "label")
        out = []
        for i, row in enumerate(rows):
            text, label = cell(row, text_col, spec, i), cell(row, label_col, spec, i)
            if not text:
                raise DataError(f"{spec}: row {i + 1}: empty {text_col!r}")
            if not label:
                raise DataError(f"{spec}: row {i + 1}: missing label in {label_col!r}")
            out.append(LabeledExample(text, label, f"{spec}: row {i + 1}"))
        return out

    def texts(self, examples):
        return (e.text for e in examples)

    def meta(self, train, cfg):
        labels = sorted({e.label for e in train})
        if all(lab.lstrip("-").isdigit() for lab in labels):
            labels = sorted(labels, key=int)
        if len(labels) < 2:
            raise DataError(f"the training data has a single label {labels}; classification needs at least 2")
        ids = {e.label: e.label_id for e in train if e.label_id is not None}
        if not ids and all(lab.lstrip("-").isdigit() for lab in labels):
            ids = {lab: int(lab) for lab in labels}
        return {"labels": labels, **({"label_ids": {lab: ids[lab] for lab in labels}} if len(ids) == len(labels)
                                     else {})}

    def model_fields(self, meta, cfg):
        return {"head": "classification", "n_labels": len(meta["labels"])}

    def label_ids(self, examples: list[LabeledExample], meta: dict) -> list[int]:
        index = {lab: i for i, lab in enumerate(meta["labels"])}
        by_id = {str(n): index[lab] for lab, n in meta.get("label_ids", {}).items() if lab in index}
        out = []
        for e in examples:
            for key in (e.label, None if e.label_id is None else str(e.label_id)):
                if key in index or key in by_id:
                    out.append(index[key] if key in index else by_id[key])
                    break
            else:
                ids = [str(n) for n in meta.get("label_ids", {}).values()]
                alias = f" (or their ids {', '.join(ids)})" if ids and ids != meta["labels"] else ""
                raise DataError(f"{e.where}: label {e.label!r} was not seen in training; the model knows "
                                f"{meta['labels']}{alias}")
        return out

    def features(self, examples, tok, meta, cfg):
        ids = tok.encode_batch([e.text for e in examples])
        labels = self.label_ids(examples, meta) if examples and examples[0].label is not None else [None] * len(ids)
        if tok.kind == "ngram":  # a bag of n-grams: the whole text, in no order, nothing to wrap or cut
            return [{"input_ids": x, "label": y, "truncated": False} for x, y in zip(ids, labels)]
        return [{"input_ids": wrap_single(tok, x, cfg.max_length, cfg.truncation), "label": y,
                 "truncated": len(x) + 2 > cfg.max_length} for x, y in zip(ids, labels)]

    def objective(self, tok, meta, cfg):
        return Classification(pad_id_of(tok))

    @torch.no_grad()
    def _probabilities(self, model, tok, cfg, features) -> torch.Tensor:
        model.eval()
        out = []
        for batch in in_batches(features, cfg.predict_batch_size):
            inputs = encoder_inputs(batch, pad_id_of(tok), token_types=model.config.type_vocab_size > 0)
            logits = model(**to_model(model, inputs)).logits
            out.append(torch.softmax(logits.float(), -1).cpu())
        return torch.cat(out) if out else torch.zeros(0, model.config.n_labels)

    def evaluate(self, model, tok, meta, cfg, examples):
        if not examples:
            raise DataError("no examples to evaluate")
        feats = self.features(examples, tok, meta, cfg)
        probs = self._probabilities(model, tok, cfg, feats)
        pred = probs.argmax(-1).tolist()
        gold = [f["label"] for f in feats]
        metrics = classification_report(gold, pred, meta["labels"])
        metrics["truncated"] = sum(f["truncated"] for f in feats)
        records = [{"text": e.text, "label": e.label, "prediction": meta["labels"][p], "score": float(probs[i, p])}
                   for i, (e, p) in enumerate(zip(examples, pred))]
        return metrics, records

    def predict(self, model, tok, meta, cfg, inputs: list[Any]) -> list[dict]:
        texts = [x if isinstance(x, str) else x.get("text", "") for x in inputs]
        if any(not t.strip() for t in texts):
            raise DataError("an input text is empty")
        feats = self.features([LabeledExample(t, None) for t in texts], tok, meta, cfg)
        probs = self._probabilities(model, tok, cfg, feats)
        out = []
        for f, p in zip(feats, probs):
            best = int(p.argmax())
            out.append({"label": meta["labels"][best], "score": float(p[best]),
                        "scores": {lab: float(p[i]) for i, lab in enumerate(meta["labels"])},
                        **({"truncated": True} if f["truncated"] else {})})
        return out


TASK = Sentiment()
