"""Output heads on top of a stack's hidden states h: [B, T, C].

| head           | used by              | output                                             |
|----------------|----------------------|----------------------------------------------------|
| mlm            | BERT pretraining     | E·LayerNorm(GELU(W·h + b)) + b_V → [B, T, V]       |
| clm, seq2seq   | GPT, decoders        | E·h (+ b_V) → [B, T, V]                            |
| classification | sentiment            | W·pooled + b → [B, n_labels]                       |
| span           | extractive QA        | W·h + b → [B, T, 2] (start, end logits)            |
| + copy         | seq2seq, `copy`      | log of g·softmax(E·h) + (1 − g)·copy → [B, T, V]   |

E is the token embedding matrix when `tie_embeddings` is set (Press & Wolf 2017): the head
then owns no copy of it and receives it at call time, so a checkpoint stores it once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.model.config import TransformerConfig
from lmlab.model.layers import ACTIVATIONS
from lmlab.model.norm import make_norm
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


class PointerGenerator(nn.Module):
    """The copy mechanism of See et al. 2017 ("Get to the point"), over a seq2seq head's logits:

        a = softmax(W_q·h · (W_k·m)ᵀ / √C)       attention of each target position on the source [B, T, S]
        c = a·m                                  what it reads there [B, T, C]
        g = σ(w_g·[h; c] + b_g)                  the chance of generating rather than copying [B, T, 1]
        p(w) = g·softmax(E·h)(w) + (1 − g)·Σ_{s: x_s = w} a_s

    h: decoder states, m: encoder memory, x: source ids (source and target share one
    vocabulary). It returns log p, which serves as logits: log-softmax leaves it unchanged, so
    cross-entropy, greedy and beam decoding need nothing else. A title that repeats the
    abstract's rare terms no longer needs each one learned as an output word."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.k = nn.Linear(cfg.d_model, cfg.d_model)
        self.gate = nn.Linear(2 * cfg.d_model, 1)

    def forward(self, logits: torch.Tensor, h: torch.Tensor, memory: torch.Tensor, source_ids: torch.Tensor,
                source_mask: torch.Tensor | None) -> torch.Tensor:
        scores = self.q(h) @ self.k(memory).transpose(1, 2) / h.size(-1) ** 0.5  # [B, T, S]
        if source_mask is not None:
            scores = scores.masked_fill(~source_mask.bool()[:, None, :], float("-inf"))
        a = scores.float().softmax(-1)
        g = torch.sigmoid(self.gate(torch.cat([h, a.to(memory.dtype) @ memory], -1))).float()  # [B, T, 1]
        p = g * logits.float().softmax(-1)
        p = p.scatter_add(-1, source_ids[:, None, :].expand(-1, h.size(1), -1), (1 - g) * a)
        return p.clamp_min(1e-12).log()


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
