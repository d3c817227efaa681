"""Streaming detokenisation that never emits half a UTF-8 character.

During generation ids arrive one at a time, and with byte-level BPE a Chinese character or an
emoji is often split over two or three tokens; decoding each token alone would print U+FFFD.

* Byte-level BPE: each token is mapped back to its raw bytes (GPT-2's byte↔unicode table)
  and fed to an incremental UTF-8 decoder, which holds an incomplete sequence until its last
  byte arrives — exact, O(1) per token.
* Other kinds (their decoders join tokens with context, e.g. WordPiece's ``##``): the
  "prefix offset" method of Hugging Face's text-generation-inference — decode the ids since
  the last emitted point and emit the new suffix once it no longer ends in U+FFFD.

`flush()` ends the stream and returns what is left (invalid byte sequences become U+FFFD
only there, or when they are provably invalid). The concatenation of all pieces equals
``tokenizer.decode(all_ids)``.
"""

from __future__ import annotations

import codecs
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``: printable stand-in character → byte value."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class StreamDecoder:
    def __init__(self, tokenizer: Any):
        self.tok = tokenizer
        self.byte_level = tokenizer.kind == "bpe"
        if self.byte_level:
            self.table = _unicode_to_byte()
            self.specials = {tokenizer.token_to_id(t) for t in tokenizer.special_tokens.values()}
            self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.ids: list[int] = []
        self.prefix = 0  # ids[prefix:read] were decoded to produce the last emitted text
        self.read = 0

    def _token_bytes(self, i: int) -> bytes:
        token = self.tok.id_to_token(i)
        if token is None:
            raise ValueError(f"id {i} is outside the vocabulary (size {self.tok.vocab_size})")
        if i in self.specials or any(c not in self.table for c in token):
            return token.encode("utf-8")  # special/added tokens are stored as plain text
        return bytes(self.table[c] for c in token)

    def push(self, i: int) -> str:
        """Text completed by id `i` ("" while a character is still incomplete)."""
        if self.byte_level:
            return self.utf8.decode(self._token_bytes(i), final=False)
        self.ids.append(i)
        before = self.tok.decode(self.ids[self.prefix:self.read])
        after = self.tok.decode(self.ids[self.prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd") and after.startswith(before):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""

    def flush(self) -> str:
        if self.byte_level:
            return self.utf8.decode(b"", final=True)
        before = self.tok.decode(self.ids[self.prefix:self.read])
        after = self.tok.decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return after[len(before):] if after.startswith(before) else after
