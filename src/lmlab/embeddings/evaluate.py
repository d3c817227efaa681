"""Intrinsic evaluation of word vectors: analogies and word similarity.

**Analogies** (``questions-words.txt`` format: ``: section`` lines, then ``a b c d`` meaning
"a is to b as c is to d"). Each question is answered as gensim's
``KeyedVectors.evaluate_word_analogies`` does, so the numbers are comparable with published
ones: only the ``restrict_vocab`` most frequent words are candidates and known; with
``case_insensitive`` words are compared upper-cased and the most frequent casing stands for a
word; the top 5 candidates other than a, b, c are scanned for the first whose upper-cased form
is not one of the question's words. Methods: 3CosAdd, argmax cos(d, b − a + c) (Mikolov et al.
2013), and 3CosMul, argmax cos'(d,b)·cos'(d,c) / (cos'(d,a) + 1e-6) with cos' = (1 + cos)/2
(Levy & Goldberg 2014, eq. 4). A question with a word outside the restricted vocabulary is not
answered: it counts against *coverage* (answered / all) and not against *accuracy*
(correct / answered); ``accuracy_all`` = correct / all counts it as wrong.

**Similarity** (``w1<TAB>w2<TAB>score``, ``#`` comments; WordSim-353, SimLex-999, wordsim-240):
Spearman's ρ (Pearson's r of average ranks) and Pearson's r between the gold scores and the
cosines, over the pairs whose two words are known; the out-of-vocabulary share is reported.

Files may use CRLF line ends. A malformed line is an error naming the file and line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmlab.errors import DataError
from lmlab.embeddings.vectors import WordVectors

METHODS = {"add": "3CosAdd", "mul": "3CosMul"}


# ------------------------------------------------------------------------------- files
def _gensim_test_file(name: str) -> Path:
    try:
        import gensim
    except ImportError:
        raise DataError(f"the {name} benchmark ships with gensim; pip install 'lmlab[embed]'") from None
    return Path(gensim.__file__).parent / "test" / "test_data" / name


def _data_file(rel: str) -> Path:
    root = os.environ.get("LMLAB_DATA")
    if not root:
        raise DataError(f"{rel}: set LMLAB_DATA to the data directory that holds it")
    return Path(root, rel)


NAMED_FILES = {  # shorthands for the usual benchmark files
    "google": lambda: _gensim_test_file("questions-words.txt"),
    "wordsim353": lambda: _gensim_test_file("wordsim353.tsv"),
    "simlex999": lambda: _gensim_test_file("simlex999.txt"),
    "ca8": lambda: _data_file("ca8/ca_translated.txt"),
    "wordsim240": lambda: _data_file("zh-wordsim/240.txt"),
}


def resolve(name_or_path: str | Path) -> Path:
    path = NAMED_FILES[name_or_path]() if name_or_path in NAMED_FILES else Path(name_or_path)
    if not path.is_file():
        raise DataError(f"{path}: evaluation file not found")
    return path


def _lines(path: Path):
    try:
        with open(path, encoding="utf-8-sig", newline=None) as f:
            yield from enumerate(f, 1)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 ({e.reason})") from None


@dataclass
class Question:
    section: str
    line: int
    words: tuple[str, str, str, str]


def read_analogies(path: str | Path) -> list[Question]:
    path = resolve(path)
    section, out = None, []
    for n, raw in _lines(path):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(":"):
            section = line[1:].strip() or f"section at line {n}"
            continue
        parts = line.split()
        if len(parts) != 4:
            raise DataError(f"{path}: line {n}: expected 4 words 'a b c d' or a ': section' line, "
                            f"got {len(parts)} field(s): {line[:80]!r}")
        if section is None:
            raise DataError(f"{path}: line {n}: a question before the first ': section' line")
        out.append(Question(section, n, tuple(parts)))  # type: ignore[arg-type]
    if not out:
        raise DataError(f"{path}: no analogy questions found")
    return out


def read_similarity(path: str | Path) -> list[tuple[int, str, str, float]]:
    path = resolve(path)
    out: list[tuple[int, str, str, float]] = []
    first = True
    for n, raw in _lines(path):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        try:
            if len(parts) < 3:
                raise ValueError
            score = float(parts[2])
            if not np.isfinite(score):
                raise ValueError
        except ValueError:
            if first and len(parts) >= 3:  # a header row such as "word1 word2 score"
                first = False
                continue
            raise DataError(f"{path}: line {n}: expected 'word1<TAB>word2<TAB>score' with a numeric "
                            f"score, got {line[:80]!r}") from None
        first = False
        out.append((n, parts[0].strip(), parts[1].strip(), score))
    if not out:
        raise DataError(f"{path}: no word pairs found")
    return out


# ----------------------------------------------------------------------------- metrics
def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties get their average rank (scipy.stats.rankdata's 'average')."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(x, np.float64) - np.mean(x)
    y = np.asarray(y, np.float64) - np.mean(y)
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(rankdata(x), rankdata(y))


# -------------------------------------------------------------------------- evaluation
def _known(wv: WordVectors, restrict_vocab: int, case_insensitive: bool) -> dict[str, int]:
    keys = wv.words[:restrict_vocab]
    if not case_insensitive:
        return {w: i for i, w in enumerate(keys)}
    known: dict[str, int] = {}
    for i in range(len(keys) - 1, -1, -1):  # the most frequent casing wins
        known[keys[i].upper()] = i
    return known


def evaluate_analogies(wv: WordVectors, path: str | Path, restrict_vocab: int = 300_000,
                       case_insensitive: bool = True, methods: tuple[str, ...] = ("add", "mul"),
                       batch: int | None = None) -> dict:
    questions = read_analogies(path)
    restrict_vocab = min(restrict_vocab, len(wv))
    batch = batch or max(8, min(256, 2**25 // restrict_vocab))  # score matrices of ≤ 128 MiB
    known = _known(wv, restrict_vocab, case_insensitive)
    fold = str.upper if case_insensitive else (lambda s: s)
    covered: list[tuple[Question, tuple[int, int, int], tuple[str, ...]]] = []
    for q in questions:
        w = tuple(fold(x) for x in q.words)
        if all(x in known for x in w):
            covered.append((q, (known[w[0]], known[w[1]], known[w[2]]), w))
    rows = wv.unit[:restrict_vocab]
    folded = [fold(x) for x in wv.words[:restrict_vocab]]
    sections = list(dict.fromkeys(q.section for q in questions))
    result: dict = {"file": str(resolve(path)), "restrict_vocab": restrict_vocab, "questions": len(questions),
                    "covered": len(covered), "coverage": len(covered) / len(questions), "methods": {}}
    for method in methods:
        if method not in METHODS:
            raise DataError(f"unknown analogy method {method!r}; choose from {', '.join(METHODS)}")
        correct = {s: 0 for s in sections}
        answered = {s: 0 for s in sections}
        for start in range(0, len(covered), batch):
            part = covered[start:start + batch]
            idx = np.array([c[1] for c in part])  # [B, 3]: a, b, c
            ua, ub, uc = (wv.unit[idx[:, k]] for k in range(3))
            if method == "add":
                scores = (ub + uc - ua) @ rows.T  # [B, V]; the norm of b − a + c does not change the argmax
            else:
                cos = lambda u: (1 + u @ rows.T) / 2  # noqa: E731
                scores = cos(ub) * cos(uc) / (cos(ua) + 1e-6)
            np.put_along_axis(scores, idx, -np.inf, axis=1)
            top = np.argpartition(-scores, 4, axis=1)[:, :5] if scores.shape[1] > 5 else np.argsort(-scores, 1)[:, :5]
            for qi, (q, _, w) in enumerate(part):
                cand = top[qi][np.argsort(-scores[qi, top[qi]], kind="stable")]
                predicted = None
                for i in cand:
                    predicted = folded[i]
                    if predicted not in w[:3]:
                        break
                answered[q.section] += 1
                correct[q.section] += predicted == w[3]
        n_ok = sum(correct.values())
        result["methods"][METHODS[method]] = {
            "accuracy": n_ok / len(covered) if covered else None,
            "accuracy_all": n_ok / len(questions),
            "correct": n_ok,
            "sections": [{"section": s, "questions": sum(q.section == s for q in questions),
                          "covered": answered[s], "correct": correct[s],
                          "accuracy": correct[s] / answered[s] if answered[s] else None}
                         for s in sections],
        }
    return result


def evaluate_similarity(wv: WordVectors, path: str | Path, restrict_vocab: int = 300_000,
                        case_insensitive: bool = True) -> dict:
    pairs = read_similarity(path)
    known = _known(wv, min(restrict_vocab, len(wv)), case_insensitive)
    fold = str.upper if case_insensitive else (lambda s: s)
    gold, model = [], []
    for _, a, b, score in pairs:
        a, b = fold(a), fold(b)
        if a in known and b in known:
            gold.append(score)
            model.append(float(wv.unit[known[a]] @ wv.unit[known[b]]))
    n = len(gold)
    return {"file": str(resolve(path)), "pairs": len(pairs), "covered": n, "oov_share": 1 - n / len(pairs),
            "spearman": spearman(gold, model) if n >= 2 else None,
            "pearson": pearson(gold, model) if n >= 2 else None}


def evaluate_vectors(directory: str, analogies: list[str] | None = None, similarity: list[str] | None = None,
                     restrict_vocab: int = 300_000, method: str = "both", case_sensitive: bool = False,
                     json_out: str | None = None) -> str:
    """CLI: ``lmlab embed eval DIR [--analogies F]... [--similarity F]...``; a text report,
    and the full results (per section) as JSON to ``--json`` if given."""
    if not analogies and not similarity:
        raise DataError("nothing to evaluate: give --analogies FILE and/or --similarity FILE "
                        f"(files, or the names {', '.join(NAMED_FILES)})")
    wv = WordVectors.load(directory)
    methods = ("add", "mul") if method == "both" else (method,)
    results = {"vectors": str(directory), "analogies": [], "similarity": []}
    lines = [f"{directory}: {len(wv)} words × {wv.dim}"]
    for f in analogies or []:
        r = evaluate_analogies(wv, f, restrict_vocab, not case_sensitive, methods)
        results["analogies"].append(r)
        lines.append(f"analogies {f}: {r['covered']}/{r['questions']} covered ({r['coverage']:.1%})")
        for name, m in r["methods"].items():
            acc = f"{m['accuracy']:.2%}" if m["accuracy"] is not None else "-"
            lines.append(f"  {name}: accuracy {acc} on covered, {m['accuracy_all']:.2%} on all")
            lines.extend(f"    {s['section']:<32} {s['correct']:>5}/{s['covered']:<5}"
                         + (f" {s['accuracy']:.2%}" if s["accuracy"] is not None else "  -")
                         for s in m["sections"])
    for f in similarity or []:
        r = evaluate_similarity(wv, f, restrict_vocab, not case_sensitive)
        results["similarity"].append(r)
        corr = (f"Spearman {r['spearman']:.4f}, Pearson {r['pearson']:.4f}" if r["spearman"] is not None
                else "no correlation (fewer than 2 pairs covered)")
        lines.append(f"similarity {f}: {corr} on {r['covered']}/{r['pairs']} pairs (OOV {r['oov_share']:.1%})")
    if json_out:
        from lmlab.artifacts import write_json

        write_json(json_out, results)
        lines.append(f"wrote {json_out}")
    return "\n".join(lines)
