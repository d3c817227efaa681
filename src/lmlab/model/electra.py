"""ELECTRA pretraining (Clark et al. 2020): replaced-token detection.

    x̃ = mask(x)                                    the masked-LM corruption (15 % of tokens)
    p_G(·|x̃)_i = softmax(E·MLMHead(G(x̃))_i)        a small generator: a masked LM that reads the
                                                    discriminator's embeddings E
    x̂_i ~ p_G(·|x̃)_i where masked, x_i elsewhere    sampled; no gradient flows through the sample
    D(x̂)_i = w·GELU(W·h_i + b) + b'                 the discriminator's logit that token i was replaced
    loss = L_MLM(G) + λ·mean_i BCE(D(x̂)_i, [x̂_i ≠ x_i])   over the real tokens; λ = 50

A sampled token that happens to equal the original counts as original. The discriminator learns
from every token, not from the 15 % that are masked, which is why ELECTRA gets more out of a small
compute budget than masked LM (the paper's Table 1 and Figure 4). What pretraining keeps
(OUT/model) is the discriminator alone, a plain encoder; the generator and the detection head are
training scaffolding.

The generator shares the discriminator's embeddings (token, position, segment), as in the paper,
and is made smaller by depth: `generator_layers` of the discriminator's layers (the paper
shrinks the width to 1/4–1/2; sharing one embedding table needs the same width here).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.model.heads import MaskedLMHead
from lmlab.model.layers import ACTIVATIONS
from lmlab.model.loss import IGNORE_INDEX, linear_cross_entropy
from lmlab.model.transformer import ModelOutput, Stack, Transformer, _padding_mask


class Electra(nn.Module):
    def __init__(self, discriminator: Transformer, generator_layers: int = 1, rtd_weight: float = 50.0):
        super().__init__()
        cfg = discriminator.config
        if cfg.arch != "encoder" or cfg.head != "none":
            raise ValueError(f"ELECTRA's discriminator is an encoder without a head, got arch={cfg.arch!r} "
                             f"head={cfg.head!r}")
        self.config = cfg  # the kept model's: checkpoints record it
        self.discriminator = discriminator
        self.rtd_weight = rtd_weight
        self.generator = Stack(cfg, generator_layers, cross_attention=False)
        self.generator_head = MaskedLMHead(cfg.replace(tie_embeddings=True))
        self.detector = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), _Activation(cfg.activation),
                                      nn.Linear(cfg.d_model, 1))
        for part in (self.generator, self.generator_head, self.detector):
            part.apply(discriminator._init_weights)
        for name, p in self.generator.named_parameters():  # GPT-2's residual scaling, as in Transformer
            if name.endswith(("self_attn.o.weight", "ffn.w_2.weight")):
                nn.init.normal_(p, std=cfg.init_std / math.sqrt(2 * generator_layers))
        self._tally: dict[str, float] = {}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                replace_u: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> ModelOutput:
        """input_ids: [B, T] masked; labels: [B, T] the original id where masked, −100 elsewhere;
        replace_u: [B, T] uniform draws in [0, 1) that pick each sample (inverse CDF), so a batch
        stays a pure function of its index."""
        disc = self.discriminator
        masked = labels != IGNORE_INDEX
        positions = torch.arange(input_ids.size(1), device=input_ids.device)
        x = disc.embed(input_ids, positions, token_type_ids)
        rotary = (disc.rope, positions) if disc.rope is not None else None
        h, _ = self.generator(x, self_mask=_padding_mask(attention_mask), rotary=rotary)
        g = self.generator_head.transform(h[masked])  # [N, C]
        weight, bias = disc.embed.tokens.weight, self.generator_head.proj.bias
        mlm_loss = linear_cross_entropy(g, weight, bias, labels[masked])
        with torch.no_grad():
            probs = torch.softmax(self.generator_head.proj(g.detach(), weight).float(), dim=-1)  # [N, V]
            cdf = probs.cumsum(-1)
            u = replace_u[masked].to(cdf.dtype).unsqueeze(-1) * cdf[:, -1:]
            sampled = torch.searchsorted(cdf, u).squeeze(-1).clamp(max=probs.size(-1) - 1)
            corrupted = input_ids.masked_scatter(masked, sampled)
            replaced = (corrupted != torch.where(masked, labels, input_ids)).float()  # [B, T]
        out = disc(corrupted, attention_mask, token_type_ids)
        logits = self.detector(out.hidden_states).squeeze(-1)  # [B, T]
        real = attention_mask.bool()
        rtd_loss = F.binary_cross_entropy_with_logits(logits[real].float(), replaced[real])
        loss = mlm_loss + self.rtd_weight * rtd_loss
        if not self.training:
            self._count(mlm_loss, rtd_loss, ((logits[real] > 0).float() == replaced[real]).float().mean(),
                        replaced[real].mean())
        return ModelOutput(hidden_states=out.hidden_states, logits=logits, loss=loss)

    def _count(self, *terms: torch.Tensor) -> None:
        names = ("val_mlm_loss", "val_rtd_loss", "val_rtd_accuracy", "val_replaced_fraction")
        for name, value in zip(names, terms):
            self._tally[name] = self._tally.get(name, 0.0) + float(value)
        self._tally["n"] = self._tally.get("n", 0.0) + 1

    def evaluation_terms(self) -> dict[str, float]:
        """Means of the loss terms over the forward passes in eval mode since the last call."""
        n = self._tally.pop("n", 0.0)
        out = {k: v / n for k, v in self._tally.items()} if n else {}
        self._tally = {}
        return out


class _Activation(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.fn = ACTIVATIONS.get(name, F.gelu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)
