"""Tokenizer round trip at full size [slow]: 50,000 random strings through bpe (exact) and char
(exact on its alphabet)."""

import random

import pytest

from lmlab.tokenizer.tokenizer import Tokenizer

POOLS = ["abc xyz", "中文字符测试", "👨\u200d👩\u200d👧🏽", "e\u0301a\u0308", "שלום مرحبا", "\t\n\r\x00\x1b",
         "ＡＢＣ，。"]


@pytest.mark.slow
def test_fifty_thousand_fuzz_strings(trained):
    rng = random.Random(0)
    bpe = Tokenizer.load(trained["bpe"])
    char = Tokenizer.load(trained["char"])
    alphabet = [t for t in char.backend.get_vocab() if len(t) == 1]
    bad_bpe = bad_char = 0
    for _ in range(50_000):
        n = rng.randint(0, 40)
        s = "".join(rng.choice(rng.choice(POOLS)) if rng.random() < 0.7 else chr(rng.randint(0x20, 0x2FFFF))
                    for _ in range(n))
        s = s.encode("utf-8", "replace").decode("utf-8", "replace") if any(0xD800 <= ord(c) <= 0xDFFF for c in s) else s
        bad_bpe += bpe.decode(bpe.encode(s)) != s
        t = "".join(rng.choice(alphabet) for _ in range(n))
        bad_char += char.decode(char.encode(t)) != t
    assert bad_bpe == 0 and bad_char == 0
