"""Filters report why a document is dropped; language detection by script."""

from lmlab.corpus.filters import (DocumentFilter, FilterConfig, detect_language, digit_ratio, dup_line_ratio,
                                  dup_ngram_ratio, symbol_ratio)


def test_language_by_script():
    assert detect_language("今天天气很好，我们去公园。") == "zh"
    assert detect_language("The weather is nice today.") == "en"
    assert detect_language("Сегодня хорошая погода") == "other"
    assert detect_language("12345 !!!") == "other"
    # 5 Han characters among 18 letters (28 %): below the 30 % default, above a 25 % one
    assert detect_language("我爱Python编程和machine") == "en"
    assert detect_language("我爱Python编程和machine", zh_min_han_ratio=0.25) == "zh"

def test_ratios_against_hand_counts():
    assert symbol_ratio("ab!!") == 0.5
    assert symbol_ratio("a b") == 0.0
    assert abs(digit_ratio("a1 b2 c3") - 0.5) < 1e-12
    assert dup_line_ratio("x\ny\nx\nx") == 0.5
    words = "a b c d e " * 4  # 20 words; every 5-gram after the first 5 words repeats
    assert dup_ngram_ratio(words, 5) == 15 / 20


def test_each_rule_reports_its_reason():
    f = DocumentFilter(FilterConfig(min_chars=5, max_chars=50, max_symbol_ratio=0.3, max_digit_ratio=0.3,
                                    max_dup_line_ratio=0.3, max_dup_ngram_ratio=0.3, languages=["en", "zh"]))
    assert f("") == "empty"
    assert f("abc") == "too_short"
    assert f("x" * 51) == "too_long"
    assert f("Привет, как дела?") == "language:other"
    assert f("hello !!!! ???? ####") == "symbol_ratio"
    assert f("call 5551234567 now") == "digit_ratio"
    assert f("same line\nsame line\nsame line") == "repeated_lines"
    assert f("a b c d e a b c d e a b") == "repeated_ngrams"
    assert f("A perfectly fine sentence.") is None
    assert f("一个很好的中文句子。") is None
