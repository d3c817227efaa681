"""Attention maps of a model for one input: weights per layer and head, tokens on both axes.

`attention_maps` runs the model once with ``output_attentions=True`` (`Transformer.forward`
returns, per layer, ``{"self": [B, H, T, S]}`` and for a decoder layer of an encoder–decoder
also ``"cross"``). For an encoder–decoder only the encoder's self-attention over the input is
shown (the decoder needs a target). Row t of a map is the distribution of query t over the
keys (each row sums to 1; a causal model puts zeros above the diagonal).

With ``bucket=True`` (the server's ``/v1/attention``) the input is right-padded to a bucket
length (`lmlab.model.linear.bucket_length`), the padding masked as keys, and the maps are
cut back to the tokens: a server then runs a bounded set of shapes whatever texts it is sent
(each new shape of a bf16 product is a oneDNN kernel that stays in memory). No real query sees
a padding key, so the maps are those of the unpadded input.

Token labels are the input text each token covers (from the tokenizer's offsets), so byte-level
pieces of one Chinese character or emoji show that character instead of mojibake (the second
and later pieces of one character in parentheses).

CLI: ``lmlab viz attention MODEL_DIR --text TEXT --out DIR`` writes ``attention.json`` (the
same data the server's ``/v1/attention`` returns) and one PNG per layer (a grid of heads).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmlab.errors import ConfigError


@dataclass
class AttentionMaps:
    tokens: list[str]  # display label per position
    token_ids: list[int]
    maps: list[dict[str, Any]]  # {"layer": i, "kind": "self", "weights": np.ndarray [H, T, S]}
    truncated: bool

    def to_json(self, digits: int = 4) -> dict[str, Any]:
        return {"tokens": self.tokens, "token_ids": self.token_ids, "truncated": self.truncated,
                "layers": [{"layer": m["layer"], "kind": m["kind"],
                            "weights": np.round(m["weights"], digits).tolist()} for m in self.maps]}


def token_labels(tokenizer, text: str, ids: list[int]) -> list[str]:
    """Text each token covers; a token that covers the same character(s) as the one before (a
    later byte of a multi-byte character) is shown in parentheses: 猫 (猫) (猫)."""
    enc = tokenizer.backend.encode(text, add_special_tokens=False)
    labels, prev = [], None
    for tid, span in zip(ids, enc.offsets):
        piece = text[span[0]:span[1]]
        label = piece if piece.strip() else (piece.replace(" ", "␣").replace("\n", "↵") or f"#{tid}")
        labels.append(f"({label})" if span == prev and piece else label)
        prev = span
    return labels


def attention_maps(model, tokenizer, text: str, max_tokens: int = 128, bucket: bool = False) -> AttentionMaps:
    """Run `model` on `text` (at most `max_tokens` tokens, the rest cut) and return its maps;
    `bucket`: pad the input to a bucket length (module docstring)."""
    import torch

    from lmlab.model.linear import bucket_length

    if not isinstance(text, str) or not text.strip():
        raise ConfigError("text: give a non-empty text")
    ids = tokenizer.encode(text, add_special_tokens=False)
    labels = token_labels(tokenizer, text, ids)
    limit = min(max_tokens, model.config.max_seq_len)
    truncated = len(ids) > limit
    ids, labels = ids[:limit], labels[:limit]
    t = len(ids)
    width = bucket_length(t, limit) if bucket else t
    x = torch.zeros(1, width, dtype=torch.long, device=next(model.parameters()).device)  # [1, T] + padding
    x[0, :t] = torch.tensor(ids, dtype=torch.long)
    mask = (torch.arange(width, device=x.device) < t).long()[None]  # [1, T]: 1 = token
    with torch.inference_mode():
        if model.config.arch == "encoder-decoder":
            _, layers = model.encode(x, mask, need_weights=True)
        else:
            layers = model(x, attention_mask=mask if width > t else None, output_attentions=True).attentions
    maps = []
    for i, layer in enumerate(layers or []):
        for kind, w in layer.items():
            if w is not None:
                maps.append({"layer": i, "kind": kind, "weights": w[0, :, :t, :t].float().cpu().numpy()})  # [H, T, S]
    if not maps:
        raise ConfigError("the model returned no attention weights")
    return AttentionMaps(labels, ids, maps, truncated)


def attention_command(model_dir: str, text: str, out: str, max_tokens: int = 64, overwrite: bool = False) -> str:
    """CLI: JSON + a PNG per layer (heads in a grid) into `out` (written atomically)."""
    from lmlab.artifacts import ArtifactWriter, write_json
    from lmlab.generate import load_for_generation
    from lmlab.fonts import plot_fonts

    model, tok = load_for_generation(model_dir)
    maps = attention_maps(model.eval(), tok, text, max_tokens=max_tokens)
    families = plot_fonts("".join(maps.tokens))
    with ArtifactWriter(out, kind="lmlab-viz-attention", overwrite=overwrite) as w:
        write_json(w.path / "attention.json", {"model": str(model_dir), "text": text, **maps.to_json()})
        for m in maps.maps:
            _plot_heads(m["weights"], maps.tokens, f"layer {m['layer']} ({m['kind']})", families,
                        w.path / f"layer{m['layer']:02d}_{m['kind']}.png")
    return f"{len(maps.maps)} attention maps of {len(maps.tokens)} tokens → {out}"


def _plot_heads(weights: np.ndarray, tokens: list[str], title: str, families: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, t = weights.shape[0], weights.shape[1]
    cols = min(h, 4)
    rows = (h + cols - 1) // cols
    size = max(3.0, 0.28 * t + 1.5)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False, dpi=100)
    for k, ax in enumerate(axes.flat):
        if k >= h:
            ax.axis("off")
            continue
        ax.imshow(weights[k], cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"head {k}", fontsize=9)
        ax.set_xticks(range(weights.shape[2]), tokens[:weights.shape[2]], rotation=90, fontsize=7, fontfamily=families)
        ax.set_yticks(range(t), tokens[:t], fontsize=7, fontfamily=families)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
