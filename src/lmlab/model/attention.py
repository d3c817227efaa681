"""Scaled dot-product attention, multi-head attention, and the key/value cache.

Shape legend (used in every comment of the model package):
    B batch · T target (query) length · S source (key) length · H query heads ·
    K key/value heads (K divides H; K < H is grouped-query attention) · D head dim d_k ·
    C model width d_model (= H·D unless the config's head_dim sets D apart)

Attention(Q, K, V) = softmax(QKᵀ / √d_k + M) V      (Vaswani et al. 2017, eq. 1)

Two variants of the projections: Qwen2 biases q, k and v only (`qkv_bias`); Qwen3 normalises
each head's q and k over its D channels before the rotation, q ← Norm(q), k ← Norm(k)
(`qk_norm`), which keeps attention logits from growing in training (Dehghani et al. 2023).

`scaled_dot_product_attention` writes the formula out and returns the weights (for
visualisation); the fused path calls `torch.nn.functional.scaled_dot_product_attention`, except
where torch's kernel is the slower one (training in half precision on CPU with short keys:
`fused_grad_is_slow`). The two are tested equal in forward and gradients. The fused call is given
what torch's fast kernels take, so that none falls back to the formula kernel on CUDA: `is_causal`
instead of a causal mask, no mask at all without padding, and on CUDA H key/value heads where the
flash kernel (the one that takes K < H) cannot run (`lmlab.machine.attention_takes_gqa`). Masks are
boolean, True where a query may attend to a key, broadcastable to [B, H, T, S]. A query row that
may attend to nothing (a fully padded sequence) gets zero output, not NaN, on both paths.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lmlab import machine
from lmlab.model.config import TransformerConfig
from lmlab.model.linear import Linear, active_pack, linear
from lmlab.model.norm import make_norm
from lmlab.model.unpad import Unpadding


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(QKᵀ/√d_k + M)·V. q: [B, H, T, D], k, v: [B, H, S, D] → ([B, H, T, D], [B, H, T, S])."""
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # [B, H, T, S]
    if attn_mask is not None:
        # M = 0 where allowed, −∞ where not (the dtype's most negative finite value, so that
        # exp() underflows to exactly 0 without producing inf − inf).
        scores = scores.masked_fill(~attn_mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1)  # [B, H, T, S]
    if attn_mask is not None:
        empty = ~attn_mask.any(dim=-1, keepdim=True)  # query rows that may attend to nothing
        if empty.any():
            weights = weights.masked_fill(empty, 0.0)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights  # [B, H, T, D], [B, H, T, S]


# Keys up to this many: torch's fused CPU kernel differentiates half-precision attention several
# times slower than the formula written out (bf16, 12 heads of 32, 1,344 tokens a batch, forward +
# backward: 75 vs 11 ms at 16 keys, 63 vs 15 at 42, 44 vs 25 at 128, 33 vs 46 at 256;
# benchmarks/bench_unpad.py --attention). Its forward alone is the faster one, and so is float32.
FORMULA_GRAD_MAX_KEYS = 128


def fused_grad_is_slow(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Training in bf16/fp16 on CPU with short keys: the formula computes the same attention faster."""
    if not q.requires_grad or q.device.type != "cpu" or k.size(-2) > FORMULA_GRAD_MAX_KEYS:
        return False
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype
    return dtype in (torch.bfloat16, torch.float16)


def causal_mask(t: int, s: int, device: torch.device | None = None) -> torch.Tensor:
    """[T, S] boolean: query i (the last T of S positions) may see keys 0 … S−T+i."""
    offset = s - t
    return torch.arange(s, device=device)[None, :] <= torch.arange(offset, s, device=device)[:, None]


class KVCache:
    """Preallocated keys and values for incremental decoding.

    Self-attention entries are one tensor per layer, ``kv[layer]`` [2, B, K, S_max, D] (keys,
    then values, so that a decode step writes both with one copy; ``k[layer]`` and ``v[layer]``
    are its two halves), filled up to `length`; every layer writes at the same offset and the
    model calls `advance(T)` after a forward pass. Cross-attention keys and values of the
    encoder memory are computed once and kept in `cross`.

    The cache may hold a wider dtype than the model: attention then runs in the cache's dtype
    (queries are cast up, the output back down). `for_model` does so for half-precision models on
    a CPU whose fused attention kernel is slower in bf16 than in float32 for one query against a
    long cache (up to 7×, without AMX: `machine.bf16_attention`). With AMX the cache keeps the
    model's bf16 (the keys and values are bf16 products anyway), 2× faster than float32 there.
    """

    def __init__(self, n_layers: int, batch_size: int, n_kv_heads: int, max_len: int, d_head: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = (2, batch_size, n_kv_heads, max_len, d_head)
        # uninitialised: only positions below `length` are ever read, and each is written first
        self.kv = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.cross: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layers
        self.length = 0
        self.max_len = max_len

    @property
    def k(self) -> list[torch.Tensor]:
        return [kv[0] for kv in self.kv]  # [B, K, S_max, D] per layer

    @property
    def v(self) -> list[torch.Tensor]:
        return [kv[1] for kv in self.kv]

    @classmethod
    def for_model(cls, cfg: TransformerConfig, batch_size: int, max_len: int | None = None,
                  dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> KVCache:
        """A cache for a model whose activations are `dtype` (float32 entries for half precision on a
        CPU, unless it is bf16 where bf16 attention is the faster)."""
        n = cfg.decoder_layers if cfg.arch == "encoder-decoder" else cfg.n_layers
        if torch.device(device).type == "cpu" and dtype in (torch.bfloat16, torch.float16):
            if not (dtype == torch.bfloat16 and machine.detect().bf16_attention):
                dtype = torch.float32
        return cls(n, batch_size, cfg.kv_heads, max_len or cfg.max_seq_len, cfg.d_head, dtype, device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v: [B, K, T, D] at positions length … length+T; return all keys so far."""
        end = self.length + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len {self.max_len}")
        keys, values = self.kv[layer]
        # narrow + copy_ rather than slice assignment: the same copy, without Python's indexing machinery
        keys.narrow(2, self.length, k.size(2)).copy_(k)
        values.narrow(2, self.length, v.size(2)).copy_(v)
        return keys.narrow(2, 0, end), values.narrow(2, 0, end)  # [B, K, S, D]

    def advance(self, t: int) -> None:
        self.length += t

    def reorder(self, index: torch.Tensor) -> None:
        """Rows of the self-attention entries ← rows `index` [B] (beam search; cross-attention
        keys are equal within a beam group, so they need no permutation)."""
        self.kv = [kv.index_select(1, index) for kv in self.kv]


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head₁ … head_H)·Wᴼ, headᵢ = Attention(QWᵢQ, KWᵢK, VWᵢV).

    Self-attention when `memory` is None, cross-attention (queries from x, keys and values
    from the encoder memory) otherwise.
    """

    def __init__(self, cfg: TransformerConfig, cross: bool = False):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.d_head = cfg.n_heads, cfg.kv_heads, cfg.d_head
        self.cross = cross
        self.impl = cfg.attention_impl
        self.dropout_p = cfg.attn_dropout
        c, qkv_bias = cfg.d_model, cfg.bias or cfg.qkv_bias
        self.q = Linear(c, self.n_heads * self.d_head, bias=qkv_bias)
        self.k = Linear(c, self.n_kv_heads * self.d_head, bias=qkv_bias)
        self.v = Linear(c, self.n_kv_heads * self.d_head, bias=qkv_bias)
        self.o = Linear(self.n_heads * self.d_head, c, bias=cfg.bias)
        self.q_norm = make_norm(cfg, self.d_head) if cfg.qk_norm else None
        self.k_norm = make_norm(cfg, self.d_head) if cfg.qk_norm else None

    def _split(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, heads, self.d_head).transpose(1, 2)  # [B, T, heads·D] → [B, heads, T, D]

    def _fused_qkv(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[Wq; Wk; Wv] and [bq; bk; bv] (built per call: autograd reaches the three parameters)."""
        w = torch.cat((self.q.weight, self.k.weight, self.v.weight))
        b = None if self.q.bias is None else torch.cat((self.q.bias, self.k.bias, self.v.bias))
        return w, b

    def _project_qkv(self, x: torch.Tensor, unpadded: Unpadding | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # One GEMM for Q, K and V (as GPT-2's c_attn) computes the same three products faster
        # than three calls; the parameters stay separate, named as in the paper. A decode keeps
        # the concatenation in its packed weights, whose lifetime is that of weights that cannot
        # change (one generation, or a server's model); a version-counter key would not do:
        # torch's fused AdamW updates parameters without bumping their version.
        pack = active_pack()
        if pack is not None and not torch.is_grad_enabled():
            w = pack.stacked((self.q.weight, self.k.weight, self.v.weight))
            b = None if self.q.bias is None else pack.stacked((self.q.bias, self.k.bias, self.v.bias))
        else:
            w, b = self._fused_qkv()
        qkv = linear(x, w, b)  # [B, T, (H + 2K)·D]
        if unpadded is not None:  # [N, (H + 2K)·D] → [B, T, (H + 2K)·D]: each sequence's rows side by side
            qkv = unpadded.pad(qkv)
        kv = self.n_kv_heads * self.d_head
        return qkv.split((self.n_heads * self.d_head, kv, kv), dim=-1)

    def forward(
        self,
        x: torch.Tensor,  # [B, T, C]
        memory: torch.Tensor | None = None,  # [B, S, C] encoder output (cross-attention)
        attn_mask: torch.Tensor | None = None,  # bool, broadcastable to [B, H, T, S]
        is_causal: bool = False,  # a causal mask with T == S, without building it
        rotary=None,  # (RotaryEmbedding, positions) for RoPE
        cache: KVCache | None = None,
        layer: int = 0,
        need_weights: bool = False,
        unpadded: Unpadding | None = None,  # x holds only the real tokens, [N, C] (unpad.py)
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if memory is None:
            q, k, v = self._project_qkv(x, unpadded)
            q, k, v = self._split(q, self.n_heads), self._split(k, self.n_kv_heads), self._split(v, self.n_kv_heads)
            if self.q_norm is not None:  # over D, per head and position
                q, k = self.q_norm(q), self.k_norm(k)
            if rotary is not None:
                rope, positions = rotary
                q, k = rope.rotate(q, positions), rope.rotate(k, positions)
            dtype = v.dtype  # the projections' (bf16 under autocast, whatever the residual stream's)
            if cache is not None:
                k, v = cache.update(layer, k, v)  # [B, K, S, D], S = cached + T
                q = q.to(k.dtype)  # a no-op unless the cache is wider than the model
        else:
            q = self._split(self.q(x), self.n_heads)  # [B, H, T, D]
            dtype = q.dtype
            if self.q_norm is not None:
                q = self.q_norm(q)
            if cache is not None and cache.cross[layer] is not None:
                k, v = cache.cross[layer]
            else:
                k = self._split(self.k(memory), self.n_kv_heads)  # [B, K, S, D]
                v = self._split(self.v(memory), self.n_kv_heads)
                if self.k_norm is not None:
                    k = self.k_norm(k)
                if cache is not None:
                    cache.cross[layer] = (k, v)

        dropout_p = self.dropout_p if self.training else 0.0
        weights = None
        if self.impl == "formula" or need_weights or fused_grad_is_slow(q, k):
            if self.n_kv_heads != self.n_heads:  # each key/value head serves H/K query heads
                k = k.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
                v = v.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
            if is_causal:
                attn_mask = causal_mask(q.size(2), k.size(2), q.device)
            out, weights = scaled_dot_product_attention(q, k, v, attn_mask, dropout_p)
        else:
            gqa = self.n_kv_heads != self.n_heads
            if gqa and q.device.type == "cuda" and not machine.detect().attention_takes_gqa(
                    q.device, q.dtype, attn_mask is not None):
                # the memory-efficient kernel needs H key/value heads; without them torch would
                # fall back to the formula kernel, which holds the whole [B, H, T, S] score matrix
                k = k.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)  # [B, H, S, D]
                v = v.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
                gqa = False
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, enable_gqa=gqa,
            )  # [B, H, T, D]
        b, _, t, _ = out.shape
        out = out.to(dtype).transpose(1, 2).reshape(b, t, self.n_heads * self.d_head)  # [B, T, H·D]
        if unpadded is not None:
            out = unpadded.unpad(out)  # [N, H·D]
        return self.o(out), weights
