"""Output heads on top of a stack's hidden states h: [B, T, C].

| head           | used by              | output                                             |
|----------------|----------------------|----------------------------------------------------|
| mlm            | BERT pretraining     | E·LayerNorm(GELU(W·h + b)) + b_V → [B, T, V]       |
| clm, seq2seq   | GPT, decoders        | E·h (+ b_V) → [B, T, V]                            |
| classification | sentiment            | W·pooled + b → [B, n_labels]                       |
| span           | extractive QA        | W·h + b → [B, T, 2] (start, end logits)            |

E is the token embedding matrix when `tie_embeddings` is set (Press & Wolf 2017): the head
then owns no copy of it and receives it at call time, so a checkpoint stores it once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.model.config import TransformerConfig
from lmlab.model.layers import ACTIVATIONS, make_norm
from lmlab.model.linear import linear


class VocabProjection(nn.Module):
    """h → logits over the vocabulary; the weight is the token embedding when tied."""

    def __init__(self, cfg: TransformerConfig, bias: bool):
        super().__init__()
        self.weight = None if cfg.tie_embeddings else nn.Parameter(torch.empty(cfg.vocab_size, cfg.d_model))
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size)) if bias else None

    def forward(self, h: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return linear(h, self.matrix(embedding), self.bias)

    def matrix(self, embedding: torch.Tensor) -> torch.Tensor:
        return embedding if self.weight is None else self.weight


class MaskedLMHead(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.act = ACTIVATIONS.get(cfg.activation, F.gelu)
        self.norm = make_norm(cfg)
        self.proj = VocabProjection(cfg, bias=True)

    def transform(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(h)))

    def forward(self, h: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return self.proj(self.transform(h), embedding)


class LMHead(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.proj = VocabProjection(cfg, bias=cfg.lm_head_bias)

    def transform(self, h: torch.Tensor) -> torch.Tensor:
        return h

    def forward(self, h: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return self.proj(h, embedding)


class ClassificationHead(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        p = cfg.dropout if cfg.classifier_dropout is None else cfg.classifier_dropout
        self.dropout = nn.Dropout(p)
        self.out = nn.Linear(cfg.d_model, cfg.n_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # [B, C] → [B, n_labels]
        return self.out(self.dropout(pooled))


class SpanHead(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.out = nn.Linear(cfg.d_model, 2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [B, T, C] → [B, T, 2]
        return self.out(h)


class Pooler(nn.Module):
    """BERT's pooled output: tanh(W·h[CLS] + b)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [B, T, C] → [B, C]
        return torch.tanh(self.dense(h[:, 0]))


def make_head(cfg: TransformerConfig) -> nn.Module | None:
    return {
        "none": lambda: None,
        "mlm": lambda: MaskedLMHead(cfg),
        "clm": lambda: LMHead(cfg),
        "seq2seq": lambda: LMHead(cfg),
        "classification": lambda: ClassificationHead(cfg),
        "span": lambda: SpanHead(cfg),
    }[cfg.head]()
