"""Padding-free encoder compute: every part of a layer but attention runs on the real tokens only.

A batch padded to its longest row holds B·T rows, of which N are tokens (SST-2 in random batches
of 32: N ≈ B·T/3). Everything in an encoder layer except attention treats each position on its
own — the Q/K/V and output projections, the feed-forward network, the norms, residuals and
dropout — so it computes the same rows whether it is given [B, T, C] or only the [N, C] real
ones. `Transformer.encode` therefore gathers the real rows of the embeddings once, and the layers
work on [N, C]; attention, the one part that mixes positions, scatters its Q, K, V back to
[B, T, ·] (zeros where a row was not computed; padding is masked as on the padded path) and
gathers its output again:

    ids [B, T] → Embed → [B, T, C] → unpad → [N, C] → N × ([N, C] → qkv [N, 3C] → pad → [B, H, T, D]
                 → Attention → [B, T, C] → unpad → [N, C] → o, FFN, norms, residuals) → pad → [B, T, C]

This is the "unpadding" of MosaicBERT (Portes et al. 2023) and ModernBERT (Warner et al. 2024),
and of Hugging Face's ``DataCollatorWithFlattening``; here attention keeps the padded layout of
torch's kernels, so the two paths do the same arithmetic on every real row. They are tested equal
in outputs and gradients (tests/unit/model/test_unpad.py). The embeddings stay padded: run on [N]
they saved nothing measurable, and the embedding module keeps one output shape for whatever reads
it (adversarial training perturbs it per example). N is rounded up with a few padding positions
(`ROWS_MULTIPLE`); the encoder's hidden states at padding positions are unspecified on both paths
(zeros, or whatever the layers made of the padding token), and nothing reads them: every mask
excludes them.

The padded formulas (attention.py, layers.py) stay the reference: ``model.unpad=false`` runs them
as written. `Transformer.encode` takes this path when the model is set to (the default) and the
batch has padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class _Rows(torch.autograd.Function):
    """x[indices] along dim 0, for unique indices: the gradient puts each row back where it came
    from, a plain copy (index_select's own gradient accumulates, as repeated indices would need,
    and runs several times slower on CPU)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(indices)
        ctx.rows = x.size(0)
        return x.index_select(0, indices)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (indices,) = ctx.saved_tensors
        return _scatter_rows(grad, indices, ctx.rows), None


def _scatter_rows(x: torch.Tensor, indices: torch.Tensor, rows: int) -> torch.Tensor:
    """[N, *] → [rows, *]: x's rows at `indices`, zeros elsewhere (its gradient is an index_select)."""
    return x.new_zeros(rows, *x.shape[1:]).index_copy_(0, indices, x)


# N is rounded up to a multiple of this with padding rows (computed, then ignored as on the padded
# path): torch builds its oneDNN matrix products for each shape it meets, and with a new N at every
# step that costs more than the rows themselves (a bf16 [N, 384] × [384, 1536] product with N new:
# 4.3 µs a row; with N seen before: 1.2; rounded to 64: 1.7, the extra rows included).
ROWS_MULTIPLE = 64


@dataclass(frozen=True)
class Unpadding:
    """Where the N real tokens of a padded [B, T] batch sit: flat indices b·T + t, row by row."""

    indices: torch.Tensor  # [N] int64
    batch: int  # B
    length: int  # T

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor, multiple: int | None = None) -> Unpadding:
        """attention_mask [B, T], 1 (or True) for tokens, 0 for padding; N is rounded up to a
        `multiple` (default `ROWS_MULTIPLE`) with padding positions, where the batch has enough."""
        multiple = multiple or ROWS_MULTIPLE
        b, t = attention_mask.shape
        real = attention_mask.reshape(-1).bool()
        indices = torch.nonzero(real).squeeze(1)
        extra = min(-indices.numel() % multiple, b * t - indices.numel())
        if extra:
            indices = torch.cat([indices, torch.nonzero(~real).squeeze(1)[:extra]]).sort().values
        return cls(indices, b, t)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, *] → [N, *]: the real rows."""
        return _Rows.apply(x.reshape(self.batch * self.length, *x.shape[2:]), self.indices)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """[N, *] → [B, T, *], zeros at the positions not in `indices`."""
        return _scatter_rows(x, self.indices, self.batch * self.length).view(self.batch, self.length, *x.shape[1:])
