"""Extractive QA: SQuAD v1.1 and CMRC 2018 (SQuAD-format JSON), with answer spans checked.

Each answer's ``context[start:start + len(text)] == text`` is verified; an answer that fails is
dropped and counted (``QAExample.dropped_answers`` totals are returned by `load_stats`), and a
question left without answers is dropped too — the reading never silently trains on wrong
spans. Missing keys are errors naming the file and the question id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lmlab.datasets.root import dataset_path
from lmlab.datasets.text import _check
from lmlab.errors import DataError


@dataclass
class Answer:
    text: str
    start: int  # character offset in the context


@dataclass
class QAExample:
    id: str
    title: str
    context: str
    question: str
    answers: list[Answer] = field(default_factory=list)


LAST_STATS: dict[str, int] = {}
LAST_DROPPED_IDS: list[str] = []  # question ids of the answers dropped by the last read


def read_squad_json(path: Path) -> list[QAExample]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not SQuAD-format JSON with a top-level 'data' list ({e})") from None
    out: list[QAExample] = []
    stats = {"questions": 0, "dropped_answers": 0, "dropped_questions": 0}
    dropped_ids: list[str] = []
    for article in data:
        title = article.get("title", "")
        for para in article.get("paragraphs", []):
            context = para.get("context")
            if not isinstance(context, str):
                raise DataError(f"{path}: a paragraph of {title!r} has no 'context'")
            for qa in para.get("qas", []):
                stats["questions"] += 1
                qid = qa.get("id", "?")
                if "question" not in qa or "answers" not in qa:
                    raise DataError(f"{path}: question {qid}: missing 'question' or 'answers'")
                answers = []
                for a in qa["answers"]:
                    if "answer_start" not in a or "text" not in a:
                        raise DataError(f"{path}: question {qid}: an answer lacks 'answer_start' or 'text'")
                    start, text = int(a["answer_start"]), a["text"]
                    if context[start:start + len(text)] == text:
                        answers.append(Answer(text, start))
                    else:
                        stats["dropped_answers"] += 1
                        dropped_ids.append(str(qid))
                if not answers:
                    stats["dropped_questions"] += 1
                    continue
                out.append(QAExample(qid, title, context, qa["question"], answers))
    LAST_STATS.clear()
    LAST_STATS.update(stats)
    LAST_DROPPED_IDS[:] = dropped_ids
    return out


def squad(split: str = "dev", data_root: str | Path | None = None) -> list[QAExample]:
    """SQuAD v1.1 dev articles 0–37 (the rest of dev is held back)."""
    _check(split, ("dev",))
    return read_squad_json(dataset_path("squad-v1.1", "dev-articles-0-37.json", data_root))


def cmrc2018(split: str = "train", data_root: str | Path | None = None) -> list[QAExample]:
    return read_squad_json(dataset_path("cmrc2018", f"cmrc2018_{_check(split, ('train', 'trial'))}.json", data_root))


def load_stats() -> dict[str, int]:
    """Counts of the last read: questions, dropped_answers (span mismatch), dropped_questions."""
    return dict(LAST_STATS)
