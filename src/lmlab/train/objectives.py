"""Self-supervised objectives: what a batch of token ids becomes before the model sees it.

| objective | model           | input → target                                                     |
|-----------|-----------------|--------------------------------------------------------------------|
| clm       | decoder (GPT)   | x[0:T] → x[1:T+1], every position                                  |
| mlm       | encoder (BERT)  | 15 % of tokens: 80 % [MASK], 10 % random, 10 % kept → the original |
|           |                 | (Devlin et al. 2019); whole-word masking groups WordPiece ``##``   |
|           |                 | pieces, and Chinese characters by jieba words (Cui et al. 2019)    |
| denoise   | encoder-decoder | text infilling: spans (length ~ Poisson(3)) covering 15 % of the   |
|           |                 | tokens each become one [MASK]; the decoder rebuilds the original   |
|           |                 | (Lewis et al. 2020, BART)                                          |

Every random draw comes from a generator seeded by (seed, global micro-batch index), so a
batch is a pure function of its index: resuming, or splitting the same batches over more
processes, reproduces it exactly. `prepare` returns the model's keyword arguments and the
number of predicted tokens, by which the training loop weights micro-batches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from lmlab.model.loss import IGNORE_INDEX


@dataclass
class Prepared:
    inputs: dict[str, torch.Tensor]  # keyword arguments of Transformer.forward, labels included
    n_targets: int  # predicted tokens (the loss is their mean)


def _generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, index]).generate_state(1)[0]))


class CausalLM:
    name = "clm"
    predicts_tokens = True  # its loss is a mean over predicted tokens

    def prepare(self, batch: Any, index: int) -> Prepared:
        x, y = batch  # [B, T] each, y shifted by one
        return Prepared({"input_ids": x, "labels": y}, int((y != IGNORE_INDEX).sum()))


class MaskedLM:
    name = "mlm"
    predicts_tokens = True  # its loss is a mean over predicted tokens

    def __init__(self, vocab_size: int, mask_id: int, special_ids: list[int], seed: int,
                 prob: float = 0.15, word_starts: Callable[[torch.Tensor], torch.Tensor] | None = None):
        """word_starts: ids [B, T] → bool [B, T], True where a token begins a word; given, the
        masking chooses whole words (see `word_start_fn`)."""
        self.vocab_size, self.mask_id, self.seed, self.prob = vocab_size, mask_id, seed, prob
        self.special = torch.tensor(sorted(special_ids), dtype=torch.long)
        self.word_starts = word_starts

    def _choose(self, ids: torch.Tensor, candidates: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.word_starts is None:
            return (torch.rand(ids.shape, generator=g) < self.prob) & candidates
        # whole words: a word is a start token and the continuation tokens after it
        starts = self.word_starts(ids) | ~candidates
        word_id = torch.cumsum(starts.long(), dim=1)  # [B, T]: same id within a word
        pick = torch.rand(ids.shape, generator=g) < self.prob  # one draw per word, read at its start
        chosen_start = pick & starts & candidates
        chosen_words = torch.zeros(ids.size(0), ids.size(1) + 1, dtype=torch.bool)
        chosen_words.scatter_(1, word_id * chosen_start, chosen_start)
        chosen_words[:, 0] = False
        return chosen_words.gather(1, word_id) & candidates

    def prepare(self, batch: dict[str, torch.Tensor], index: int) -> Prepared:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        g = _generator(self.seed, index)
        candidates = mask.bool() & ~torch.isin(ids, self.special)
        chosen = self._choose(ids, candidates, g)
        labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
        r = torch.rand(ids.shape, generator=g)
        random_ids = torch.randint(self.vocab_size, ids.shape, generator=g)
        inputs = torch.where(chosen & (r < 0.8), torch.full_like(ids, self.mask_id), ids)
        inputs = torch.where(chosen & (r >= 0.8) & (r < 0.9), random_ids, inputs)
        return Prepared({"input_ids": inputs, "attention_mask": mask, "labels": labels}, int(chosen.sum()))


class Denoising:
    name = "denoise"
    predicts_tokens = True  # its loss is a mean over predicted tokens

    def __init__(self, mask_id: int, pad_id: int, start_id: int, seed: int, ratio: float = 0.15,
                 mean_span: float = 3.0):
        self.mask_id, self.pad_id, self.start_id, self.seed = mask_id, pad_id, start_id, seed
        self.ratio, self.mean_span = ratio, mean_span

    def _corrupt(self, seq: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = len(seq)
        budget = int(round(n * self.ratio))
        masked = np.zeros(n, dtype=bool)
        while budget > 0 and not masked.all():
            length = max(1, min(budget, int(rng.poisson(self.mean_span))))
            start = int(rng.integers(0, max(1, n - length + 1)))
            masked[start:start + length] = True
            budget -= length
        out, prev = [], False
        for tok, m in zip(seq, masked):
            if m and not prev:
                out.append(self.mask_id)
            elif not m:
                out.append(int(tok))
            prev = m
        return np.array(out, dtype=np.int64)

    def prepare(self, batch: dict[str, torch.Tensor], index: int) -> Prepared:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        rng = np.random.default_rng([self.seed, index])
        lengths = mask.sum(1).tolist()
        sources = [self._corrupt(ids[b, :n].numpy(), rng) for b, n in enumerate(lengths)]
        width = max(len(s) for s in sources)
        src = torch.full((len(sources), width), self.pad_id, dtype=torch.long)
        src_mask = torch.zeros_like(src)
        for b, s in enumerate(sources):
            src[b, :len(s)] = torch.from_numpy(s)
            src_mask[b, :len(s)] = 1
        labels = torch.where(mask.bool(), ids, torch.full_like(ids, IGNORE_INDEX))
        dec_in = torch.cat([torch.full_like(ids[:, :1], self.start_id), ids[:, :-1]], 1)
        dec_in = torch.where(dec_in == IGNORE_INDEX, torch.full_like(dec_in, self.pad_id), dec_in)
        return Prepared({"input_ids": src, "attention_mask": src_mask, "decoder_input_ids": dec_in,
                         "decoder_attention_mask": mask, "labels": labels}, int(mask.sum()))


_CJK = re.compile(r"^[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]$")


def chinese_word_starts(tokens: list[str]) -> list[bool]:
    """For one sequence of tokens: True where a token starts a word. Runs of single Chinese
    characters are grouped into words by jieba; other tokens follow WordPiece (``##`` continues)."""
    import jieba

    starts = [not t.startswith("##") for t in tokens]
    i = 0
    while i < len(tokens):
        if not _CJK.match(tokens[i]):
            i += 1
            continue
        j = i
        while j < len(tokens) and _CJK.match(tokens[j]):
            j += 1
        pos = i
        for word in jieba.cut("".join(tokens[i:j]), HMM=False):
            for k in range(1, len(word)):
                starts[pos + k] = False
            pos += len(word)
        i = j
    return starts


def word_start_fn(vocab: list[str], chinese: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """ids [B, T] → bool [B, T] word starts, for whole-word masking with a WordPiece vocabulary."""
    if not chinese:
        table = torch.tensor([not t.startswith("##") for t in vocab])
        return lambda ids: table[ids]

    def starts(ids: torch.Tensor) -> torch.Tensor:
        return torch.tensor([chinese_word_starts([vocab[i] for i in row]) for row in ids.tolist()])
    return starts
