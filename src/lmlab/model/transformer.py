"""The Transformer: embeddings, the encoder and decoder stacks, and a head.

arch "encoder"          BERT:    x → Embed → N × [self-attn, FFN] → head
arch "decoder"          GPT:     x → Embed → N × [causal self-attn, FFN] → head
arch "encoder-decoder"  Vaswani: src → encoder → memory;
                                 tgt → Embed → N × [causal self-attn, cross-attn(memory), FFN] → head

Embed(x) = E[x]·(√d_model if scaled) + P[pos] (+ segment embedding) (→ LayerNorm for BERT);
rotary positions are applied inside attention instead of being added here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lmlab.model.attention import KVCache, causal_mask
from lmlab.model.config import TransformerConfig
from lmlab.model.heads import PointerGenerator, Pooler, VocabProjection, make_head
from lmlab.model.layers import TransformerLayer
from lmlab.model.norm import make_norm
from lmlab.model.loss import IGNORE_INDEX, cross_entropy, linear_cross_entropy
from lmlab.model.position import LearnedPositions, RotaryEmbedding, SinusoidalPositions
from lmlab.model.unpad import Unpadding


@dataclass
class ModelOutput:
    hidden_states: torch.Tensor  # [B, T, C] last layer (decoder side for encoder-decoder); rows at
    # padding are unspecified
    logits: torch.Tensor | None = None  # per head: [B, T, V] | [N, V] | [B, n_labels] | [B, T, 2]
    pooled: torch.Tensor | None = None  # [B, C] BERT pooler output
    memory: torch.Tensor | None = None  # [B, S, C] encoder output of an encoder-decoder
    attentions: list[dict[str, torch.Tensor]] | None = None  # per layer: {"self": [B, H, T, S], ...}
    cache: KVCache | None = None
    loss: torch.Tensor | None = None  # mean cross-entropy when labels are given


class Embeddings(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.scale = math.sqrt(cfg.d_model) if cfg.scale_embeddings else 1.0
        self.positions = {
            "learned": lambda: LearnedPositions(cfg.max_seq_len, cfg.d_model),
            "sinusoidal": lambda: SinusoidalPositions(cfg.max_seq_len, cfg.d_model, cfg.sinusoidal_layout),
            "rope": lambda: None,
            "none": lambda: None,
        }[cfg.position]()
        self.segments = nn.Embedding(cfg.type_vocab_size, cfg.d_model) if cfg.type_vocab_size else None
        self.norm = make_norm(cfg) if cfg.embedding_norm else None
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.tokens(ids)  # [B, T, C]
        if self.scale != 1.0:
            x = x * self.scale
        if self.positions is not None:
            x = x + self.positions(positions)  # [T, C] or [B, T, C]
        if self.segments is not None:
            x = x + self.segments(torch.zeros_like(ids) if token_type_ids is None else token_type_ids)
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x) if self.training else x


class Stack(nn.Module):
    """N identical layers, then the final norm of pre-norm stacks."""

    def __init__(self, cfg: TransformerConfig, n_layers: int, cross_attention: bool):
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(cfg, cross_attention) for _ in range(n_layers))
        self.norm = make_norm(cfg) if cfg.final_norm else None

    def forward(self, x: torch.Tensor, need_weights: bool = False, **kwargs):
        attentions = []
        for i, layer in enumerate(self.layers):
            x, weights = layer(x, layer=i, need_weights=need_weights, **kwargs)
            attentions.append(weights)
        if self.norm is not None:
            x = self.norm(x)
        return x, (attentions if need_weights else None)


def _padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """[B, S] with 1 for tokens, 0 for padding → bool [B, 1, 1, S], or None if nothing is padded."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :]


class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.config = cfg
        self.embed = Embeddings(cfg)
        self.rope = None
        if cfg.position == "rope":
            llama3 = dict(factor=cfg.rope_factor, low_freq_factor=cfg.rope_low_freq_factor,
                          high_freq_factor=cfg.rope_high_freq_factor,
                          original_max_seq_len=cfg.rope_original_max_seq_len) if cfg.rope_scaling == "llama3" else None
            self.rope = RotaryEmbedding(cfg.d_head, cfg.max_seq_len, cfg.rope_theta, llama3)
        self.encoder = Stack(cfg, cfg.n_layers, cross_attention=False) if cfg.arch != "decoder" else None
        self.decoder = None
        if cfg.arch == "decoder":
            self.decoder = Stack(cfg, cfg.n_layers, cross_attention=False)
        elif cfg.arch == "encoder-decoder":
            self.decoder = Stack(cfg, cfg.decoder_layers, cross_attention=True)
        self.pooler = Pooler(cfg) if cfg.pooler else None
        self.head = make_head(cfg)
        self.pointer = PointerGenerator(cfg) if cfg.copy else None
        self.apply(self._init_weights)
        # GPT-2: scale the init of projections into the residual stream by 1/√(2N).
        for name, p in self.named_parameters():
            if name.endswith(("self_attn.o.weight", "cross_attn.o.weight", "ffn.w_2.weight")):
                nn.init.normal_(p, std=cfg.init_std / math.sqrt(2 * cfg.n_layers))

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, VocabProjection) and module.weight is not None:  # untied
            nn.init.normal_(module.weight, std=std)

    def _check_ids(self, ids: torch.Tensor, name: str) -> None:
        if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"{name} must be integer token ids of shape [batch, length], "
                             f"got {ids.dtype} {tuple(ids.shape)}")
        if not ids.numel():
            return
        low, high = (int(v) for v in ids.aminmax())
        if low < 0 or high >= self.config.vocab_size:
            raise ValueError(f"{name} holds ids outside [0, vocab_size={self.config.vocab_size}): "
                             f"min {low}, max {high}; does the tokenizer match the model?")

    # -- the two halves ------------------------------------------------------------------------

    def _positions(self, t: int, past: int, position_ids: torch.Tensor | None, device) -> torch.Tensor:
        if position_ids is not None:
            return position_ids
        if past + t > self.config.max_seq_len:
            raise ValueError(f"sequence of {past + t} tokens exceeds max_seq_len={self.config.max_seq_len}")
        return torch.arange(past, past + t, device=device)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None, need_weights: bool = False):
        """input_ids: [B, S] → (memory [B, S, C], attentions)."""
        self._check_ids(input_ids, "input_ids")
        positions = self._positions(input_ids.size(1), 0, None, input_ids.device)
        rotary = (self.rope, positions) if self.rope is not None else None
        x = self.embed(input_ids, positions, token_type_ids)
        self_mask = _padding_mask(attention_mask)
        if self_mask is None or not self.config.unpad:
            return self.encoder(x, need_weights=need_weights, self_mask=self_mask, rotary=rotary)
        # the same on the real tokens only (unpad.py): the layers take and give [N, C]
        u = Unpadding.from_mask(attention_mask)
        h, attentions = self.encoder(u.unpad(x), need_weights=need_weights, self_mask=self_mask, rotary=rotary,
                                     unpadded=u)
        return u.pad(h), attentions  # [B, S, C]

    def decode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
               cache: KVCache | None = None, position_ids: torch.Tensor | None = None,
               need_weights: bool = False):
        """input_ids: [B, T] new tokens; attention_mask: [B, past + T] → ([B, T, C], attentions)."""
        self._check_ids(input_ids, "input_ids" if self.config.arch == "decoder" else "decoder_input_ids")
        t = input_ids.size(1)
        past = cache.length if cache is not None else 0
        positions = self._positions(t, past, position_ids, input_ids.device)
        x = self.embed(input_ids, positions)
        pad = _padding_mask(attention_mask)
        if pad is None and past == 0:
            self_mask, is_causal = None, True  # lets the fused kernel skip building the mask
        elif pad is None and t == 1:
            self_mask, is_causal = None, False  # one new query, last in line: it sees every key
        else:
            self_mask = causal_mask(t, past + t, input_ids.device)[None, None]  # [1, 1, T, S]
            if pad is not None:
                self_mask = self_mask & pad
            is_causal = False
        rotary = (self.rope, positions) if self.rope is not None else None
        h, attentions = self.decoder(x, need_weights=need_weights, self_mask=self_mask,
                                     is_causal=is_causal, memory=memory,
                                     memory_mask=_padding_mask(memory_mask), rotary=rotary, cache=cache)
        if cache is not None:
            cache.advance(t)
        return h, attentions

    # -- the whole model -----------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, T] (the source for an encoder-decoder)
        attention_mask: torch.Tensor | None = None,  # [B, T], 1 = token, 0 = padding
        token_type_ids: torch.Tensor | None = None,  # [B, T] segments (BERT)
        decoder_input_ids: torch.Tensor | None = None,  # [B, T'] encoder-decoder targets
        decoder_attention_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,  # precomputed encoder output (generation)
        cache: KVCache | None = None,
        position_ids: torch.Tensor | None = None,
        head_positions: torch.Tensor | None = None,  # [B, T] bool: MLM logits only there → [N, V]
        labels: torch.Tensor | None = None,  # targets per position [B, T] (not shifted here;
        # −100 = ignore), class ids [B], or span (start, end) [B, 2]; logits are then not returned
        # for vocabulary heads, whose loss is computed without materialising them
        output_attentions: bool = False,
    ) -> ModelOutput:
        cfg = self.config
        pooled = None
        if cfg.arch == "encoder":
            h, attentions = self.encode(input_ids, attention_mask, token_type_ids, output_attentions)
            if self.pooler is not None:
                pooled = self.pooler(h)
        elif cfg.arch == "decoder":
            h, attentions = self.decode(input_ids, attention_mask, cache=cache,
                                        position_ids=position_ids, need_weights=output_attentions)
        else:
            if decoder_input_ids is None:
                raise ValueError("an encoder-decoder needs decoder_input_ids")
            enc_attn = None
            if memory is None:
                memory, enc_attn = self.encode(input_ids, attention_mask, need_weights=output_attentions)
            h, attentions = self.decode(decoder_input_ids, decoder_attention_mask, memory, attention_mask,
                                        cache=cache, position_ids=position_ids,
                                        need_weights=output_attentions)
            if output_attentions:
                attentions = (enc_attn or []) + attentions
        if self.pointer is not None:
            logits = self.pointer(self.head(h, self.embed.tokens.weight), h, memory, input_ids, attention_mask)
            loss = None if labels is None else cross_entropy(logits, labels)
        else:
            logits, loss = self._head(h, pooled, attention_mask, head_positions, labels)
        return ModelOutput(hidden_states=h, logits=logits, loss=loss, pooled=pooled,
                           memory=memory if cfg.arch == "encoder-decoder" else None,
                           attentions=attentions, cache=cache)

    def _head(self, h, pooled, attention_mask, head_positions, labels):
        """→ (logits, loss)."""
        cfg, head = self.config, self.head
        if head is None:
            return None, None
        if cfg.head in ("mlm", "clm", "seq2seq"):
            if labels is not None:
                if cfg.head == "mlm":  # score only the masked positions
                    where = labels != IGNORE_INDEX
                    h, labels = h[where], labels[where]
                weight = head.proj.matrix(self.embed.tokens.weight)
                return None, linear_cross_entropy(head.transform(h), weight, head.proj.bias, labels)
            if head_positions is not None:
                h = h[head_positions]  # [N, C]: only where a prediction is scored
            return head(h, self.embed.tokens.weight), None
        if cfg.head == "span":
            logits = head(h)  # [B, T, 2]
            if labels is None:
                return logits, None
            scored = logits
            if attention_mask is not None:  # padding is never an answer: out of the softmax over positions
                scored = logits.masked_fill(~attention_mask.bool()[..., None], torch.finfo(logits.dtype).min)
            loss = (cross_entropy(scored[..., 0], labels[:, 0]) + cross_entropy(scored[..., 1], labels[:, 1])) / 2
            return logits, loss
        # classification: BERT pools [CLS]; a decoder reads its last real token.
        if cfg.arch == "encoder":
            summary = pooled if pooled is not None else h[:, 0]
        else:
            last = (attention_mask.sum(-1) - 1) if attention_mask is not None else \
                torch.full((h.size(0),), h.size(1) - 1, device=h.device)
            summary = h[torch.arange(h.size(0), device=h.device), last]
        logits = head(summary)
        return logits, None if labels is None else cross_entropy(logits, labels)
