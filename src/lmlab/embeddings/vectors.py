"""`WordVectors`: the frozen artifact of a word-embedding run, and its queries and exports.

On disk (kind ``lmlab-word-vectors``)::

    vectors.safetensors   "vectors": float32 [V, d], rows in vocabulary order (most frequent first)
    vocab.json            {"words": [...], "counts": [...]}  (counts may be null for imports)
    config.yaml, stats.json, manifest.json

Queries follow gensim's ``KeyedVectors`` (the reference users know): cosine similarity on
unit-normalised rows; ``most_similar`` is 3CosAdd (Mikolov et al. 2013, "Linguistic
Regularities in Continuous Space Word Representations") and ``most_similar_cosmul`` is 3CosMul
(Levy & Goldberg 2014, "Linguistic Regularities in Sparse and Explicit Word Representations",
eq. 4, with cosines shifted to [0, 1] and ε = 1e-6 as gensim does).

Exports: the word2vec text and binary formats (Mikolov's word2vec.c: a ``"V d"`` header, then
per word ``word v1 ... vd`` or ``word <d float32 little-endian>\\n``) and the GloVe text format
(word2vec text without the header). Text values are written with 9 significant digits, which
round-trips float32 exactly. ``gensim.models.KeyedVectors.load_word2vec_format`` reads all
three (GloVe with ``no_header=True``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np

from lmlab.artifacts import ArtifactWriter, load_tensors, read_json, save_tensors, verify, write_json
from lmlab.errors import ArtifactCorrupt, DataError, UnknownWord

KIND = "lmlab-word-vectors"
ExportFormat = Literal["word2vec-text", "word2vec-binary", "glove-text"]
EXPORT_FORMATS = ("word2vec-text", "word2vec-binary", "glove-text")


class WordVectors:
    def __init__(self, words: list[str], vectors: np.ndarray, counts: np.ndarray | None = None):
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise DataError(f"vectors of shape {vectors.shape} do not match {len(words)} words")
        self.words = list(words)
        self.vectors = vectors
        self.counts = None if counts is None else np.asarray(counts, dtype=np.int64)
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            dup = next(w for i, w in enumerate(self.words) if self.index[w] != i)
            raise DataError(f"duplicate word {dup!r} in the vocabulary")
        self._unit: np.ndarray | None = None

    # -- basics ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vectors[self.id(word)]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def id(self, word: str) -> int:
        try:
            return self.index[word]
        except KeyError:
            raise UnknownWord(f"{word!r} is not in the vocabulary ({len(self)} words)") from None

    @property
    def unit(self) -> np.ndarray:
        """Rows scaled to unit length (zero rows stay zero). float32 [V, d]."""
        if self._unit is None:
            norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
            self._unit = self.vectors / np.where(norms == 0, 1, norms)
        return self._unit

    # -- queries --------------------------------------------------------------------------
    def similarity(self, w1: str, w2: str) -> float:
        return float(self.unit[self.id(w1)] @ self.unit[self.id(w2)])

    def _scores_add(self, positive: list[int], negative: list[int], rows: np.ndarray) -> np.ndarray:
        mean = (self.unit[positive].sum(0) - self.unit[negative].sum(0)) / (len(positive) + len(negative))
        mean /= max(float(np.linalg.norm(mean)), 1e-30)
        return rows @ mean

    def _scores_mul(self, positive: list[int], negative: list[int], rows: np.ndarray) -> np.ndarray:
        pos = [(1 + rows @ self.unit[i]) / 2 for i in positive]
        neg = [(1 + rows @ self.unit[i]) / 2 for i in negative]
        return np.prod(pos, axis=0) / (np.prod(neg, axis=0) + 1e-6) if neg else np.prod(pos, axis=0)

    def most_similar(self, positive: Iterable[str] = (), negative: Iterable[str] = (), topn: int = 10,
                     restrict_vocab: int | None = None,
                     method: Literal["add", "mul"] = "add") -> list[tuple[str, float]]:
        """Nearest words to ``Σ positive − Σ negative`` (3CosAdd) or by 3CosMul; the query
        words are excluded. ``restrict_vocab`` searches only the N most frequent words."""
        if isinstance(positive, str):
            positive = [positive]
        if isinstance(negative, str):
            negative = [negative]
        pos, neg = [self.id(w) for w in positive], [self.id(w) for w in negative]
        if not pos and not neg:
            raise DataError("most_similar needs at least one word")
        rows = self.unit[: restrict_vocab or len(self)]
        scores = (self._scores_add if method == "add" else self._scores_mul)(pos, neg, rows)
        return self._top(scores, set(pos + neg), topn)

    def most_similar_cosmul(self, positive: Iterable[str] = (), negative: Iterable[str] = (),
                            topn: int = 10, restrict_vocab: int | None = None) -> list[tuple[str, float]]:
        return self.most_similar(positive, negative, topn, restrict_vocab, method="mul")

    def _top(self, scores: np.ndarray, exclude: set[int], topn: int) -> list[tuple[str, float]]:
        k = min(len(scores), topn + len(exclude))
        best = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(self.words[i], float(scores[i])) for i in best if i not in exclude][:topn]

    def analogy(self, a: str, b: str, c: str, topn: int = 1, method: Literal["add", "mul"] = "add",
                restrict_vocab: int | None = None) -> list[tuple[str, float]]:
        """``a`` is to ``b`` as ``c`` is to ? — e.g. ``analogy("man", "king", "woman")`` → queen."""
        return self.most_similar([b, c], [a], topn=topn, restrict_vocab=restrict_vocab, method=method)

    # -- artifact -------------------------------------------------------------------------
    def save(self, out_dir: str | Path, config: Any = None, stats: dict | None = None,
             overwrite: bool = False) -> Path:
        with ArtifactWriter(out_dir, kind=KIND, config=config, overwrite=overwrite) as w:
            import torch

            save_tensors({"vectors": torch.from_numpy(self.vectors)}, w.path / "vectors.safetensors")
            write_json(w.path / "vocab.json", {
                "words": self.words, "counts": None if self.counts is None else self.counts.tolist()})
            if stats is not None:
                write_json(w.path / "stats.json", stats)
        return Path(out_dir)

    @classmethod
    def load(cls, directory: str | Path) -> "WordVectors":
        directory = Path(directory)
        verify(directory, kind=KIND, only=["vectors.safetensors", "vocab.json"])
        vectors = load_tensors(directory / "vectors.safetensors").get("vectors")
        vocab = read_json(directory / "vocab.json")
        if vectors is None or not isinstance(vocab, dict) or "words" not in vocab:
            raise ArtifactCorrupt(f"{directory}: vectors.safetensors needs a 'vectors' tensor and "
                                  "vocab.json a 'words' list")
        if vectors.shape[0] != len(vocab["words"]):
            raise ArtifactCorrupt(f"{directory}: {vectors.shape[0]} vectors but {len(vocab['words'])} words")
        return cls(vocab["words"], vectors.numpy(), vocab.get("counts"))

    def export(self, path: str | Path, format: ExportFormat = "word2vec-text") -> Path:
        """Write the vectors in a format other tools read (see module docstring)."""
        from lmlab.artifacts import atomic_write_bytes

        if format not in EXPORT_FORMATS:
            raise DataError(f"unknown export format {format!r}; choose one of {', '.join(EXPORT_FORMATS)}")
        bad = [w for w in self.words if not w or any(ch.isspace() for ch in w)]
        if bad:
            raise DataError(f"{len(bad)} words contain whitespace or are empty (first: {bad[0]!r}); "
                            f"the {format} format cannot hold them — keep the lmlab artifact instead")
        v, d = self.vectors.shape
        parts: list[bytes] = []
        if format != "glove-text":
            parts.append(f"{v} {d}\n".encode())
        if format == "word2vec-binary":
            little = self.vectors.astype("<f4")
            for w, row in zip(self.words, little):
                parts.append(w.encode("utf-8") + b" " + row.tobytes() + b"\n")
        else:
            fmt = " ".join(["%.9g"] * d)
            for w, row in zip(self.words, self.vectors.tolist()):
                parts.append(f"{w} {fmt % tuple(row)}\n".encode("utf-8"))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, b"".join(parts))
        return path


def load_vectors(directory: str | Path) -> WordVectors:
    return WordVectors.load(directory)


def read_vectors_file(path: str | Path, format: ExportFormat = "word2vec-text") -> WordVectors:
    """Read vectors in one of the export formats (e.g. published GloVe or word2vec files).
    Rows keep the file's order, taken as most frequent first; counts are unknown."""
    path = Path(path)
    if format not in EXPORT_FORMATS:
        raise DataError(f"unknown format {format!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if not path.is_file():
        raise DataError(f"{path}: vectors file not found")
    with open(path, "rb") as f:
        data = f.read()
    words: list[str] = []
    rows: list[np.ndarray] = []
    pos, line_no, dim, n_expected = 0, 0, None, None
    if format != "glove-text":
        end = data.find(b"\n")
        try:
            n_expected, dim = (int(x) for x in data[:end].split())
        except ValueError:
            raise DataError(f"{path}: line 1: expected a 'count dimension' header, got {data[:end][:60]!r}") from None
        pos, line_no = end + 1, 1
    if format == "word2vec-binary":
        for k in range(n_expected):
            while data[pos:pos + 1] == b"\n":  # word2vec.c writes one after each vector, gensim does not
                pos += 1
            space = data.find(b" ", pos)
            if space < 0 or space + 4 * dim > len(data):
                raise DataError(f"{path}: record {k + 1}: truncated (header promised {n_expected} vectors)")
            try:
                words.append(data[pos:space].decode("utf-8"))
            except UnicodeDecodeError:
                raise DataError(f"{path}: record {k + 1}: word is not UTF-8") from None
            rows.append(np.frombuffer(data, "<f4", dim, space + 1))
            pos = space + 1 + 4 * dim
    else:
        try:
            text = data[pos:].decode("utf-8")
        except UnicodeDecodeError as e:
            bad_line = line_no + data[pos:pos + e.start].count(b"\n") + 1
            raise DataError(f"{path}: line {bad_line}: not UTF-8 text; is this a {format} file?") from None
        for line in text.splitlines():
            line_no += 1
            parts = line.rstrip().split(" ")
            if not line.strip():
                continue
            if dim is None:
                dim = len(parts) - 1
                if dim == 0:
                    raise DataError(f"{path}: line {line_no}: a word without values; each line is "
                                    "'word v1 v2 ...'")
            if len(parts) - 1 != dim:
                raise DataError(f"{path}: line {line_no}: {len(parts) - 1} values, expected {dim}")
            words.append(parts[0])
            try:
                rows.append(np.array(parts[1:], dtype=np.float32))
            except ValueError:
                raise DataError(f"{path}: line {line_no}: a value is not a number") from None
        if n_expected is not None and len(words) != n_expected:
            raise DataError(f"{path}: header promised {n_expected} vectors, found {len(words)}")
    if not words:
        raise DataError(f"{path}: no vectors found")
    return WordVectors(words, np.stack(rows))


def import_vectors(file: str, format: str = "word2vec-text", out: str = "", overwrite: bool = False) -> str:
    """CLI: ``lmlab embed import FILE --format F --out DIR`` (then eval, neighbors, plot work)."""
    wv = read_vectors_file(file, format)  # type: ignore[arg-type]
    wv.save(out, stats={"imported_from": str(file), "format": format, "vocab_size": len(wv), "dim": wv.dim},
            overwrite=overwrite)
    return f"imported {len(wv)} vectors of dimension {wv.dim} from {file} into {out}"


def export_vectors(directory: str, format: str = "word2vec-text", out: str = "") -> str:
    """CLI: ``lmlab embed export DIR --format F --out FILE``."""
    if not out:
        raise DataError("--out FILE is required")
    wv = WordVectors.load(directory)
    path = wv.export(out, format)  # type: ignore[arg-type]
    return f"wrote {len(wv)} vectors of dimension {wv.dim} to {path} ({format})"


def neighbors(directory: str, words: list[str], topn: int = 10, method: str = "add") -> str:
    """CLI: ``lmlab embed neighbors DIR WORD...``; ``a - b + c`` in a word is an analogy query."""
    wv = WordVectors.load(directory)
    lines = []
    for query in words:
        pos, neg = _parse_query(query)
        missing = [w for w in pos + neg if w not in wv]
        if missing:
            lines.append(f"{query}: not in the vocabulary ({', '.join(missing)})")
            continue
        sims = wv.most_similar(pos, neg, topn=topn, method=method)  # type: ignore[arg-type]
        lines.append(f"{query}:")
        lines.extend(f"  {w}\t{s:.4f}" for w, s in sims)
    return "\n".join(lines)


def _parse_query(query: str) -> tuple[list[str], list[str]]:
    """``"king - man + woman"`` → (["king", "woman"], ["man"]); a plain word → ([word], [])."""
    tokens = query.split()
    if len(tokens) == 1:
        return tokens, []
    pos, neg, sign = [], [], "+"
    for t in tokens:
        if t in "+-":
            sign = t
        else:
            (pos if sign == "+" else neg).append(t)
    return pos, neg
