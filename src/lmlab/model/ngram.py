"""The bag-of-n-grams classifier: logistic regression on naive-Bayes-scaled n-gram features
(NBSVM, Wang & Manning 2012, "Baselines and bigrams"), the strong linear baseline of text
classification, trained by lmlab's one loop like any task model.

For a text with the set F of n-gram ids (`lmlab.tokenizer.ngrams.NgramVocab`), class c scores

    logit_c = b_c + Σ_{f ∈ F} r_{f,c} · w_{f,c}

with trained weights W [V, C] and bias b [C], and fixed naive-Bayes log-count ratios R [V, C],
one class against the rest:

    r_{f,c} = log( p_c[f] / ‖p_c‖₁ ) − log( q_c[f] / ‖q_c‖₁ ),
    p_c = α + (training texts of class c that contain f),  q_c = α + (texts of the other classes that do)

An n-gram typical of a class starts with a large ratio, so the regression needs less evidence to
trust it. With two classes r_{f,0} = −r_{f,1}: the binary model of the paper.

    lmlab finetune sentiment --train chnsenticorp:train --eval chnsenticorp:dev --model.preset=ngram --out out/chn
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn

from lmlab.config import check, from_dict
from lmlab.model.loss import cross_entropy

PRESET = "ngram"


@dataclass
class NgramConfig:
    kind: Literal["ngram"] = "ngram"  # tells an n-gram model.json from a Transformer's
    head: Literal["classification"] = "classification"
    vocab_size: int = 2  # n-grams of the vocabulary, padding id 0 included
    n_labels: int = 2
    unit: Literal["auto", "char", "word"] = "auto"  # auto: char when most training characters are CJK
    n_max: int = 0  # longest n-gram; 0 = 3 for characters, 2 for words
    lowercase: bool = True
    min_count: int = 1  # an n-gram enters the vocabulary if this many training texts contain it
    nb_alpha: float = 1.0  # α, the smoothing of the naive-Bayes ratios
    arch: ClassVar[str] = "ngram"  # not a Transformer stack: code that asks for one refuses it by this
    type_vocab_size: ClassVar[int] = 0  # no segment embeddings: its inputs carry no token_type_ids

    def __post_init__(self) -> None:
        check(self.vocab_size >= 1, "vocab_size", "must be positive")
        check(self.n_labels >= 2, "n_labels", "must be >= 2")
        check(self.unit in ("auto", "char", "word"), "unit", "must be auto, char or word")
        check(0 <= self.n_max <= 8, "n_max", "must be in [0, 8] (0 = 3 for characters, 2 for words)")
        check(self.min_count >= 1, "min_count", "must be >= 1")
        check(self.nb_alpha > 0, "nb_alpha", "must be positive")

    def replace(self, **changes) -> "NgramConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict) -> "NgramConfig":
        return from_dict(cls, data)


@dataclass
class NgramOutput:
    logits: torch.Tensor  # [B, n_labels]
    loss: torch.Tensor | None = None  # mean cross-entropy when labels are given


class NgramClassifier(nn.Module):
    def __init__(self, cfg: NgramConfig):
        super().__init__()
        self.config = cfg
        self.weight = nn.Parameter(torch.zeros(cfg.vocab_size, cfg.n_labels))  # W; zero: logistic regression's start
        self.bias = nn.Parameter(torch.zeros(cfg.n_labels))
        self.register_buffer("ratios", torch.zeros(cfg.vocab_size, cfg.n_labels))  # R, set by `set_ratios`

    def set_ratios(self, ids: list[np.ndarray], labels: list[int]) -> None:
        self.ratios.copy_(nb_ratios(ids, labels, self.config.vocab_size, self.config.n_labels,
                                    self.config.nb_alpha))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **unused) -> NgramOutput:
        # input_ids [B, F]: each text's n-gram ids, padded with 0 (whose ratio row is 0)
        present = (input_ids != 0) if attention_mask is None else attention_mask.bool()
        scaled = self.weight[input_ids] * self.ratios[input_ids]  # [B, F, C]: r_{f,c} · w_{f,c}
        logits = (scaled * present.unsqueeze(-1)).sum(1) + self.bias  # [B, C]
        return NgramOutput(logits, None if labels is None else cross_entropy(logits, labels))


def nb_ratios(ids: list[np.ndarray], labels: list[int], vocab_size: int, n_labels: int,
              alpha: float = 1.0) -> torch.Tensor:
    """R [V, C] of the module docstring from the training texts' n-gram ids; row 0 (padding) is 0."""
    counts = np.zeros((n_labels, vocab_size))
    for x, y in zip(ids, labels):
        counts[y, x] += 1  # ids of one text are distinct: a text counts once per n-gram
    p = alpha + counts[:, 1:]  # [C, V-1]: the n-grams, without the padding id
    q = alpha + counts[:, 1:].sum(0, keepdims=True) - counts[:, 1:]
    r = np.zeros((n_labels, vocab_size))
    r[:, 1:] = np.log(p / p.sum(1, keepdims=True)) - np.log(q / q.sum(1, keepdims=True))
    return torch.from_numpy(r.T.astype(np.float32).copy())
