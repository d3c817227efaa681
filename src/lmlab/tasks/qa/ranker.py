"""Which sentence of a QA context holds the answer: n-gram overlap with the question, or a small
ranker learned from the training questions (``task.qa.sentence_match`` / ``task.qa.sentence_ranker``).

A sentence ends after a run of 。！？；!?; or a full stop followed by a space. The overlap of
two texts is Σ n·|shared n-grams| for n = 1..4 over units (a CJK character, a word or a
punctuation mark): longer shared strings count for more.

The ranker scores each sentence from FEATURES by a one-hidden-layer MLP, trained with a softmax
cross-entropy over the sentences of each context (the gold sentence: the one the answer starts
in). It is small enough (FEATURES × 32 + 64 numbers) to live as JSON in the model directory. On
CMRC2018 it picks the gold sentence for 75.7 % of the trial questions, the overlap for 67.2 %.

`SentenceRanker.fit` is a fit in the sense of scikit-learn's ``MLPClassifier.fit``, not a training
run: the task computes it from the training set before the network trains, as it reads the label
names, and stores the weights in ``task.json``. It is a fixed, seeded, full-batch optimisation (600
Adam steps over a few thousand small tensors, seconds on a CPU) with nothing to checkpoint,
resume, schedule, evaluate or distribute, which is what `lmlab.train.loop` is for.
"""

from __future__ import annotations

import math
import re

import torch

from lmlab.errors import CheckpointMismatch
from lmlab.evaluation.span import longest_common_run

_UNIT = re.compile(r"[\u4e00-\u9fff]|[^\W\u4e00-\u9fff]+|[^\w\s]")
_SENTENCE_END = re.compile(r"[。！？；!?;]+|\.(?=\s|$)")
WH_CLASSES = "什哪谁为多几何怎如"  # first characters of features.WH_WORDS: the kind of question

FEATURES = ("shared 1-grams", "shared 2-grams", "shared 3-grams", "shared 4-grams", "overlap / best",
            "longest shared run", "start cue run", "end cue run", "log units", "first by overlap",
            "second by overlap", "after the first", "before the first", "position", "is the first sentence",
            "previous: overlap / best", "previous: start cue run", "previous: end cue run", "previous: longest run",
            "next: overlap / best", "next: start cue run", "next: end cue run", "next: longest run",
            "digits", "has 《", *(f"asks {c}" for c in WH_CLASSES))


def units(text: str) -> list[str]:
    return _UNIT.findall(text.lower())


def sentences(context: str) -> list[tuple[int, int]]:
    """Character spans of the context's sentences (each ends after its closing mark)."""
    out, begin = [], 0
    for m in _SENTENCE_END.finditer(context):
        out.append((begin, m.end()))
        begin = m.end()
    if begin < len(context):
        out.append((begin, len(context)))
    return out


def _grams(u: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(u[i:i + n]) for i in range(len(u) - n + 1)}


def overlap(question: list[str], sentence: list[str]) -> int:
    """Σ n · |shared n-grams| for n = 1..4."""
    return sum(n * len(_grams(question, n) & _grams(sentence, n)) for n in range(1, 5))


def overlap_order(context: str, question: str) -> list[int]:
    """Sentence indices by overlap, best first; ties to the earlier; those sharing nothing left out."""
    q = units(question)
    scores = [overlap(q, units(context[a:b])) for a, b in sentences(context)]
    return sorted((i for i, v in enumerate(scores) if v > 0), key=lambda i: -scores[i])


def _cue_runs(text: str, before: str, after: str) -> tuple[float, float]:
    """The longest end of `before` and start of `after` found in `text`, as fractions of each."""
    k = 0
    while k < len(before) and before[len(before) - k - 1:] in text:
        k += 1
    m = 0
    while m < len(after) and after[:m + 1] in text:
        m += 1
    return (k / len(before) if before else 0.0), (m / len(after) if after else 0.0)


def sentence_features(context: str, question: str, wh: tuple[str, str, str] | None) -> torch.Tensor:
    """[sentences, len(FEATURES)]. `wh`: the question's text before its wh-word, the word, the text
    after it (features.wh_parts), or None."""
    spans = sentences(context)
    q = units(question)
    q_grams = [max(1, len(_grams(q, n))) for n in range(1, 5)]
    before, word, after = wh or ("", "", "")
    rows = []
    for a, b in spans:
        s = units(context[a:b])
        shared = [len(_grams(q, n) & _grams(s, n)) for n in range(1, 5)]
        rows.append([*(x / m for x, m in zip(shared, q_grams)), sum(n * x for n, x in enumerate(shared, 1)),
                     longest_common_run(q, s) / max(1, len(q)), *_cue_runs(context[a:b], before, after),
                     math.log1p(len(s))])
    best = max(r[4] for r in rows) or 1.0
    for r in rows:
        r[4] /= best
    order = sorted(range(len(rows)), key=lambda i: -rows[i][4])
    first, second = order[0], (order[1] if len(order) > 1 else -1)
    asks = [float(bool(word) and word[0] == c) for c in WH_CLASSES]
    out = []
    for i, r in enumerate(rows):
        text = context[spans[i][0]:spans[i][1]]
        side = [[x[4], x[6], x[7], x[5]] if x else [0.0] * 4
                for x in (rows[i - 1] if i > 0 else None, rows[i + 1] if i + 1 < len(rows) else None)]
        out.append([*r, float(i == first), float(i == second), float(i == first + 1), float(i == first - 1),
                    i / len(rows), float(i == 0), *side[0], *side[1],
                    sum(ch.isdigit() for ch in text) / max(1, len(text)), float("《" in text), *asks])
    return torch.tensor(out, dtype=torch.float32)


class SentenceRanker:
    """score(sentence) = w2 · tanh(W1 · features + b1); no output bias, which a softmax over one
    context's sentences would cancel."""

    def __init__(self, state: dict):
        if state.get("features", list(FEATURES)) != list(FEATURES):
            raise CheckpointMismatch("the model's sentence ranker was fit on other sentence features than this "
                                     "lmlab computes; fine-tune it again with this version")
        self.w1 = torch.tensor(state["w1"])  # [hidden, FEATURES]
        self.b1 = torch.tensor(state["b1"])
        self.w2 = torch.tensor(state["w2"])  # [hidden]

    def state(self) -> dict:
        return {"features": list(FEATURES), "w1": self.w1.tolist(), "b1": self.b1.tolist(), "w2": self.w2.tolist()}

    def close_to(self, other: SentenceRanker, atol: float) -> bool:
        """The same weights up to `atol`: one seed's fits on one training set differ only by the float
        reductions that the thread count changes."""
        return all(a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=atol)
                   for a, b in ((self.w1, other.w1), (self.b1, other.b1), (self.w2, other.w2)))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.w1.T + self.b1) @ self.w2

    def order(self, x: torch.Tensor) -> list[int]:
        """Sentence indices, best first (ties to the earlier)."""
        s = self.scores(x).tolist()
        return sorted(range(len(s)), key=lambda i: -s[i])

    @classmethod
    def fit(cls, contexts: list[torch.Tensor], gold: list[int], hidden: int = 32, steps: int = 600,
            seed: int = 0) -> SentenceRanker:
        """`contexts`: features [sentences, F] per question; `gold`: the index of its answer's sentence.
        Full-batch Adam on the mean softmax cross-entropy over each question's sentences."""
        g = torch.Generator().manual_seed(seed)
        longest = max(len(x) for x in contexts)
        x = torch.zeros(len(contexts), longest, len(FEATURES))
        real = torch.zeros(len(contexts), longest, dtype=torch.bool)
        for i, c in enumerate(contexts):
            x[i, :len(c)], real[i, :len(c)] = c, True
        y = torch.tensor(gold)
        w1 = (torch.randn(hidden, len(FEATURES), generator=g) / math.sqrt(len(FEATURES))).requires_grad_()
        b1 = torch.zeros(hidden, requires_grad=True)
        w2 = (torch.randn(hidden, generator=g) / math.sqrt(hidden)).requires_grad_()
        opt = torch.optim.Adam([w1, b1, w2], lr=0.02)
        for _ in range(steps):
            logits = (torch.tanh(x @ w1.T + b1) @ w2).masked_fill(~real, float("-inf"))
            loss = torch.nn.functional.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return cls({"w1": w1.detach().tolist(), "b1": b1.detach().tolist(), "w2": w2.detach().tolist()})
