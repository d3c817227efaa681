"""Metrics of generated text: ROUGE-1/2/L (summarisation) with ``rouge-score``, BLEU and chrF
(translation) with ``sacrebleu`` — the reference implementations, not re-implementations.

ROUGE (Lin 2004) F-measures ×100, averaged over examples; several references per example take
the best (``RougeScorer.score_multi``). The default ``rouge-score`` tokenizer keeps only
``[a-z0-9]`` and so silently scores any Chinese text 0; for Chinese (``lang="zh"``, or "auto"
when a reference holds a CJK character) `CharTokenizer` makes every CJK character a token and
keeps Latin words and numbers whole. English uses the default tokenizer with the Porter stemmer,
as in the summarisation literature.

BLEU (Papineni et al. 2002) and chrF (Popović 2015) are sacrebleu's corpus scores, with its
``zh`` tokenizer for Chinese targets and ``13a`` otherwise; the signature (which tokenizer,
smoothing, version) is returned with the score so that a figure can be reproduced.
"""

from __future__ import annotations

import re
from typing import Sequence

from lmlab.errors import DataError

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")
_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]|[a-z0-9]+")


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


class CharTokenizer:
    """rouge-score tokenizer: CJK characters one by one, lower-cased Latin words and numbers."""

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(text.lower())


def _references(references: Sequence[str | Sequence[str]], n: int) -> list[list[str]]:
    if len(references) != n:
        raise DataError(f"{n} predictions but {len(references)} references")
    if n == 0:
        raise DataError("no predictions to score")
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    if any(not r for r in refs):
        raise DataError("an example has no reference")
    return refs


def _language(lang: str, refs: list[list[str]]) -> str:
    if lang != "auto":
        return lang
    return "zh" if any(has_cjk(r) for rs in refs[:200] for r in rs) else "en"


def rouge(predictions: Sequence[str], references: Sequence[str | Sequence[str]], lang: str = "auto") -> dict:
    """{"rouge1", "rouge2", "rougeL", "rougeLsum"}: mean F-measure ×100, plus the tokenisation used."""
    from rouge_score import rouge_scorer

    refs = _references(references, len(predictions))
    lang = _language(lang, refs)
    types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    scorer = rouge_scorer.RougeScorer(types, use_stemmer=lang != "zh",
                                      tokenizer=CharTokenizer() if lang == "zh" else None)
    totals = dict.fromkeys(types, 0.0)
    for pred, rs in zip(predictions, refs):
        scores = scorer.score_multi(rs, pred)
        for t in types:
            totals[t] += scores[t].fmeasure
    n = len(predictions)
    return {**{t: 100 * v / n for t, v in totals.items()},
            "tokenization": "cjk-characters" if lang == "zh" else "rouge-score default + porter stemmer",
            "examples": n}


def _streams(refs: list[list[str]]) -> list[list[str]]:
    """sacrebleu wants one stream per reference position; examples with fewer references are
    padded with None, which sacrebleu skips."""
    width = max(len(r) for r in refs)
    return [[r[i] if i < len(r) else None for r in refs] for i in range(width)]


def bleu(predictions: Sequence[str], references: Sequence[str | Sequence[str]], lang: str = "auto") -> dict:
    """Corpus BLEU and chrF ×100 with their sacrebleu signatures."""
    import sacrebleu

    refs = _references(references, len(predictions))
    lang = _language(lang, refs)
    streams = _streams(refs)
    b = sacrebleu.BLEU(tokenize="zh" if lang == "zh" else "13a")
    c = sacrebleu.CHRF()
    bs, cs = b.corpus_score(list(predictions), streams), c.corpus_score(list(predictions), streams)
    return {"bleu": bs.score, "bleu_signature": str(b.get_signature()), "bleu_detail": str(bs),
            "chrf": cs.score, "chrf_signature": str(c.get_signature()), "examples": len(predictions)}
