"""H3: exported tokenizers vs transformers.AutoTokenizer on the same files."""

from __future__ import annotations

import random
from pathlib import Path

from .environment import MIXED
from .table import row


ALPHABETS = ["abcdefghijklmnopqrstuvwxyz ABCXYZ 0123456789 .,;:!?'\"-()", "我们喜欢明亮的月光心里很高兴中文字符",
             "👨‍👩‍👧👩🏽‍💻🙂\u200d\ufe0f", "e\u0301a\u0308o\u0327\u0300", "שלום עולם مرحبا بالعالم",
             "\t\n\r\x00\x01\x1f\x7f\u00a0\u3000\u2028", "éüßøÆ€™©", "ｆｕｌｌｗｉｄｔｈ１２３"]


def random_strings(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        pools = rng.sample(ALPHABETS, rng.randint(1, 4))
        out.append("".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(0, 60))))
    return out


def campaign_h3(work: Path, quick: bool) -> list[dict]:
    import transformers
    from tokenizers import Tokenizer as Backend

    from lmlab.tokenizer.tokenizer import Tokenizer
    from lmlab.tokenizer.train import train_tokenizer

    n = 1000 if quick else 10_000
    texts = random_strings(n, 8)
    sizes = {"bpe": 400, "wordpiece": 800, "unigram": 250, "char": 500}
    mismatches, details = 0, []
    for kind, size in sizes.items():
        d = work / f"h3-{kind}"
        if not d.exists():
            train_tokenizer(MIXED, d, kind=kind, vocab_size=size, overrides=["--min_frequency=1"])
        tok = Tokenizer.load(d)
        hf = transformers.AutoTokenizer.from_pretrained(str(d))
        raw = Backend.from_file(str(d / "tokenizer.json"))
        ours = tok.encode_batch(texts)
        ours_special = tok.encode_batch(texts, add_special_tokens=True)
        theirs = hf(texts, add_special_tokens=False)["input_ids"]
        theirs_special = hf(texts)["input_ids"]
        rust = [e.ids for e in raw.encode_batch(texts, add_special_tokens=False)]
        ids_bad = sum(a != b for a, b in zip(ours, theirs))
        special_bad = sum(a != b for a, b in zip(ours_special, theirs_special))
        rust_bad = sum(a != b for a, b in zip(ours, rust))
        dec_bad = sum(tok.decode(a) != hf.decode(a) for a in ours)
        mismatches += ids_bad + special_bad + rust_bad + dec_bad
        details.append(f"{kind}: ids {ids_bad}, with special tokens {special_bad}, vs tokenizers.Tokenizer "
                       f"{rust_bad}, decode {dec_bad}")
    return [row("H3", n * len(sizes), mismatches, "; ".join(details),
                f"campaign H3 ({n} random strings: ASCII, CJK, emoji+ZWJ, combining marks, RTL, control, "
                "full-width; lmlab's 4 tokenizer kinds vs AutoTokenizer and tokenizers.Tokenizer on the same files)")]
