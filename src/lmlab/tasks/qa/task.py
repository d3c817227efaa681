"""Extractive question answering (SQuAD v1.1 format): English and Chinese.

    lmlab finetune qa --train cmrc2018:train --eval cmrc2018:trial --init hf:/models/bert-base-chinese --out out/cmrc
    lmlab finetune qa --train squad:dev:0-29 --eval squad:dev:30-37 --init out/en-bert/model --out out/squad
    lmlab predict qa out/cmrc/model "谁写了红楼梦？" --context "《红楼梦》是曹雪芹所著的长篇小说。"

Data: ``cmrc2018:train|trial``, ``squad:dev`` (optionally an article range ``squad:dev:0-29``),
or any SQuAD-format JSON file. An answer whose text is not found at its ``answer_start`` is
dropped, counted and its question id reported (``data_report`` in the results); a question
left without answers is dropped.

Features: ``[CLS] question [SEP] context-window [SEP]`` (segments 0 / 1); ``task.qa.question_match``,
``task.qa.answer_cues`` and ``task.qa.sentence_match`` pack more into the context's segment ids
(features.py; ``task.qa.sentence_ranker``: ranker.py). ``task.qa.decode=expected_f1`` picks, in the best
window, the candidate span with the highest expected character-overlap F1 under p(start)·p(end)
(minimum Bayes risk) instead of the highest start + end logit: it prefers longer, central spans.
A context longer than ``task.max_length`` is split into windows that overlap by ``task.qa.stride`` tokens. Character
offsets come from the tokenizer (``tokenizers`` offsets into the original string), so spans
are exact for Chinese, where each character is a token. A training window is a feature per
distinct gold answer it holds whole (SQuAD's dev file has up to three answers a question:
annotators differ on a span's edges); a window that holds none points at [CLS] (position 0),
and ``task.qa.negative_windows`` < 1 keeps only that fraction of those (a fixed choice per
question and window), for a shorter epoch over long contexts.

Model: head "span" — start and end logits per token; loss = mean of the two cross-entropies.
Prediction: over all windows of a question, the best (start, end) with start ≤ end, length ≤
``task.qa.max_answer_length``, both inside the context, by start_logit + end_logit; the answer is
the context substring between the two tokens' character offsets; ``score`` = p(start)·p(end)
within its window. Metric: SQuAD EM/F1 (English) or the CMRC2018 character-level variant
(Chinese; ``task.lang`` or detected from the contexts).
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any

import torch

from lmlab.errors import ConfigError, DataError
from lmlab.evaluation.span import span_scores
from lmlab.evaluation.text import has_cjk
from lmlab.tasks.records import dataset_spec
from lmlab.tasks.qa.features import (context_kinds, cue_grades, question_matched, segment_types, sentence_grades,
                                     token_words, wh_parts)
from lmlab.tasks.qa.ranker import SentenceRanker, sentence_features, sentences
from lmlab.tasks.task import Task, TaskConfig, encoder_inputs, in_batches, pad_id_of, to_model
from lmlab.train.objectives import Prepared

MAX_QUESTION_TOKENS = 64
TOP_K = 20


class Examples(list):
    """Questions as read, with `report`: counts (and ids) of answers dropped or not alignable."""
    report: dict[str, Any]


class SpanObjective:
    name = "span"
    predicts_tokens = False  # its loss is not per token: no perplexity

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def prepare(self, batch: list[dict], index: int) -> Prepared:
        inputs = encoder_inputs(batch, self.pad_id, token_types=True)
        inputs["labels"] = torch.tensor([[f["start"], f["end"]] for f in batch], dtype=torch.long)  # [B, 2]
        return Prepared(inputs, len(batch))


def _article_range(examples, spec: str, rng: str):
    m = re.fullmatch(r"(\d+)-(\d+)", rng)
    if not m:
        raise DataError(f"{spec}: article range must look like 0-29")
    lo, hi = int(m.group(1)), int(m.group(2))
    titles: list[str] = []
    for e in examples:
        if not titles or titles[-1] != e.title:
            titles.append(e.title)
    keep = set(titles[lo:hi + 1])
    if not keep:
        raise DataError(f"{spec}: no articles in range {rng} (there are {len(titles)})")
    return [e for e in examples if e.title in keep]


def _kept(key: str, fraction: float) -> bool:
    """A fixed pseudo-random `fraction` of keys (the same on every run and process)."""
    return fraction >= 1 or zlib.crc32(key.encode()) < fraction * 2**32


def _candidates(start: torch.Tensor, end: torch.Tensor, max_length: int):
    """Valid spans among the top-k starts × top-k ends of a window ([T] logits each): start and end
    token indices [N] (start-major, as a double loop would meet them) and their summed logits."""
    k = min(TOP_K, start.numel())
    s = start.topk(k).indices[:, None].expand(k, k).reshape(-1)
    e = end.topk(k).indices[None, :].expand(k, k).reshape(-1)
    ok = (e >= s) & (e - s + 1 <= max_length)
    s, e = s[ok], e[ok]
    return s, e, start[s] + end[e]


def _expected_f1(chars: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Per candidate span ([N, 2] character [start, end)), its expected character-overlap F1
    Σ_j p_j·F1(i, j) against the candidates themselves, weighted by their probabilities p [N]
    (minimum Bayes risk decoding for the F1 metric)."""
    lo = torch.maximum(chars[:, None, 0], chars[None, :, 0])
    hi = torch.minimum(chars[:, None, 1], chars[None, :, 1])
    length = (chars[:, 1] - chars[:, 0]).clamp(min=1)
    f1 = 2 * (hi - lo).clamp(min=0) / (length[:, None] + length[None, :])  # [N, N]
    return f1.float() @ (p / p.sum())


def _ranker(meta: dict) -> SentenceRanker | None:
    return SentenceRanker(meta["sentence_ranker"]) if meta.get("sentence_ranker") else None


class QuestionAnswering(Task):
    name = "qa"
    head = "span"
    default_preset = "bert-tiny"
    tokenizer_kind = "wordpiece"
    select_metric = "f1"
    recipe_name = "qa"

    def read(self, spec, cfg, data_root=None):
        from lmlab.datasets import qa as qa_data

        named = dataset_spec(spec)
        if named:
            name, split = named
            split, _, rng = split.partition(":")
            if name not in ("squad", "cmrc2018"):
                raise DataError(f"{spec}: unknown QA dataset; use squad:dev[:A-B], cmrc2018:train|trial or a "
                                "SQuAD-format JSON file")
            examples = getattr(qa_data, name)(split, data_root)
            if rng:
                examples = _article_range(examples, spec, rng)
        else:
            if not Path(spec).is_file():
                raise DataError(f"{spec}: no such file (give SQuAD-format JSON or cmrc2018:train)")
            examples = qa_data.read_squad_json(Path(spec))
        stats = qa_data.load_stats()
        if not examples:
            raise DataError(f"{spec}: no usable questions ({stats})")
        out = Examples(examples)
        out.report = {**stats, "dropped_ids": list(qa_data.LAST_DROPPED_IDS[:50])}
        return out

    def texts(self, examples):
        seen = set()
        for e in examples:
            if e.context not in seen:
                seen.add(e.context)
                yield e.context
            yield e.question

    def meta(self, train, cfg):
        """With task.qa.sentence_ranker: the sentence ranker fit on the training questions (ranker.py)."""
        if not (cfg.qa.sentence_match and cfg.qa.sentence_ranker):
            return {}
        xs, gold = [], []
        for e in train:
            spans = sentences(e.context)
            at = [i for i, (a, b) in enumerate(spans) if a <= e.answers[0].start < b] if e.answers else []
            if at:
                xs.append(sentence_features(e.context, e.question, wh_parts(e.question)))
                gold.append(at[0])
        if not xs:
            raise DataError("task.qa.sentence_ranker: no training question has an answer inside a sentence")
        return {"sentence_ranker": SentenceRanker.fit(xs, gold).state()}

    def model_fields(self, meta, cfg):
        types = segment_types(cfg)
        return {"head": self.head, **({"type_vocab_size": types} if types > 2 else {})}

    def _windows(self, example, tok, cfg: TaskConfig, training: bool, contexts: dict | None = None,
                 ranker: SentenceRanker | None = None) -> list[dict]:
        """`contexts`: a cache of encoded contexts, by text (a paragraph has several questions)."""
        q_enc = tok.backend.encode(example.question, add_special_tokens=False)
        q_ids = q_enc.ids[:MAX_QUESTION_TOKENS]
        contexts = {} if contexts is None else contexts
        if example.context not in contexts:
            enc = tok.backend.encode(example.context, add_special_tokens=False)
            words = token_words(enc, example.context) if cfg.qa.question_match else []
            contexts[example.context] = (enc.ids, enc.offsets, words)
        ids, offsets, words = contexts[example.context]
        segment = [1] * len(ids)
        if cfg.qa.question_match:
            matched = question_matched(words, token_words(q_enc, example.question))
            segment = [2 if m else 1 for m in matched]
        if cfg.qa.answer_cues:
            runs, starts, ends = cue_grades(example.context, example.question, offsets)
            segment = [(3 if r else s) + 3 * (a + 3 * b) for s, r, a, b in zip(segment, runs, starts, ends)]
        if cfg.qa.sentence_match:
            kinds = context_kinds(cfg)
            grades = sentence_grades(example.context, example.question, offsets, ranker)
            segment = [s + kinds * g for s, g in zip(segment, grades)]
        cls = tok.cls_id if tok.cls_id is not None else pad_id_of(tok)
        sep = tok.sep_id if tok.sep_id is not None else pad_id_of(tok)
        room = cfg.max_length - len(q_ids) - 3
        if room < 8:
            raise DataError(f"question {example.id}: task.max_length={cfg.max_length} leaves no room for the context")
        if cfg.qa.stride >= room:
            raise ConfigError(f"task.qa.stride={cfg.qa.stride} must be smaller than the context room of a window "
                              f"({room} tokens at task.max_length={cfg.max_length}); lower it")
        spans: list[tuple[int, int]] = []  # token spans of the distinct gold answers
        if training:
            for a in dict.fromkeys((a.start, a.start + len(a.text)) for a in example.answers):
                inside = [t for t, (s, e) in enumerate(offsets) if e > a[0] and s < a[1] and e > s]
                if inside and (inside[0], inside[-1]) not in spans:
                    spans.append((inside[0], inside[-1]))
            if not spans:
                return []  # no answer covers a token (e.g. only whitespace): counted by the caller
        head = [cls] + q_ids + [sep]
        out, begin, step = [], 0, max(1, room - cfg.qa.stride)
        while True:
            end = min(begin + room, len(ids))
            f = {"input_ids": head + ids[begin:end] + [sep],
                 "token_type_ids": [0] * len(head) + segment[begin:end] + [1],
                 "offset": len(head), "begin": begin, "stop": end}  # context tokens [begin, stop)
            if training:  # a feature per gold span the window holds, else one pointing at [CLS]
                held = [(s - begin + len(head), e - begin + len(head)) for s, e in spans if begin <= s and e < end]
                out.extend({**f, "start": s, "end": e} for s, e in held or [(0, 0)])
            else:  # prediction maps tokens back to characters (one list shared by the windows)
                out.append({**f, "offsets": offsets})
            if end >= len(ids):
                return out
            begin += step

    def features(self, examples, tok, meta, cfg):
        out, unaligned, contexts, ranker = [], [], {}, _ranker(meta)
        for e in examples:
            windows = self._windows(e, tok, cfg, training=True, contexts=contexts, ranker=ranker)
            if not windows:
                unaligned.append(e.id)
            out.extend(w for k, w in enumerate(windows)
                       if w["start"] or _kept(f"{e.id}:{k}", cfg.qa.negative_windows))
        if isinstance(examples, Examples):
            examples.report.update(unaligned_answers=len(unaligned), unaligned_ids=unaligned[:50])
        return out

    def objective(self, tok, meta, cfg):
        return SpanObjective(pad_id_of(tok))

    @torch.no_grad()
    def _answer(self, model, tok, meta: dict, cfg: TaskConfig, examples: list) -> list[dict]:
        model.eval()
        contexts: dict = {}
        ranker = _ranker(meta)
        windows = [(i, f) for i, e in enumerate(examples) for f in self._windows(e, tok, cfg, False, contexts, ranker)]
        best: list[dict | None] = [None] * len(examples)
        for chunk in in_batches(windows, cfg.predict_batch_size):
            inputs = encoder_inputs([f for _, f in chunk], pad_id_of(tok), token_types=True)
            logits = model(**to_model(model, inputs)).logits
            logits = logits.float().cpu()  # [B, T, 2]
            for (i, f), lg in zip(chunk, logits):
                lo, hi = f["offset"], f["offset"] + f["stop"] - f["begin"]  # context token positions
                start, end = lg[lo:hi, 0], lg[lo:hi, 1]
                s, e, logit = _candidates(start, end, cfg.qa.max_answer_length)
                if not len(s):
                    continue
                top = int(logit.argmax())
                if best[i] is not None and float(logit[top]) <= best[i]["logit"]:
                    continue
                offsets = f["offsets"][f["begin"]:f["stop"]]
                chars = torch.tensor([[offsets[a][0], offsets[b][1]] for a, b in zip(s.tolist(), e.tolist())])
                p = torch.softmax(start, 0)[s] * torch.softmax(end, 0)[e]  # [N]
                pick = top if cfg.qa.decode == "max" else int(_expected_f1(chars, p).argmax())
                a, b = chars[pick].tolist()
                best[i] = {"answer": examples[i].context[a:b], "start": a, "end": b, "score": float(p[pick]),
                           "logit": float(logit[top])}
        return [b if b is not None else {"answer": "", "start": 0, "end": 0, "score": 0.0, "logit": float("-inf")}
                for b in best]

    def style(self, cfg, examples) -> str:
        if cfg.lang != "auto":
            return "cmrc" if cfg.lang == "zh" else "squad"
        return "cmrc" if any(has_cjk(e.context) for e in examples[:50]) else "squad"

    def evaluate(self, model, tok, meta, cfg, examples):
        if not examples:
            raise DataError("no questions to evaluate")
        answers = self._answer(model, tok, meta, cfg, examples)
        metrics = span_scores([a["answer"] for a in answers], [[g.text for g in e.answers] for e in examples],
                              self.style(cfg, examples))
        if isinstance(examples, Examples):
            metrics["data_report"] = dict(examples.report)
        records = [{"id": e.id, "question": e.question, "prediction": a["answer"], "score": a["score"],
                    "answers": [g.text for g in e.answers]} for e, a in zip(examples, answers)]
        return metrics, records

    def predict(self, model, tok, meta, cfg, inputs):
        from lmlab.datasets.qa import QAExample

        examples = []
        for i, x in enumerate(inputs):
            if (not isinstance(x, dict) or not str(x.get("question", "")).strip()
                    or not str(x.get("context", "")).strip()):
                raise DataError(f"input {i + 1}: QA needs a non-empty 'question' and 'context'")
            examples.append(QAExample(str(i), "", str(x["context"]), str(x["question"])))
        return [{k: v for k, v in a.items() if k != "logit"} for a in self._answer(model, tok, meta, cfg, examples)]


TASK = QuestionAnswering()
