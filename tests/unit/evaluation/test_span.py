"""SQuAD v1.1 and CMRC2018 answer metrics on hand-worked cases of the official scripts."""

import pytest

from lmlab.errors import DataError
from lmlab.evaluation.span import (cmrc_exact, cmrc_f1, mixed_segmentation, normalize_answer, span_scores,
                                   squad_exact, squad_f1)


def test_squad_normalisation():
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words
    assert normalize_answer("Denver Broncos.") == "denver broncos"


def test_squad_em_f1():
    assert squad_exact("the Denver Broncos", "Denver Broncos") == 1.0
    assert squad_exact("Broncos", "Denver Broncos") == 0.0
    # pred tokens {denver, broncos, won}, gold {denver, broncos}: P 2/3, R 1 → F1 0.8
    assert squad_f1("Denver Broncos won", "Denver Broncos") == pytest.approx(0.8)
    assert squad_f1("the", "a") == 0.0  # both normalise to nothing
    s = span_scores(["Denver Broncos won", "Carolina"], [["Denver Broncos", "Broncos"], ["Panthers"]])
    assert s["exact_match"] == 0.0 and s["f1"] == pytest.approx(40.0)
    s = span_scores(["Broncos"], [["Denver Broncos", "broncos"]])  # max over answers
    assert s["exact_match"] == 100.0 and s["f1"] == 100.0


def test_cmrc_segmentation_and_scores():
    assert mixed_segmentation("北京2008年奥运会") == ["北", "京", "2008", "年", "奥", "运", "会"]
    assert mixed_segmentation("《红楼梦》", remove_punct=True) == ["红", "楼", "梦"]
    assert cmrc_exact("《红楼梦》", "红楼梦") == 1.0
    # gold 北京大学 (4 segs), pred 在北京 (3 segs): longest common run 北京 = 2 → P 2/3 R 1/2
    assert cmrc_f1("在北京", "北京大学") == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    # a common *run*, not a bag: 京北 shares no run longer than 1 with 北京
    assert cmrc_f1("京北", "北京") == pytest.approx(0.5)
    s = span_scores(["1997年", "上海"], [["1997年"], ["北京"]], style="cmrc")
    assert s["exact_match"] == 50.0 and s["f1"] == 50.0


def test_squad_style_scores_chinese_wrongly_hence_the_variant():
    # whitespace tokens: a Chinese answer is one token, so partial overlap scores 0
    assert squad_f1("在北京", "北京大学") == 0.0 and cmrc_f1("在北京", "北京大学") > 0.5


def test_bad_inputs():
    with pytest.raises(DataError, match="2 predictions for 1"):
        span_scores(["a", "b"], [["a"]])
    with pytest.raises(DataError, match="style"):
        span_scores(["a"], [["a"]], style="bleu")
    with pytest.raises(DataError, match="no gold"):
        span_scores(["a"], [[]])
