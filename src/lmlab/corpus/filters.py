"""Document quality filters; each returns the reason a document is dropped, or None to keep it.

The heuristics follow the Gopher rules (Rae et al. 2021, appendix A.1.1) and C4 (Raffel et
al. 2020) in simplified, script-aware form: bounds on length, on the share of symbol and digit
characters, on the share of lines that repeat within the document, and on the share of
"words" covered by repeated n-grams, where a word is a run of letters/digits in alphabetic
scripts and a single character in Chinese (which has no spaces). Language is decided by
script: the share of Han characters among letters (``zh``), else Latin letters (``en``).
Reasons are short stable strings (``too_short``, ``symbol_ratio``, ``language:other``, …)
that the stats count.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from lmlab.config import check

# BERT's "Chinese characters", as real characters (not escapes), so that the `tokenizers` regex
# engine reads the class too (tokenizer/train.py, split_cjk)
HAN_CHARACTER = "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]"
_HAN = re.compile(HAN_CHARACTER)
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
_WORD = re.compile(HAN_CHARACTER + r"|[^\W_]+")
_LETTER = re.compile(r"[^\W\d_]")


@dataclass
class FilterConfig:
    min_chars: int = 1  # shorter documents are dropped (after normalisation)
    max_chars: int = 10_000_000
    max_symbol_ratio: float = 0.5  # punctuation and symbol characters / non-space characters
    max_digit_ratio: float = 0.5
    max_dup_line_ratio: float = 1.0  # lines that repeat an earlier line of the same document / lines
    ngram: int = 5  # n for the repeated n-gram rule (words; Chinese characters count as words)
    max_dup_ngram_ratio: float = 1.0  # words covered by n-grams seen earlier in the document / words
    languages: list[str] = field(default_factory=list)  # keep only these (zh, en); empty keeps all
    zh_min_han_ratio: float = 0.3  # Han characters / letters for a document to count as zh

    def __post_init__(self) -> None:
        check(0 <= self.min_chars <= self.max_chars, "filter.min_chars", "must be in [0, max_chars]")
        for name in ("max_symbol_ratio", "max_digit_ratio", "max_dup_line_ratio", "max_dup_ngram_ratio",
                     "zh_min_han_ratio"):
            check(0.0 <= getattr(self, name) <= 1.0, f"filter.{name}", "must be in [0, 1]")
        check(self.ngram >= 1, "filter.ngram", "must be >= 1")
        bad = sorted(set(self.languages) - {"zh", "en", "other"})
        check(not bad, "filter.languages", f"unknown {bad}; use zh, en or other")


def detect_language(text: str, zh_min_han_ratio: float = 0.3) -> str:
    """``zh`` if Han characters are at least `zh_min_han_ratio` of letters, else ``en`` if Latin
    letters are the majority of letters, else ``other``."""
    han = len(_HAN.findall(text))
    latin = len(_LATIN.findall(text))
    letters = len(_LETTER.findall(text))
    if letters == 0:
        return "other"
    if han / letters >= zh_min_han_ratio:
        return "zh"
    if latin / letters > 0.5:
        return "en"
    return "other"


_CLASS: np.ndarray | None = None  # [0x110000] uint8: 0 other, 1 punctuation/symbol, 2 decimal digit, 3 space


def _class_table() -> np.ndarray:
    global _CLASS
    if _CLASS is None:
        table = np.zeros(0x110000, dtype=np.uint8)
        for cp in range(0x30000):  # P*, S* and Nd all lie below U+30000
            cat = unicodedata.category(chr(cp))
            table[cp] = 1 if cat[0] in "PS" else 2 if cat == "Nd" else 3 if chr(cp).isspace() else 0
        _CLASS = table
    return _CLASS


def char_class_counts(text: str) -> np.ndarray:
    """[other, symbol, digit, space] character counts, vectorised over code points."""
    cps = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
    return np.bincount(_class_table()[cps], minlength=4)


def symbol_ratio(text: str) -> float:
    """Punctuation and symbol characters (Unicode P*, S*) / non-space characters."""
    c = char_class_counts(text)
    dense = c[0] + c[1] + c[2]
    return float(c[1] / dense) if dense else 0.0


def digit_ratio(text: str) -> float:
    """Decimal digits (Unicode Nd) / non-space characters."""
    c = char_class_counts(text)
    dense = c[0] + c[1] + c[2]
    return float(c[2] / dense) if dense else 0.0


def dup_line_ratio(text: str) -> float:
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    return 1.0 - len(set(lines)) / len(lines) if lines else 0.0


def dup_ngram_ratio(text: str, n: int) -> float:
    """Share of words lying inside an n-gram that already occurred earlier in the document."""
    words = _WORD.findall(text)
    if len(words) < 2 * n:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        if gram in seen:
            covered[i:i + n] = [True] * n
        else:
            seen.add(gram)
    return sum(covered) / len(words)


class DocumentFilter:
    """``filter(text) -> reason or None``; cheap rules run first."""

    def __init__(self, config: FilterConfig | None = None):
        self.cfg = config or FilterConfig()

    def __call__(self, text: str) -> str | None:
        cfg = self.cfg
        n = len(text)
        if n < cfg.min_chars:
            return "empty" if n == 0 else "too_short"
        if n > cfg.max_chars:
            return "too_long"
        if cfg.languages:
            lang = detect_language(text, cfg.zh_min_han_ratio)
            if lang not in cfg.languages:
                return f"language:{lang}"
        if cfg.max_symbol_ratio < 1.0 and symbol_ratio(text) > cfg.max_symbol_ratio:
            return "symbol_ratio"
        if cfg.max_digit_ratio < 1.0 and digit_ratio(text) > cfg.max_digit_ratio:
            return "digit_ratio"
        if cfg.max_dup_line_ratio < 1.0 and dup_line_ratio(text) > cfg.max_dup_line_ratio:
            return "repeated_lines"
        if cfg.max_dup_ngram_ratio < 1.0 and dup_ngram_ratio(text, cfg.ngram) > cfg.max_dup_ngram_ratio:
            return "repeated_ngrams"
        return None


def word_count(text: str) -> int:
    """Words as the filters count them: letter/digit runs, and each Chinese character."""
    return len(_WORD.findall(text))

