"""What the QA task packs into the context's segment ids, beyond question (0) and context (1).

A window is ``[CLS] question [SEP] context-window [SEP]`` (segments 0 / 1). With
``task.qa.question_match`` a context token whose word (lowercased; in Chinese, a character
together with a neighbour) also occurs in the question gets segment 2 instead of 1: DrQA's
exact-match feature (Chen et al. 2017), which hands a small encoder the question-context
alignment it would otherwise have to learn from a few thousand questions. The model's segment
table grows to 3 rows, the new row starting as a copy of the context row, so that the init
model is unchanged at step 0. With ``task.qa.answer_cues`` (Chinese) the segment also says where the
question's wh-word would sit: Chinese asks in situ (曹雪芹写了什么? ↔ 曹雪芹写了红楼梦), so a
context token right after a run of characters equal to the question's text before its wh-word is
a likely answer start, one right before a run equal to the text after it a likely end. Each cue
is graded by the run's length (none, 2-3, 4+ characters). A third match grade marks context
characters inside a run of 4+ that occurs in the question: 1 + 3·3·3 = 28 segment types.
With ``task.qa.sentence_match`` each context kind is further split by its sentence's grade: the
sentence sharing most n-grams with the question (Σ n·|shared n-grams|, n = 1..4, over CJK
characters and words), the one right after it, the second, or another (×4; 109 types with the
cues). It is a retrieval the small encoder does worse on its own: on CMRC2018 the first sentence
holds the answer for 70 % of the training questions. ``task.qa.sentence_ranker`` orders the sentences by a
small ranker fit on the training questions instead (ranker.py; 80 % on held-out training
articles).
"""

from __future__ import annotations

from lmlab.evaluation.text import has_cjk
from lmlab.tasks.qa.ranker import SentenceRanker, overlap_order, sentence_features, sentences


def token_words(enc, text: str) -> list[str]:
    """The lowercased word each token of `enc` belongs to (its pre-tokenizer word: a whole word in
    English, one character in Chinese)."""
    spans: dict[int, list[int]] = {}
    for w, (s, e) in zip(enc.word_ids, enc.offsets):
        if w is not None:
            span = spans.setdefault(w, [s, e])
            span[0], span[1] = min(span[0], s), max(span[1], e)
    return [text[spans[w][0]:spans[w][1]].lower() if w is not None else "" for w in enc.word_ids]


def question_matched(context: list[str], question: list[str]) -> list[bool]:
    """Per context token: does its word occur in the question? A Chinese character is too weak a
    unit alone (的 and 是 occur everywhere): it matches when it and a neighbouring character form
    a two-character string that occurs in the question."""
    asked = set(question)
    pairs = {a + b for a, b in zip(question, question[1:])}
    out = []
    for i, w in enumerate(context):
        if len(w) == 1 and has_cjk(w):
            before = context[i - 1] + w if i > 0 else ""
            after = w + context[i + 1] if i + 1 < len(context) else ""
            out.append(before in pairs or after in pairs)
        else:
            out.append(w in asked)
    return out


# Chinese wh-words; where two begin at the same character the longer one counts (哪些, not 哪)
WH_WORDS = ("为什么", "为何", "什么", "哪些", "哪里", "哪儿", "哪个", "哪位", "哪一", "哪", "谁", "多少", "多大",
            "多长", "多久", "多高", "多远", "几", "何时", "何地", "何处", "如何", "何", "怎么", "怎样")
QUESTION_END = "？?。.!！ \t"


def context_kinds(cfg) -> int:
    """Segment ids a context token can take before the sentence grade: 1 (context), 2 (+ matched),
    27 (matched or in a long run, × start cue × end cue)."""
    return 3 * 9 if cfg.qa.answer_cues else (2 if cfg.qa.question_match else 1)


SENTENCE_GRADES = 4  # other sentences, the second, the one after the first, the first


def segment_types(cfg) -> int:
    """Rows of the segment table: question, then the context kinds × the sentence grades."""
    return 1 + context_kinds(cfg) * (SENTENCE_GRADES if cfg.qa.sentence_match else 1)


def sentence_grades(context: str, question: str, offsets, ranker: SentenceRanker | None = None) -> list[int]:
    """Per token: 3 in the context sentence ranked first, 1 in the second, 2 in the one right after
    the first (unless it is the second), else 0. Ranked by the n-gram overlap with the question (ties
    to the earlier sentence; one sharing nothing is not ranked) or by a learned `ranker`. (On
    CMRC2018's training questions the answer starts in the overlap's first sentence 70 % of the
    time, in the one after it 7 %.)"""
    spans = sentences(context)
    order = (ranker.order(sentence_features(context, question, wh_parts(question))) if ranker
             else overlap_order(context, question))
    grade = [0] * len(spans)
    for g, i in zip((3, 1), order):
        grade[i] = g
    if order and order[0] + 1 < len(spans) and grade[order[0] + 1] == 0:
        grade[order[0] + 1] = 2
    of_char = [0] * (len(context) + 1)
    for (a, b), g in zip(spans, grade):
        of_char[a:b] = [g] * (b - a)
    return [of_char[s] if e > s else 0 for s, e in offsets]


def wh_parts(question: str) -> tuple[str, str, str] | None:
    """The question's text before its first wh-word, the word, and the text after it; None without one."""
    found = [(question.find(w), -len(w), w) for w in WH_WORDS if w in question]
    if not found:
        return None
    at, _, w = min(found)
    return question[:at], w, question[at + len(w):].rstrip(QUESTION_END)


def wh_split(question: str) -> tuple[str, str] | None:
    """The question's text before and after its first wh-word, or None without one."""
    wh = wh_parts(question)
    return (wh[0], wh[2]) if wh else None


def _grade(run: int) -> int:
    return 0 if run < 2 else (1 if run < 4 else 2)


def cue_grades(context: str, question: str, offsets) -> tuple[list[int], list[int], list[int]]:
    """Per token (character `offsets` into `context`): whether it lies in a run of 4+ characters
    that occurs in the question (0 / 1), and its start and end cue grades (0-2). A start cue
    counts the characters just before the token that equal the end of the question's text before
    its wh-word; an end cue, those just after it that equal the start of the text after it."""
    grams = {question[i:i + 4] for i in range(len(question) - 3)}
    in_run = [False] * (len(context) + 1)
    for i in range(len(context) - 3):
        if context[i:i + 4] in grams:
            in_run[i:i + 4] = [True] * 4
    runs = [int(e > s and any(in_run[s:e])) for s, e in offsets]
    split = wh_split(question)
    if split is None:
        return runs, [0] * len(offsets), [0] * len(offsets)
    before, after = split

    def run_before(i: int) -> int:  # common suffix of context[:i] and `before`
        k = 0
        while k < len(before) and k < i and context[i - 1 - k] == before[-1 - k]:
            k += 1
        return k

    def run_after(j: int) -> int:  # common prefix of context[j:] and `after`
        k = 0
        while k < len(after) and j + k < len(context) and context[j + k] == after[k]:
            k += 1
        return k

    return (runs, [_grade(run_before(s)) if e > s else 0 for s, e in offsets],
            [_grade(run_after(e)) if e > s else 0 for s, e in offsets])
