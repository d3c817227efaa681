"""Intrinsic tokenizer evaluation on held-out text (``lmlab tokenizer eval DIR HELDOUT``).

Figures: bytes per token (UTF-8 bytes / tokens: compression), tokens per word and per
character (fertility; words as `lmlab.corpus.filters.word_count` counts them, so a Chinese
character is a word), unknown-token rate, and round-trip exactness — the share of documents
with ``decode(encode(x)) == x``. WordPiece cannot be exact by design (BERT's normaliser drops
control characters, may lowercase, and the decoder re-spaces punctuation and CJK), so for it
`roundtrip_normalized` compares ``normalize(x)`` and the decoding with all whitespace removed.
Unigram's metaspace convention drops whitespace at the very start of a text (SentencePiece's
dummy prefix), and it and char map characters unseen in training to the unknown token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmlab.corpus.filters import word_count
from lmlab.tokenizer.tokenizer import Tokenizer


def evaluate_tokenizer(tokenizer: str | Path | Tokenizer, heldout: str | Path, split: str = "valid",
                       max_documents: int = 10_000, batch: int = 256) -> dict[str, Any]:
    """Evaluate on `heldout`: a corpus directory (its `split`) or a text file (a document per line)."""
    from lmlab.corpus.pipeline import iter_documents

    tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.load(tokenizer)
    norm = tok.backend.normalizer
    n = {"documents": 0, "bytes": 0, "characters": 0, "words": 0, "tokens": 0, "unknown": 0,
         "exact": 0, "normalized": 0}
    texts: list[str] = []

    def run(texts: list[str]) -> None:
        for text, ids in zip(texts, tok.encode_batch(texts)):
            n["documents"] += 1
            n["bytes"] += len(text.encode("utf-8"))
            n["characters"] += len(text)
            n["words"] += word_count(text)
            n["tokens"] += len(ids)
            if tok.unk_id is not None:
                n["unknown"] += sum(1 for i in ids if i == tok.unk_id)
            back = tok.decode(ids)
            n["exact"] += back == text
            ref = norm.normalize_str(text) if norm is not None else text
            n["normalized"] += "".join(back.split()) == "".join(ref.split())

    for text in iter_documents(heldout, split):
        texts.append(text)
        if len(texts) == batch:
            run(texts)
            texts = []
        if n["documents"] + len(texts) >= max_documents:
            break
    if texts:
        run(texts)
    d, t = max(n["documents"], 1), max(n["tokens"], 1)
    return {
        "kind": tok.kind, "vocab_size": tok.vocab_size, "documents": n["documents"], "tokens": n["tokens"],
        "bytes_per_token": round(n["bytes"] / t, 4),
        "tokens_per_word": round(n["tokens"] / max(n["words"], 1), 4),
        "tokens_per_char": round(n["tokens"] / max(n["characters"], 1), 4),
        "unk_rate": round(n["unknown"] / t, 6),
        "roundtrip_exact": round(n["exact"] / d, 6),
        "roundtrip_normalized": round(n["normalized"] / d, 6),
    }
