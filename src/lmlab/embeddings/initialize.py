"""Feeding the Transformer: fill rows of a model's token-embedding matrix from word vectors.

`init_embeddings` works on a plain ``[vocab, d_model]`` weight tensor (e.g.
``model.tok_emb.weight``), so it needs nothing from the model code. Each model token is looked
up in the vectors — exactly, and with ``match="normalized"`` also after stripping subword
markers (``Ġ`` byte-level BPE, ``▁`` SentencePiece, ``##`` WordPiece continuation) and
lower-casing — and its row is overwritten; unmatched rows keep their initialisation.

When the vector size differs from ``d_model`` the vectors are projected on their top
``d_model`` principal components (centred, fitted on all vectors; ``projection="pca"``). The
filled rows are then rescaled so that their mean row norm equals that of the rows they replace
(``rescale=True``): the model keeps the scale its initialisation was designed for and only the
directions come from the vectors.

Vectors trained with ``--tokenizer MODEL_TOKENIZER_DIR`` share the model's tokens, and every
token that survived ``min_count`` matches exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch

from lmlab.errors import DataError
from lmlab.embeddings.vectors import WordVectors

MARKERS = ("Ġ", "▁", "##")


def normalize_token(token: str) -> str:
    for m in MARKERS:
        if token.startswith(m) and len(token) > len(m):
            token = token[len(m):]
            break
    return token.lower()


def pca_project(x: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Centre `x` [n, d] and project it on its top `k` principal axes → ([n, k], variance kept)."""
    x = np.asarray(x, np.float64)
    xc = x - x.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    return xc @ vt[:k].T, float((s[:k] ** 2).sum() / max((s**2).sum(), 1e-300))


def init_embeddings(weight: torch.Tensor, vocab: list[str] | dict[str, int], vectors: WordVectors,
                    projection: Literal["pca", "none"] = "pca",
                    match: Literal["exact", "normalized"] = "exact", rescale: bool = True) -> dict:
    """Overwrite the rows of `weight` [V, d_model] whose token has a vector; return match stats."""
    if weight.ndim != 2:
        raise DataError(f"expected a [vocab, d_model] weight, got shape {tuple(weight.shape)}")
    items = list(vocab.items()) if isinstance(vocab, dict) else list((t, i) for i, t in enumerate(vocab))
    n_rows, d_model = weight.shape
    bad = [(t, i) for t, i in items if not 0 <= int(i) < n_rows]
    if bad:
        raise DataError(f"token {bad[0][0]!r} has id {bad[0][1]}, outside the {n_rows} rows of the weight")
    if projection not in ("pca", "none"):
        raise DataError(f"projection must be 'pca' or 'none', got {projection!r}")
    if vectors.dim != d_model and projection == "none":
        raise DataError(f"vectors have {vectors.dim} dimensions but the model has d_model={d_model}; "
                        f"use projection='pca' or train vectors with --dim {d_model}")
    if vectors.dim < d_model:
        raise DataError(f"vectors have {vectors.dim} dimensions, fewer than d_model={d_model}; PCA can only "
                        f"reduce: train vectors with --dim >= {d_model}")
    table = vectors.vectors
    kept = 1.0
    if vectors.dim != d_model:
        table, kept = pca_project(table, d_model)
    normalized: dict[str, int] = {}
    if match == "normalized":
        for i in range(len(vectors) - 1, -1, -1):  # most frequent form wins
            normalized[normalize_token(vectors.words[i])] = i
    rows, sources, n_exact, unmatched = [], [], 0, []
    for token, i in items:
        j = vectors.index.get(token)
        if j is not None:
            n_exact += 1
        elif match == "normalized":
            j = normalized.get(normalize_token(token))
        if j is None:
            if len(unmatched) < 20:
                unmatched.append(token)
            continue
        rows.append(int(i))
        sources.append(j)
    scale = 1.0
    if rows:
        new = torch.as_tensor(np.asarray(table[sources]), dtype=weight.dtype, device=weight.device)
        with torch.no_grad():
            if rescale:
                old_norm = weight[rows].norm(dim=1).mean()
                new_norm = new.norm(dim=1).mean().clamp_min(1e-12)
                scale = float(old_norm / new_norm)
                new = new * scale
            weight[rows] = new
    return {"rows": n_rows, "tokens": len(items), "matched": len(rows), "match_rate": len(rows) / max(len(items), 1),
            "exact": n_exact, "normalized": len(rows) - n_exact, "unmatched_examples": unmatched,
            "projection": "pca" if vectors.dim != d_model else "none", "variance_kept": kept, "scale": scale}


def init_model_embeddings(model, tokenizer, directory: str | Path) -> dict:
    """An lmlab model's token embeddings from a word-vectors directory (`lmlab embed train`): each
    vocabulary token that is a word — also after stripping its subword marker and lower-casing —
    takes that word's vector projected to d_model; the rest keep their random rows. Used by
    ``lmlab pretrain`` (``init_vectors``) and ``lmlab finetune`` (``task.vectors``)."""
    from lmlab.embeddings.vectors import load_vectors

    vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
    stats = init_embeddings(model.embed.tokens.weight, vocab, load_vectors(directory), match="normalized")
    return {"directory": str(directory), **{k: stats[k] for k in ("matched", "tokens", "match_rate", "variance_kept")}}
