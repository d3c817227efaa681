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

Each product is a `_Product` of its route (`FusedStep`). The step writes q, k, v and the FFN's
hidden activations into buffers made once per cache (`_Workspace`), with the views of them that
attention reads: a one-token step is short enough that allocating those tensors and taking ~8
views per layer afresh at every step costs ~5 % of it (6 layers, d_model 384, batch 1).
Float32 results equal the model's path up to summation order; bf16 ones round once per fused
product instead of twice (both tested against the model's path and transformers).

Not covered (the caller keeps the model's path): encoder–decoders, post-norm layers, the copy
head, a model in training mode, with forward hooks or a forward replaced on a module (which
must see every call).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from lmlab import machine
from lmlab.model.attention import KVCache
from lmlab.model.heads import LMHead
from lmlab.model.linear import PackedWeights
from lmlab.model.position import LearnedPositions, SinusoidalPositions
from lmlab.model.transformer import Transformer

_LP = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
_MKL_LINEAR = getattr(torch.ops.mkl, "_mkl_linear", None) if torch.backends.mkl.is_available() else None
ROUTES = ("onednn", "blas", "plain")
# each activation in place (on a product's fresh output), and as oneDNN's post-op: (attr, algorithm)
_IN_PLACE = {"relu": torch.relu_, "gelu": torch._C._nn.gelu_, "silu": torch._C._nn.silu_,
             "gelu_tanh": functools.partial(torch._C._nn.gelu_, approximate="tanh")}
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


def _norm(module: nn.Module | None):
    """LayerNorm as one `torch.layer_norm` call (F.layer_norm's Python checks cost a tenth of a
    one-row decode step's norms); any other norm (RMSNorm) is its module."""
    if not isinstance(module, nn.LayerNorm):
        return module
    shape, weight, bias, eps = module.normalized_shape, module.weight, module.bias, module.eps
    return lambda x: torch.layer_norm(x, shape, weight, bias, eps)


class _Product:
    """x [B, I] · Wᵀ + b on the "blas" and "plain" routes: addmm on Wᵀ (W's transposed view, what
    F.linear does), written into `out` where one is given; `add` adds it to the residual in place.
    Each is one or two Python calls around its kernel: at batch 1 a call more per product costs ~1 %."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, activation: str):
        self.in_features = weight.size(1)
        self.wt, self.b = weight.t(), bias
        self.act_ = _IN_PLACE[activation]

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return torch.mm(x, self.wt, out=out) if self.b is None else torch.addmm(self.b, x, self.wt, out=out)

    def act(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """φ(x·Wᵀ + b)."""
        return self.act_(self(x, out))

    def add(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """r + x·Wᵀ + b, in r (the residual stream, which nothing else holds)."""
        r.addmm_(x, self.wt)
        return r if self.b is None else r.add_(self.b)

    def mul(self, x: torch.Tensor, r: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(x·Wᵀ + b) ⊙ r."""
        return self(x, out).mul_(r)


class _MklProduct(_Product):
    """The "blas" route for a batch of `rows` rows decoded long enough to repay packing: MKL's copy
    of W packed for that row count (``torch.ops.mkl._mkl_linear``, equal to addmm): a 6-layer
    d_model-384 step at batch 8 takes 2.5 ms instead of 3.4 (Xeon-AMX-2, BENCHMARKS.md)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, activation: str, rows: int):
        super().__init__(weight, bias, activation)
        self.w, self.rows = weight, rows
        self.packed = torch.ops.mkl._mkl_reorder_linear_weight(weight, rows)

    def __call__(self, x, out=None):
        y = _MKL_LINEAR(x, self.packed, self.w, self.b, self.rows)
        return y if out is None else out.copy_(y)

    def add(self, x, r):
        return r.add_(self(x))


class _OneDnnProduct(_Product):
    """The "onednn" route: oneDNN's packed copy of W, the activation or the residual fused into the
    product as a post-op (a oneDNN call costs ~15 µs before any arithmetic, so fusing saves calls)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, activation: str, pack: PackedWeights):
        super().__init__(weight, bias, activation)
        packed = pack.packed(weight)
        self.w = weight if packed is None else packed  # _linear_pointwise multiplies plain weights too
        self.attr, self.algorithm = _POST_OPS[activation]

    def __call__(self, x, out=None):
        y = _LP(x, self.w, self.b, "none", [], "")
        return y if out is None else out.copy_(y)

    def act(self, x, out=None):
        return _LP(x, self.w, self.b, self.attr, [], self.algorithm)

    def add(self, x, r):
        return _LP.binary(x, r, self.w, self.b, "add")

    def mul(self, x, r, out=None):
        return _LP.binary(x, r, self.w, self.b, "mul")


class _Workspace:
    """What a step writes into and reads from, made once per cache (and again when a beam search
    reorders it): one buffer for the QKV product of every layer, with its views as attention takes
    them; one for the FFN's hidden activations; each layer's keys and values [B, K, S_max, D]."""

    def __init__(self, step: FusedStep, cache: KVCache, b: int, dtype: torch.dtype, device: torch.device):
        self.kv, self.rows = cache.kv, b  # the list: a reorder replaces it
        h, k, d = step.n_heads, step.n_kv_heads, step.d_head
        self.qkv = torch.empty(b, (h + 2 * k) * d, dtype=dtype, device=device)
        self.q = self.qkv[:, :h * d].view(b, h, 1, d)
        self.k = self.qkv[:, h * d:(h + k) * d].view(b, k, 1, d)
        self.v = self.qkv[:, (h + k) * d:].view(b, k, d)
        self.new_kv = self.qkv[:, h * d:].view(b, 2, k, d).transpose(0, 1)  # [2, B, K, D]: a cache slot
        self.hidden = torch.empty(b, step.d_ff, dtype=dtype, device=device)
        self.gate = torch.empty_like(self.hidden) if step.gated else None
        self.keys = [kv[0] for kv in cache.kv]  # [B, K, S_max, D] per layer
        self.values = [kv[1] for kv in cache.kv]


class FusedStep:
    """`step(ids, cache)` → logits [B, V] of one new token per row, the cache advanced by one.

    Built per generation from a model in eval mode whose weights do not change while it lives;
    `pack` holds the weights in the layout of the chosen products (shared with the model's own
    path, which packs the same weights for the prefill).

    The products take one of three routes (`route`), chosen by dtype, device and machine:
      "blas"    float32 on an Intel CPU (`machine.blas_float32`): addmm(b, x, Wᵀ) on W's
                transposed view, the fastest one-row product torch offers there (MKL: 8 µs for a
                384×384 weight against 22 µs for oneDNN's packed one, most of it the call; a
                contiguous Wᵀ reads no faster and costs a copy of every weight per generation),
                written into the step's buffers and the residual added in place. With ``rows`` (a
                batch of several rows), MKL's weights packed for that row count (`_MklProduct`);
      "onednn"  the machine's `packed_dtypes` (bf16 where native; float32 on other CPUs):
                packed weights, activation and residual fused into the product (`_OneDnnProduct`);
      "plain"   anything else (CUDA, bf16 emulated): addmm as "blas" without packing, which is
                F.linear's own kernel, then the activation and the add.
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
        self.rows = rows if rows is not None and rows > 1 and route == "blas" and _MKL_LINEAR is not None else None
        self.n_heads, self.n_kv_heads, self.d_head, self.d_ff = cfg.n_heads, cfg.kv_heads, cfg.d_head, cfg.d_ff
        self.gated = cfg.activation == "swiglu"
        activation = "silu" if self.gated else cfg.activation
        self.products: list[_Product] = []  # those of a step, in order

        def product(weight: torch.Tensor, bias: torch.Tensor | None) -> _Product:
            if route == "onednn":
                made = _OneDnnProduct(weight, bias, activation, pack)
            elif self.rows is not None:
                made = _MklProduct(weight, bias, activation, self.rows)
            else:
                made = _Product(weight, bias, activation)
            self.products.append(made)
            return made

        embed = model.embed
        self.tokens, self.scale = embed.tokens.weight, embed.scale
        self.table = None  # [P, C] absolute positions
        if isinstance(embed.positions, LearnedPositions):
            self.table = embed.positions.weight
        elif isinstance(embed.positions, SinusoidalPositions):
            self.table = embed.positions.table
        self.embed_norm = _norm(embed.norm)
        self.rope = model.rope
        self.layers = []
        for layer in model.decoder.layers:
            a, f = layer.self_attn, layer.ffn
            qkv = pack.stacked((a.q.weight, a.k.weight, a.v.weight))
            qkv_bias = None if a.q.bias is None else pack.stacked((a.q.bias, a.k.bias, a.v.bias))
            self.layers.append((_norm(layer.attn_norm), product(qkv, qkv_bias), a.q_norm, a.k_norm,
                                product(a.o.weight, a.o.bias), _norm(layer.ffn_norm),
                                product(f.w_gate.weight, f.w_gate.bias) if f.gated else None,
                                product(f.w_1.weight, f.w_1.bias), product(f.w_2.weight, f.w_2.bias)))
        self.final_norm = _norm(model.decoder.norm)
        proj = model.head.proj
        self.vocab = product(proj.matrix(embed.tokens.weight), proj.bias)
        self.dtype, self.device = p.dtype, p.device
        self.workspace: _Workspace | None = None

    def step(self, ids: torch.Tensor, cache: KVCache, positions: torch.Tensor | None = None,
             attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ids [B, 1] → logits [B, V]. positions [B, 1] per row (left padding; default: the cache's
        length for every row); attn_mask bool [B, 1, 1, S] (S = cache length + 1), True where a
        key may be attended to (None: every cached key)."""
        b, past = ids.size(0), cache.length
        ws = self.workspace
        if ws is None or ws.kv is not cache.kv or ws.rows != b:
            ws = self.workspace = _Workspace(self, cache, b, self.dtype, self.device)
        end = past + 1
        x = torch.embedding(self.tokens, ids.view(b))  # [B, C]: the residual stream, one row per sequence
        if self.scale != 1.0:
            x.mul_(self.scale)
        if self.table is not None:
            x.add_(self.table[past] if positions is None else self.table[positions.view(b)])  # [C] | [B, C]
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        if self.rope is not None and positions is None:
            positions = torch.full((b, 1), past, dtype=torch.long, device=ids.device)
        gqa = self.n_kv_heads != self.n_heads
        cast = cache.kv[0].dtype != x.dtype  # a float32 cache under a bf16 model (bf16 not native)
        sdpa = F.scaled_dot_product_attention
        for (norm_1, qkv, q_norm, k_norm, o, norm_2, gate, w_1, w_2), kv, keys, values in zip(
                self.layers, cache.kv, ws.keys, ws.values):
            qkv(norm_1(x), ws.qkv)
            q = ws.q  # [B, H, 1, D]
            if q_norm is None and self.rope is None:
                kv.select(3, past).copy_(ws.new_kv)
            else:
                k = ws.k
                if q_norm is not None:
                    q, k = q_norm(q), k_norm(k)
                if self.rope is not None:
                    q, k = self.rope.rotate(q, positions), self.rope.rotate(k, positions)
                keys.select(2, past).copy_(k.view(b, self.n_kv_heads, self.d_head))
                values.select(2, past).copy_(ws.v)
            a = sdpa(q.to(keys.dtype) if cast else q, keys.narrow(2, 0, end), values.narrow(2, 0, end),
                     attn_mask=attn_mask, enable_gqa=gqa)  # [B, H, 1, D]
            x = o.add((a.to(x.dtype) if cast else a).reshape(b, -1), x)
            h = norm_2(x)
            u = w_1.mul(h, gate.act(h, ws.gate), ws.hidden) if gate is not None else w_1.act(h, ws.hidden)
            x = w_2.add(u, x)
        cache.advance(1)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return self.vocab(x)
