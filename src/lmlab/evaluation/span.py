"""Extractive QA metrics: exact match and token F1 of SQuAD v1.1, and the CMRC2018 variant.

SQuAD v1.1 (Rajpurkar et al. 2016, the official ``evaluate-v1.1.py``): an answer is
normalised by lower-casing, removing ASCII punctuation, removing the articles a/an/the and
collapsing whitespace; EM = normalised strings equal; F1 over the bag of whitespace tokens;
each prediction takes the maximum over its gold answers; totals are percentages.

CMRC2018 (Cui et al. 2019, the official ``cmrc2018_evaluate.py``): text is lower-cased and
split by "mixed segmentation": every Chinese character (U+4E00–U+9FA5) and every listed
punctuation mark is a segment, runs of other characters are split into words; punctuation is
removed. F1 is computed from the longest common *contiguous* segment run (not a bag);
EM compares the strings with punctuation removed. The official script splits non-Chinese runs
with ``nltk.word_tokenize`` (which needs downloaded data); here a regex splits them into
words and single punctuation characters, which agrees with it on the numbers, Latin words and
symbols found in CMRC answers (tested on hand cases).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

from lmlab.errors import DataError

# --- SQuAD v1.1 -------------------------------------------------------------------------------

_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def squad_exact(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def squad_f1(prediction: str, truth: str) -> float:
    p, t = normalize_answer(prediction).split(), normalize_answer(truth).split()
    same = sum((Counter(p) & Counter(t)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)


# --- CMRC2018 ---------------------------------------------------------------------------------

CMRC_PUNCT = ['-', ':', '_', '*', '^', '/', '\\', '~', '`', '+', '=', '，', '。', '：', '？', '！', '“', '”',
              '；', '’', '《', '》', '……', '·', '、', '「', '」', '（', '）', '－', '～', '『', '』']
_CMRC_PUNCT_SET = set(CMRC_PUNCT)
_HAN = re.compile(r"[\u4e00-\u9fa5]")
_WORD = re.compile(r"\w+(?:[.,']\w+)*|[^\w\s]", re.UNICODE)  # stands in for nltk.word_tokenize


def mixed_segmentation(s: str, remove_punct: bool = False) -> list[str]:
    out, run = [], ""
    for ch in str(s).lower().strip():
        if remove_punct and ch in _CMRC_PUNCT_SET:
            continue
        if _HAN.match(ch) or ch in _CMRC_PUNCT_SET:
            if run:
                out.extend(_WORD.findall(run))
                run = ""
            out.append(ch)
        else:
            run += ch
    if run:
        out.extend(_WORD.findall(run))
    return out


def _remove_punctuation(s: str) -> str:
    return "".join(ch for ch in str(s).lower().strip() if ch not in _CMRC_PUNCT_SET)


def longest_common_run(a: list, b: list) -> int:
    """The length of the longest run of equal items that `a` and `b` share."""
    best, prev = 0, [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                cur[j + 1] = prev[j] + 1
                best = max(best, cur[j + 1])
        prev = cur
    return best


def cmrc_exact(prediction: str, truth: str) -> float:
    return float(_remove_punctuation(prediction) == _remove_punctuation(truth))


def cmrc_f1(prediction: str, truth: str) -> float:
    t, p = mixed_segmentation(truth, True), mixed_segmentation(prediction, True)
    same = longest_common_run(t, p)
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)


# --- corpus level -----------------------------------------------------------------------------

def span_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]], style: str = "squad") -> dict:
    """Mean EM and F1 (percent) over questions, each the max over its gold answers.
    style: "squad" (English) or "cmrc" (Chinese)."""
    if style not in ("squad", "cmrc"):
        raise DataError(f"span metric style {style!r}: use squad or cmrc")
    if len(predictions) != len(answers):
        raise DataError(f"{len(predictions)} predictions for {len(answers)} questions")
    if not predictions:
        raise DataError("no questions to evaluate")
    em_fn, f1_fn = (squad_exact, squad_f1) if style == "squad" else (cmrc_exact, cmrc_f1)
    em = f1 = 0.0
    for pred, golds in zip(predictions, answers):
        if not golds:
            raise DataError("a question has no gold answer")
        em += max(em_fn(pred, g) for g in golds)
        f1 += max(f1_fn(pred, g) for g in golds)
    n = len(predictions)
    return {"exact_match": 100 * em / n, "f1": 100 * f1 / n, "questions": n, "style": style}
