"""Normalisation steps: each a pure str → str function with a documented effect."""

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.corpus.normalize import (NormalizeConfig, Normalizer, fullwidth_to_halfwidth, nfkc, normalize_whitespace,
                                    remove_zero_width, strip_html, traditional_to_simplified)


def test_imdb_br_tags_become_newlines_and_entities_decode():
    assert strip_html("Great film.<br /><br />Loved it &amp; cried") == "Great film.\n\nLoved it & cried"
    assert strip_html("a<b>bold</b>c &lt;3 &#20013;") == "a bold c <3 中"
    assert strip_html("x<script>alert(1)</script>y") == "x y"
    assert strip_html("3 < 5 and 7 > 2") == "3 < 5 and 7 > 2"  # not a tag


def test_nfkc_and_fullwidth():
    assert nfkc("ﬁle ① Ｈｉ") == "file 1 Hi"
    assert fullwidth_to_halfwidth("ＡＢＣ１２３！，\u3000。") == "ABC123!, 。"


def test_zero_width_keeps_emoji_joiner_by_default():
    family = "👨\u200d👩\u200d👧"
    assert remove_zero_width("a\u200bb\ufeffc" + family) == "abc" + family
    assert remove_zero_width(family, keep_joiners=False) == "👨👩👧"


def test_whitespace_and_control_characters():
    assert normalize_whitespace("  a\t\tb\x00c\r\nd  \n\n\n\ne\x1b ") == "a bc\nd\n\ne"
    assert normalize_whitespace("keep\n\npara") == "keep\n\npara"


def test_t2s_with_opencc():
    pytest.importorskip("opencc")
    assert traditional_to_simplified("漢字與國語") == "汉字与国语"
    assert Normalizer(NormalizeConfig(t2s=True))("秦川雄帝宅，函谷壯皇居。") == "秦川雄帝宅,函谷壮皇居。"


def test_lowercase_only_when_asked():
    assert Normalizer()("ABC") == "ABC"
    assert Normalizer(NormalizeConfig(lowercase=True))("ABC") == "abc"


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_normalizer_is_idempotent_and_clean(text):
    norm = Normalizer(NormalizeConfig(html=False))
    once = norm(text)
    assert norm(once) == once
    assert once == once.strip()
    assert not any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in once)
    assert "\r" not in once and "\u200b" not in once
