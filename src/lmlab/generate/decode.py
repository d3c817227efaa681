"""`DecodeLoop`: batched incremental decoding with left padding and a preallocated KV cache.

Decoder-only (GPT, Llama): prompts of different lengths are LEFT-padded to a common length T
so that every row's next token sits in the last column. Padded rows need two things to give
exactly the tokens they would give alone:

* an attention mask [B, S] (1 = token, 0 = padding) over past + current positions, so that no
  query attends to a padding key (a preallocated [B, S_max] buffer, sliced, never rebuilt);
* position ids counted from each row's first real token: pos = cumsum(mask) − 1 for the
  prompt, then last + 1 per step ([B, 1], incremented in place).

Encoder–decoder (Vaswani, Marian): the source is right-padded and encoded once; the decoder
starts from ``decoder_start_id`` in every row (no decoder padding) and attends to the memory
through the source mask; cross-attention keys and values are cached after the first step. It
never chooses its pad token (Marian's checkpoints ban it through ``bad_words_ids``).

Each step runs the model on one new token per row under ``torch.inference_mode`` with the
cache from ``KVCache.for_model``; the last logits go through the `Sampler`. Rows finish on a
stop token ("stop"), at their ``max_new_tokens`` or the end of the model's context
("length"), or when the consumer calls `finish` (e.g. a stop string matched in the text).
The loop is a generator: a consumer that stops iterating (or closes it) stops the decoding —
no step runs that nobody asked for.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from lmlab.errors import ConfigError
from lmlab.generate.config import GenerationConfig
from lmlab.generate.sampling import Sampler
from lmlab.model import KVCache, Transformer
from lmlab.model.fused_step import FusedStep, unsupported
from lmlab.model.linear import PackedWeights


@dataclass
class TokenEvent:
    index: int  # row of the batch
    token: int  # the token chosen at this step
    finish_reason: str | None  # "stop" (token is a stop token), "length", or None (continues)


class DecodeLoop:
    def __init__(self, model: Transformer, prompts: Sequence[Sequence[int]],
                 configs: GenerationConfig | Sequence[GenerationConfig] | None = None,
                 stop_token_ids: Sequence[Sequence[int]] | None = None,
                 decoder_start_id: int | None = None, pad_id: int | None = None,
                 vocab_limit: int | None = None, pack: PackedWeights | None = None):
        """prompts: token ids per row (the source for an encoder–decoder); configs: one for all
        rows or one per row; stop_token_ids: per row, overriding ``config.stop_token_ids``;
        vocab_limit: the tokenizer's size, when the model's vocabulary is padded beyond it;
        pack: packed weights to reuse (a server's, for a model whose weights never change);
        none = packed afresh for this generation."""
        cfg = model.config
        self.vocab_limit = vocab_limit
        if cfg.head not in ("clm", "seq2seq"):
            raise ConfigError(f"model head {cfg.head!r} does not predict tokens; generation needs a "
                              "decoder (head clm) or an encoder–decoder (head seq2seq)")
        if not prompts:
            raise ConfigError("prompts: give at least one prompt")
        configs = configs or GenerationConfig()
        configs = [configs] * len(prompts) if isinstance(configs, GenerationConfig) else list(configs)
        if len(configs) != len(prompts):
            raise ConfigError(f"configs: {len(configs)} configs for {len(prompts)} prompts")
        self.model, self.configs = model, configs
        self.prompts = [list(p) for p in prompts]
        self.seq2seq = cfg.arch == "encoder-decoder"
        for i, p in enumerate(self.prompts):
            if not p and not self.seq2seq:
                raise ConfigError(f"prompt {i}: is empty; a decoder needs at least one token to condition on "
                                  "(e.g. the tokenizer's bos or eos token)")
            if p and (min(p) < 0 or max(p) >= cfg.vocab_size):
                raise ConfigError(f"prompt {i}: token ids outside [0, {cfg.vocab_size}); "
                                  "does the tokenizer match the model?")
        if stop_token_ids is None:
            stop_token_ids = [c.stop_token_ids or [] for c in configs]
        self.stop_ids = [frozenset(s) for s in stop_token_ids]
        self.pad_id = pad_id if pad_id is not None else (cfg.pad_token_id or 0)
        self.decoder_start_id = None
        if self.seq2seq:
            start = decoder_start_id if decoder_start_id is not None else cfg.pad_token_id
            if start is None:
                raise ConfigError("decoder_start_id: the model config has no pad_token_id to start decoding from; "
                                  "pass decoder_start_id")
            self.decoder_start_id = start
        # an encoder–decoder never writes its pad token (Marian checkpoints ban it with bad_words_ids);
        # unless pad is also a stop token, as eos may be
        self.banned = [self.pad_id] if self.seq2seq and not any(self.pad_id in s for s in self.stop_ids) else []
        ctx = cfg.max_seq_len
        longest = max(len(p) for p in self.prompts)
        if self.seq2seq:
            if longest > ctx:
                raise ConfigError(f"prompt of {longest} tokens exceeds the model's max_seq_len={ctx}")
            room = [ctx - 1] * len(self.prompts)  # the decoder start token takes one position
        else:
            if longest >= ctx:
                raise ConfigError(f"prompt of {longest} tokens leaves no room in the model's "
                                  f"max_seq_len={ctx}; shorten it")
            room = [ctx - len(p) for p in self.prompts]
        self.budget = [min(c.max_new_tokens, r) for c, r in zip(configs, room)]
        self.finish_reasons: list[str | None] = [None] * len(self.prompts)
        self.generated: list[list[int]] = [[] for _ in self.prompts]
        self.stepper: Stepper | None = None
        self.pack = pack

    @property
    def steps(self) -> int:
        """Forward passes run so far (the prefill included)."""
        return self.stepper.steps if self.stepper is not None else 0

    def finish(self, index: int, reason: str) -> None:
        """End row `index` now (no further tokens are reported for it)."""
        if self.finish_reasons[index] is None:
            self.finish_reasons[index] = reason

    @property
    def done(self) -> bool:
        return None not in self.finish_reasons

    def __iter__(self) -> Iterator[list[TokenEvent]]:
        # inference_mode is entered around each computation, never held across a `yield`:
        # it is thread-wide state and must not leak into the consumer's code between steps.
        # One context object serves every step (entered and left in turn).
        b, inference = len(self.prompts), torch.inference_mode()
        with inference:
            sampler = Sampler(self.configs, self.model.config.vocab_size, next(self.model.parameters()).device,
                              self.vocab_limit, self.banned)
            self.stepper = stepper = Stepper(self.model, self.prompts, max(self.budget), self.pad_id,
                                             self.decoder_start_id, self.pack)
            sampler.observe(stepper.first_ids, stepper.first_mask)
            tokens = sampler(stepper.forward(stepper.first_ids))  # [B]
            chosen = tokens.tolist()
        while True:
            events = []
            for i, t in enumerate(chosen):
                if self.finish_reasons[i] is not None:
                    continue
                self.generated[i].append(t)
                if t in self.stop_ids[i]:
                    self.finish_reasons[i] = "stop"
                elif len(self.generated[i]) >= self.budget[i]:
                    self.finish_reasons[i] = "length"
                events.append(TokenEvent(i, t, self.finish_reasons[i]))
            yield events
            if self.done:  # checked after the consumer had its say (it may have finished rows)
                return
            with inference:
                if sampler.observes:
                    sampler.observe(tokens[:, None])
                tokens = sampler(stepper.forward(tokens.view(b, 1)))
                chosen = tokens.tolist()


# new tokens from which a batch's float32 products repay packing the weights for its size: packing the
# 6-layer d_model-384 benchmark model takes 5 ms where the allocator has the memory at hand, 20–60 ms where
# the OS must map it afresh, and saves ~0.9 ms a step at batch 8 (BENCHMARKS.md)
PACK_ROWS_AFTER = 32


class Stepper:
    """One batch of rows on the model: prefill once, then one token per row per `forward`.

    ``first_ids`` [B, T] is what the first call takes (the left-padded prompts, or the decoder
    start tokens of an encoder–decoder) and ``first_mask`` its validity; `forward(ids)` returns
    the logits of the last position [B, V]; `reorder(index)` permutes the rows of the cache
    (beam search), which is valid when the reordered rows share padding (beams of one prompt).
    """

    def __init__(self, model: Transformer, prompts: list[list[int]], max_new_tokens: int, pad_id: int,
                 decoder_start_id: int | None = None, pack: PackedWeights | None = None):
        p = next(model.parameters())
        device, dtype = p.device, p.dtype
        cfg = model.config
        self.model, self.steps = model, 0
        self.pack = pack or PackedWeights()  # weights packed once, reused every step
        # float32 products packed for this batch size: where the generation is long enough to repay
        # the packing, and not under a server's pack (its batches are many and mostly short)
        self.rows = len(prompts) if max_new_tokens >= PACK_ROWS_AFTER and not self.pack.bucket_rows else None
        # The prefill multiplies each weight once. A generation of one token runs it unpacked (a packed
        # copy pays for itself only over repeated products), so it makes no copy at all; a longer one
        # runs it under the pack, which the steps pack and stack [Wq; Wk; Wv] in anyway; a server's
        # pack always (it buckets the row counts of its products: lmlab.model.linear).
        self.prefill_pack = self.pack if self.pack.bucket_rows or max_new_tokens > 1 else contextlib.nullcontext()
        # one-token steps of a decoder: fused kernels (model.fused_step), built at the first such step
        self.fusable, self.fused = False, None
        b, ctx = len(prompts), cfg.max_seq_len
        # a server's pack pads to few lengths (its kernels are built per shape: lmlab.model.linear)
        longest = self.pack.padded_length(max(len(p) for p in prompts), dtype, device, ctx)
        if cfg.arch == "encoder-decoder":
            src = torch.full((b, max(longest, 1)), pad_id, dtype=torch.long, device=device)
            self.src_mask = torch.zeros_like(src)
            for i, ids in enumerate(prompts):  # right padding: the encoder is bidirectional
                src[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
                self.src_mask[i, :len(ids)] = 1
            self.src = src
            with self.pack:
                self.memory, _ = model.encode(src, self.src_mask)  # [B, S, C], once
            self.cache = KVCache.for_model(cfg, b, 1 + max_new_tokens, dtype=dtype, device=device)
            self.first_ids = torch.full((b, 1), decoder_start_id, dtype=torch.long, device=device)
            self.first_mask = None
            self.forward = self._forward_seq2seq
            return
        total = longest + max_new_tokens
        ids = torch.full((b, longest), pad_id, dtype=torch.long, device=device)
        self.mask = torch.ones(b, total, dtype=torch.long, device=device)  # [B, S_max], sliced per step
        for i, p in enumerate(prompts):  # left padding: the next token is always the last column
            ids[i, longest - len(p):] = torch.tensor(p, dtype=torch.long)
            self.mask[i, :longest - len(p)] = 0
        self.first_ids, self.first_mask = ids, self.mask[:, :longest]
        self.cache = KVCache.for_model(cfg, b, total, dtype=dtype, device=device)
        self.fusable = unsupported(model) is None
        if any(len(p) < longest for p in prompts):
            self.positions = (self.first_mask.cumsum(-1) - 1).clamp(min=0)  # [B, T], then [B, 1]
            self.attn_mask = self.mask.bool()[:, None, None, :]  # [B, 1, 1, S_max], sliced per step
            self.forward = self._forward_padded
        else:
            self.forward = self._forward_dense

    def _forward_seq2seq(self, ids: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        with self.pack:
            return self.model(self.src, attention_mask=self.src_mask, decoder_input_ids=ids, memory=self.memory,
                              cache=self.cache).logits[:, -1]

    def _fused(self) -> FusedStep:
        if self.fused is None:
            self.fused = FusedStep(self.model, self.pack, rows=self.rows)
        return self.fused

    @staticmethod
    def _last(ids: torch.Tensor) -> torch.Tensor:
        """The head's positions for `ids` [B, T]: the last one only (prompts are left-padded), as
        transformers' `logits_to_keep=1`: a prefill does not multiply T rows by the vocabulary."""
        last = torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
        last[:, -1] = True
        return last

    def _forward_dense(self, ids: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        if ids.size(1) > 1:
            with self.prefill_pack:
                return self.model(ids, cache=self.cache, head_positions=self._last(ids)).logits
        if self.fusable:
            return self._fused().step(ids, self.cache)
        with self.pack:
            return self.model(ids, cache=self.cache, head_positions=self._last(ids)).logits

    def _forward_padded(self, ids: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        end = self.cache.length + ids.size(1)
        if ids.size(1) == 1 and self.fusable:
            logits = self._fused().step(ids, self.cache, self.positions, self.attn_mask.narrow(3, 0, end))
        else:
            with self.pack if ids.size(1) == 1 else self.prefill_pack:
                logits = self.model(ids, attention_mask=self.mask[:, :end], cache=self.cache,
                                    position_ids=self.positions, head_positions=self._last(ids)).logits
        # a row that ended at the context's end steps on (unread) while others finish: its position stays in range
        self.positions = (self.positions[:, -1:] + 1).clamp_(max=self.model.config.max_seq_len - 1)
        return logits

    def reorder(self, index: torch.Tensor) -> None:
        """Rows of the self-attention cache ← rows `index` [B]."""
        self.cache.reorder(index)
