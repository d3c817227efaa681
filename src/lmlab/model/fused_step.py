"""One decoding step of a decoder-only Transformer, as a flat sequence of fused kernels.

Incremental decoding runs the model on one new token per row: the weight products are
matrix–vector products bound by reading the weights, and what remains is the cost of ~25 small
operations per layer, each a Python call through modules, shape checks and views. `FusedStep`
computes exactly what `Transformer.decode` computes for T = 1 with a KV cache, for pre-norm
decoders (GPT-2, Llama, Qwen), with 6 to 8 kernels per layer:

    x = E[ids]·s + P[pos]                                  (learned or sinusoidal positions)
    per layer:
        h = Norm₁(x)
        q, k, v = h·[Wq; Wk; Wv]ᵀ + b                       one GEMM
        (q, k ← Norm(q), Norm(k); rotation by pos)          Qwen3's QK-norm; RoPE
        cache[:, :, :, pos] ← (k, v)                        one copy into [2, B, K, S, D]
        a = softmax(q·Kᵀ/√D + M)·V                          SDPA over the cache (M: padding)
        x = x + a·Wᴼᵀ + bᴼ                                  one GEMM, the residual added by it
        h = Norm₂(x)
        x = x + φ(h·W₁ᵀ + b₁)·W₂ᵀ + b₂                      two GEMMs, φ and the residual fused
          = x + (SiLU(h·W_gateᵀ) ⊙ h·W₁ᵀ)·W₂ᵀ               (SwiGLU: the product fused into W₁'s GEMM)
    logits = Norm_f(x)·Eᵀ (+ b_V)

The fusions are oneDNN post-ops of `torch.ops.mkldnn._linear_pointwise` (an activation, or an
elementwise add/multiply with a second tensor) on the packed weights of a `PackedWeights`;
where oneDNN does not serve the dtype (`machine.packed_dtypes`) or the device, the same steps
run as `F.linear` followed by the activation and the add. Float32 results equal the model's
path up to summation order; bf16 ones round once per fused product instead of twice (both
tested against the model's path and transformers).

Not covered (the caller keeps the model's path): encoder–decoders, post-norm layers, the copy
head, a model in training mode, with forward hooks or a forward replaced on a module (which
must see every call).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmlab import machine
from lmlab.model.attention import KVCache
from lmlab.model.heads import LMHead
from lmlab.model.layers import ACTIVATIONS
from lmlab.model.linear import PackedWeights
from lmlab.model.position import LearnedPositions, SinusoidalPositions
from lmlab.model.transformer import Transformer

_LP = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
_MKL_LINEAR = getattr(torch.ops.mkl, "_mkl_linear", None) if torch.backends.mkl.is_available() else None
# oneDNN's post-op for each activation: (attr, algorithm)
ROUTES = ("onednn", "blas", "plain")
_POST_OPS = {"relu": ("relu", ""), "gelu": ("gelu", "none"), "gelu_tanh": ("gelu", "tanh"), "silu": ("swish", "")}


def unsupported(model: nn.Module) -> str | None:
    """Why `FusedStep` cannot decode `model`, or None if it can."""
    if not isinstance(model, Transformer):
        return "not an lmlab Transformer"
    cfg = model.config
    if cfg.arch != "decoder" or cfg.head != "clm" or not isinstance(model.head, LMHead):
        return "not a decoder-only language model"
    if cfg.norm_position != "pre":
        return "post-norm layers"
    if model.training:
        return "the model is in training mode"
    if cfg.activation not in _POST_OPS and cfg.activation != "swiglu":
        return f"activation {cfg.activation!r}"
    if not isinstance(model.embed.positions, (LearnedPositions, SinusoidalPositions, type(None))):
        return "positions"
    if model.embed.segments is not None:
        return "segment embeddings"
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return "forward hooks are registered"
    for m in model.modules():  # one walk: a generation asks twice (its Stepper, then FusedStep)
        if m._forward_hooks or m._forward_pre_hooks:
            return "forward hooks are registered"
        if "forward" in vars(m):
            return "a module's forward is replaced on the instance"
    return None


class _Norm:
    """LayerNorm as one `torch.layer_norm` call (F.layer_norm's Python checks cost a tenth of a
    one-row decode step's norms); any other norm (RMSNorm) through its module."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.layer_norm = isinstance(module, nn.LayerNorm)
        if self.layer_norm:
            self.shape, self.eps = module.normalized_shape, module.eps
            self.weight, self.bias = module.weight, module.bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer_norm:
            return torch.layer_norm(x, self.shape, self.weight, self.bias, self.eps)
        return self.module(x)


class FusedStep:
    """`step(ids, cache)` → logits [B, V] of one new token per row, the cache advanced by one.

    Built per generation (or once per served model) from a model in eval mode whose weights do
    not change while it lives; `pack` holds the weights in the layout of the chosen products
    (shared with the model's own path, which packs the same weights for the prefill).

    The products take one of three routes (`route`), chosen by dtype, device and machine:
      "blas"    float32 on an Intel CPU (`machine.blas_float32`): addmm(b, x, Wᵀ) on W's
                transposed view, the fastest one-row product torch offers there (MKL: 8 µs for a
                384×384 weight against 22 µs for oneDNN's packed one, most of it the call; a
                contiguous Wᵀ reads no faster and costs a copy of every weight per generation),
                the residual added in place (addmm_: no copy of it into a new tensor). With
                ``rows`` (a batch of several rows, decoded long enough to repay the packing), MKL's
                packed weights for that row count instead (``torch.ops.mkl._mkl_linear``, equal to
                addmm): a 6-layer d_model-384 step at batch 8 takes 5.0 ms instead of 6.0;
      "onednn"  the machine's `packed_dtypes` (bf16 where native; float32 on other CPUs):
                packed weights, activation and residual fused into the product (a oneDNN call
                costs ~15 µs before any arithmetic, so fusing saves calls);
      "plain"   anything else (CUDA, bf16 emulated): F.linear, then the activation and the add.
    """

    def __init__(self, model: nn.Module, pack: PackedWeights, route: str | None = None, rows: int | None = None):
        """route: one of ROUTES to use instead of the dtype's (tests and benchmarks compare them);
        rows: the batch size of every step, for the "blas" route's packed products (None: not packed)."""
        reason = unsupported(model)
        if reason is not None:
            raise ValueError(f"FusedStep: {reason}")
        cfg = model.config
        p = next(model.parameters())
        cpu = p.device.type == "cpu"
        if route is None:
            route = "plain"
            if cpu and p.dtype == torch.float32 and machine.detect().blas_float32:
                route = "blas"
            elif cpu and _LP is not None and p.dtype in machine.detect().packed_dtypes:
                route = "onednn"
        elif route not in ROUTES or (route != "plain" and not cpu) or (route == "onednn" and _LP is None):
            raise ValueError(f"FusedStep: route {route!r} is not available here")
        self.route = route
        self.model, self.pack = model, pack
        self.n_heads, self.n_kv_heads, self.d_head = cfg.n_heads, cfg.kv_heads, cfg.d_head
        self.activation = ACTIVATIONS["silu" if cfg.activation == "swiglu" else cfg.activation]
        self.attr, self.algorithm = _POST_OPS["silu" if cfg.activation == "swiglu" else cfg.activation]
        embed = model.embed
        self.tokens, self.scale = embed.tokens.weight, embed.scale
        self.table = None  # [P, C] absolute positions
        if isinstance(embed.positions, LearnedPositions):
            self.table = embed.positions.weight
        elif isinstance(embed.positions, SinusoidalPositions):
            self.table = embed.positions.table
        self.embed_norm = _Norm(embed.norm) if embed.norm is not None else None
        self.rope = model.rope
        self.products: list[tuple[torch.Tensor, torch.Tensor | None, int]] = []  # (weight, bias, I) of a step
        self.layers = []
        for layer in model.decoder.layers:
            a, f = layer.self_attn, layer.ffn
            qkv = pack.stacked((a.q.weight, a.k.weight, a.v.weight))
            qkv_bias = None if a.q.bias is None else pack.stacked((a.q.bias, a.k.bias, a.v.bias))
            self.layers.append((
                _Norm(layer.attn_norm), *self._weight(qkv, qkv_bias), a.q_norm, a.k_norm,
                *self._weight(a.o.weight, a.o.bias), _Norm(layer.ffn_norm),
                *(self._weight(f.w_gate.weight, f.w_gate.bias) if f.gated else (None, None)),
                *self._weight(f.w_1.weight, f.w_1.bias), *self._weight(f.w_2.weight, f.w_2.bias)))
        self.final_norm = _Norm(model.decoder.norm) if model.decoder.norm is not None else None
        proj = model.head.proj
        self.vocab, self.vocab_bias = self._weight(proj.matrix(embed.tokens.weight), proj.bias)
        self.rows, self.mkl = None, {}  # id of a "blas" weight (Wᵀ) → (MKL's W packed for `rows` rows, W)
        if rows is not None and rows > 1 and self.route == "blas" and _MKL_LINEAR is not None:
            self.rows = rows
            self.mkl = {id(w): (torch.ops.mkl._mkl_reorder_linear_weight(w.t(), rows), w.t())
                        for w, _, _ in self.products}

    def _weight(self, w: torch.Tensor, b: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """W in the route's layout, and b."""
        prepared = w  # [O, I]; _linear_pointwise multiplies plain weights too
        if self.route == "blas":
            prepared = w.t()  # [I, O], a view
        elif self.route == "onednn":
            packed = self.pack.packed(w)
            prepared = w if packed is None else packed
        self.products.append((prepared, b, w.size(1)))
        return prepared, b

    # The products on x [B, I]: x·Wᵀ + b, then φ, or + r, or ⊙ r. One kernel each with oneDNN.
    def _linear(self, x, w, b):
        if self.route == "blas":
            if self.rows is not None:
                return _MKL_LINEAR(x, *self.mkl[id(w)], b, self.rows)
            return torch.mm(x, w) if b is None else torch.addmm(b, x, w)
        if self.route == "onednn":
            return _LP(x, w, b, "none", [], "")
        return F.linear(x, w, b)

    def _linear_act(self, x, w, b):
        if self.route == "onednn":
            return _LP(x, w, b, self.attr, [], self.algorithm)
        return self.activation(self._linear(x, w, b))

    def _linear_add(self, x, w, b, r):
        if self.route == "blas":
            if self.rows is not None:
                return r.add_(_MKL_LINEAR(x, *self.mkl[id(w)], b, self.rows))
            y = r.addmm_(x, w)  # r + x·Wᵀ in place: r is the residual stream, used by nothing else
            return y if b is None else y.add_(b)
        if self.route == "onednn":
            return _LP.binary(x, r, w, b, "add")
        return F.linear(x, w, b).add_(r)

    def _linear_mul(self, x, w, b, r):
        if self.route == "onednn":
            return _LP.binary(x, r, w, b, "mul")
        return self._linear(x, w, b).mul_(r)

    def step(self, ids: torch.Tensor, cache: KVCache, positions: torch.Tensor | None = None,
             attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ids [B, 1] → logits [B, V]. positions [B, 1] per row (left padding; default: the cache's
        length for every row); attn_mask bool [B, 1, 1, S] (S = cache length + 1), True where a
        key may be attended to (None: every cached key)."""
        b, past = ids.size(0), cache.length
        h_d, k_d = self.n_heads * self.d_head, self.n_kv_heads * self.d_head
        x = F.embedding(ids.view(b), self.tokens)  # [B, C]: the residual stream, one row per sequence
        if self.scale != 1.0:
            x = x * self.scale
        if self.table is not None:
            x = x + (self.table[past] if positions is None else self.table[positions.view(b)])  # [C] | [B, C]
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        if self.rope is not None and positions is None:
            positions = torch.full((b, 1), past, dtype=torch.long, device=ids.device)
        gqa = self.n_kv_heads != self.n_heads
        cast = cache.kv[0].dtype != x.dtype  # a float32 cache under a bf16 model (bf16 not native)
        for i, (norm_1, w_qkv, b_qkv, q_norm, k_norm, w_o, b_o, norm_2, w_gate, b_gate, w_1, b_1, w_2, b_2
                ) in enumerate(self.layers):
            kv = cache.kv[i]  # [2, B, K, S_max, D]
            qkv = self._linear(norm_1(x), w_qkv, b_qkv)  # [B, (H + 2K)·D]
            q = qkv[:, :h_d].view(b, self.n_heads, 1, self.d_head)  # [B, H, 1, D]
            if q_norm is None and self.rope is None:
                kv.select(3, past).copy_(qkv[:, h_d:].view(b, 2, self.n_kv_heads, self.d_head).transpose(0, 1))
            else:
                k = qkv[:, h_d:h_d + k_d].view(b, self.n_kv_heads, 1, self.d_head)
                v = qkv[:, h_d + k_d:].view(b, self.n_kv_heads, self.d_head)
                if q_norm is not None:
                    q, k = q_norm(q), k_norm(k)
                if self.rope is not None:
                    q, k = self.rope.rotate(q, positions), self.rope.rotate(k, positions)
                kv[0].select(2, past).copy_(k.view(b, self.n_kv_heads, self.d_head))
                kv[1].select(2, past).copy_(v)
            seen = kv.narrow(3, 0, past + 1)  # [2, B, K, S, D]
            a = F.scaled_dot_product_attention(q.to(kv.dtype) if cast else q, seen[0], seen[1],
                                               attn_mask=attn_mask, enable_gqa=gqa)  # [B, H, 1, D]
            x = self._linear_add((a.to(x.dtype) if cast else a).reshape(b, h_d), w_o, b_o, x)
            h = norm_2(x)
            u = self._linear_mul(h, w_1, b_1, self._linear_act(h, w_gate, b_gate)) if w_gate is not None \
                else self._linear_act(h, w_1, b_1)  # [B, d_ff]
            x = self._linear_add(u, w_2, b_2, x)
        cache.advance(1)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return self._linear(x, self.vocab, self.vocab_bias)
