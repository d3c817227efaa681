"""`NgramVocab`: a text as the set of its n-grams, the input of the bag-of-n-grams classifier
(`lmlab.model.ngram`), where a Transformer has its tokenizer.

    vocab = NgramVocab.build(texts, unit="char", n_max=3)   # every n-gram of the training texts
    vocab.encode("房间很干净")   # sorted ids of 房 间 很 干 净 房间 间很 很干 干净 房间很 间很干 很干净
    vocab.save(DIR); NgramVocab.load(DIR)

The text is NFKC-normalised, lowercased (``lowercase``) and its runs of white space become one
space. Then ``unit`` picks the grams:
- ``char``: characters, the space included. This suits Chinese, whose words are not marked.
- ``word``: words and punctuation marks (``\\w+|[^\\w\\s]``).
An n-gram counts once per text: Wang & Manning (2012) found binarised features better for
sentiment. N-grams the training texts did not contain are dropped.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

from lmlab.artifacts import ArtifactWriter, read_json, verify, write_json
from lmlab.corpus.filters import HAN_CHARACTER
from lmlab.errors import ArtifactCorrupt, ConfigError

KIND = "lmlab-tokenizer"
FILE = "lmlab_ngrams.json"
UNITS = ("char", "word")
_WORD = re.compile(r"\w+|[^\w\s]")
_HAN = re.compile(HAN_CHARACTER)


def auto_unit(texts: list[str], sample: int = 2000) -> str:
    """"char" when Han characters are most of the visible characters of the first texts, else "word"."""
    joined = "".join("".join(t.split()) for t in texts[:sample])
    return "char" if len(_HAN.findall(joined)) > len(joined) / 2 else "word"


class NgramVocab:
    kind = "ngram"
    pad_id, unk_id, cls_id, sep_id, bos_id, eos_id, mask_id = 0, None, None, None, None, None, None

    def __init__(self, ngrams: list[str], unit: str, n_max: int, lowercase: bool = True, min_count: int = 1):
        if unit not in UNITS:
            raise ConfigError(f"ngram unit {unit!r}: must be one of {', '.join(UNITS)}")
        self.ngrams = ["<pad>", *ngrams]  # id 0 pads a batch and is no n-gram
        self.unit, self.n_max, self.lowercase, self.min_count = unit, n_max, lowercase, min_count
        self.index = {g: i for i, g in enumerate(self.ngrams) if i}

    # ------------------------------------------------------------------ text → n-grams
    def grams(self, text: str) -> set[str]:
        text = " ".join(unicodedata.normalize("NFKC", text).split())
        if self.lowercase:
            text = text.lower()
        units = list(text) if self.unit == "char" else _WORD.findall(text)
        sep = "" if self.unit == "char" else " "
        return {sep.join(units[i:i + n]) for n in range(1, self.n_max + 1) for i in range(len(units) - n + 1)}

    @classmethod
    def build(cls, texts: Iterable[str], unit: str = "char", n_max: int = 3, lowercase: bool = True,
              min_count: int = 1) -> "NgramVocab":
        """Every n-gram that occurs in at least `min_count` of `texts`, the most frequent first."""
        probe = cls([], unit, n_max, lowercase)
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(probe.grams(t))
        kept = sorted((g for g, c in counts.items() if c >= min_count), key=lambda g: (-counts[g], g))
        return cls(kept, unit, n_max, lowercase, min_count)

    def encode(self, text: str) -> np.ndarray:
        """Sorted ids of the text's known n-grams, each once → [F] int64 (may be empty)."""
        ids = [self.index[g] for g in self.grams(text) if g in self.index]
        return np.array(sorted(ids), dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    @property
    def options(self) -> dict:
        """What decided the vocabulary, besides the texts."""
        return {"unit": self.unit, "n_max": self.n_max, "lowercase": self.lowercase, "min_count": self.min_count}

    @property
    def vocab_size(self) -> int:
        return len(self.ngrams)

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256(f"{self.unit}\0{self.n_max}\0{self.lowercase}".encode())
        for g in self.ngrams:
            h.update(g.encode("utf-8") + b"\0")
        return h.hexdigest()

    # ------------------------------------------------------------------ files
    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        with ArtifactWriter(directory, kind=KIND, overwrite=overwrite) as w:
            write_json(w.path / FILE, {"kind": self.kind, **self.options, "ngrams": self.ngrams[1:]})
        self.directory = Path(directory)
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> "NgramVocab":
        directory = Path(directory)
        verify(directory, kind=KIND, only=[FILE])
        data = read_json(directory / FILE)
        try:
            vocab = cls(list(data["ngrams"]), data["unit"], int(data["n_max"]), bool(data["lowercase"]),
                        int(data.get("min_count", 1)))
        except (KeyError, TypeError, ValueError, ConfigError) as e:
            raise ArtifactCorrupt(f"{directory / FILE}: not an n-gram vocabulary ({e})") from None
        vocab.directory = directory
        return vocab

    def __repr__(self) -> str:
        return f"NgramVocab(unit={self.unit!r}, n_max={self.n_max}, vocab_size={self.vocab_size})"
