"""`read_sentencepiece_model`: a SentencePiece model file (``.model``, Marian's ``source.spm``) read
without ``sentencepiece`` or ``protobuf``.

The file is one serialised ``ModelProto`` (google/sentencepiece, ``src/sentencepiece_model.proto``):
only the fields that change how text is encoded are read, and the protobuf wire format is walked
by hand (varints, 32/64-bit fixed values, length-delimited fields), so reading a model needs no
generated code and executes nothing from the file. Field numbers:

    ModelProto       1 pieces (repeated SentencePiece) · 2 trainer_spec · 3 normalizer_spec
    SentencePiece    1 piece (string) · 2 score (float) · 3 type (NORMAL 1, UNKNOWN 2, CONTROL 3,
                     USER_DEFINED 4, UNUSED 5, BYTE 6)
    TrainerSpec      3 model_type (UNIGRAM 1, BPE 2, WORD 3, CHAR 4) · 24 treat_whitespace_as_suffix
                     · 35 byte_fallback · 40 unk_id
    NormalizerSpec   1 name · 2 precompiled_charsmap · 3 add_dummy_prefix · 4 remove_extra_whitespaces
                     · 5 escape_whitespaces

Absent fields take the proto's defaults (unigram, unk_id 0, the three whitespace switches on).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from lmlab.errors import ArtifactCorrupt

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}
MAX_BYTES = 256 << 20  # real models are under 10 MB; refuse to read an arbitrarily large file


@dataclass(frozen=True)
class Piece:
    piece: str
    score: float
    type: int = NORMAL


@dataclass
class SentencePieceModel:
    pieces: list[Piece] = field(default_factory=list)
    model_type: str = "unigram"
    unk_id: int = 0
    byte_fallback: bool = False
    treat_whitespace_as_suffix: bool = False
    normalizer: str = ""  # the rule's name: nmt_nfkc, nfkc, identity, …
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True


class _Malformed(Exception):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _Malformed(f"a truncated varint at byte {pos}")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, pos


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of one message: an int for varint and fixed fields, bytes
    for length-delimited ones."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
            if pos + size > len(data):
                raise _Malformed(f"a truncated fixed-width field at byte {pos}")
            value, pos = int.from_bytes(data[pos:pos + size], "little"), pos + size
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise _Malformed(f"field {number} runs past the end ({size} bytes at byte {pos})")
            value, pos = data[pos:pos + size], pos + size
        else:  # 3, 4: groups, which this proto never uses; 6, 7: not wire types
            raise _Malformed(f"wire type {wire} (field {number}) at byte {pos}")
        if number == 0:
            raise _Malformed(f"field number 0 at byte {pos}")
        yield number, wire, value


def _int32(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v  # negative int32s are sign-extended to 64 bits


def _text(v: int | bytes, what: str) -> str:
    if not isinstance(v, bytes):
        raise _Malformed(f"{what} is not a string")
    try:
        return v.decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed(f"{what} is not UTF-8") from None


def _piece(data: bytes, index: int) -> Piece:
    piece, score, kind = None, 0.0, NORMAL
    for number, wire, v in _fields(data):
        if number == 1:
            piece = _text(v, f"piece {index}")
        elif number == 2 and wire == 5:
            score = struct.unpack("<f", int(v).to_bytes(4, "little"))[0]  # type: ignore[arg-type]
        elif number == 3 and wire == 0:
            kind = int(v)  # type: ignore[arg-type]
    if not piece:
        raise _Malformed(f"piece {index} is empty")
    return Piece(piece, score, kind)


def parse_sentencepiece_model(data: bytes) -> SentencePieceModel:
    """The serialised ModelProto `data` → `SentencePieceModel`; `_Malformed` on bad bytes."""
    m = SentencePieceModel()
    for number, wire, v in _fields(data):
        if number == 1 and isinstance(v, bytes):
            m.pieces.append(_piece(v, len(m.pieces)))
        elif number == 2 and isinstance(v, bytes):
            for n, w, x in _fields(v):
                if w != 0:
                    continue
                if n == 3:
                    m.model_type = MODEL_TYPES.get(int(x), f"type {x}")  # type: ignore[arg-type]
                elif n == 24:
                    m.treat_whitespace_as_suffix = bool(x)
                elif n == 35:
                    m.byte_fallback = bool(x)
                elif n == 40:
                    m.unk_id = _int32(int(x))  # type: ignore[arg-type]
        elif number == 3 and isinstance(v, bytes):
            for n, w, x in _fields(v):
                if n == 1:
                    m.normalizer = _text(x, "normalizer_spec.name")
                elif n == 2 and isinstance(x, bytes):
                    m.precompiled_charsmap = x
                elif n in (3, 4, 5) and w == 0:
                    setattr(m, {3: "add_dummy_prefix", 4: "remove_extra_whitespaces", 5: "escape_whitespaces"}[n],
                            bool(x))
    if not m.pieces:
        raise _Malformed("no pieces")
    if not 0 <= m.unk_id < len(m.pieces):
        raise _Malformed(f"trainer_spec.unk_id {m.unk_id} is not a piece (the model has {len(m.pieces)})")
    return m


def read_sentencepiece_model(path: str | Path) -> SentencePieceModel:
    """A SentencePiece model file → `SentencePieceModel`, or ArtifactCorrupt naming the file."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ArtifactCorrupt(f"{path}: {size} bytes, more than any SentencePiece model ({MAX_BYTES} at most)")
    try:
        return parse_sentencepiece_model(path.read_bytes())
    except _Malformed as e:
        raise ArtifactCorrupt(f"{path}: not a SentencePiece model ({e})") from None
