"""Language-model evaluation: perplexity and bits per byte of a causal LM on a text file.

The text is tokenised whole and scored with a sliding window (the Hugging Face perplexity
recipe): windows of ``block_size`` tokens advance by ``stride``; each window predicts only the
tokens not already predicted by the previous one. With ``stride < block_size`` every token
after the first is scored exactly once, with at least ``block_size − stride`` tokens of left
context; with ``stride == block_size`` the first token of each window is not scored.

    NLL = Σ −ln p(xₜ | x<ₜ) over the N scored tokens
    perplexity = exp(NLL / N)        bits per byte = NLL / ln 2 / bytes(text)
Bits per byte divides by the UTF-8 bytes of the scored text, so it compares models with
different tokenizers (a tokenizer-free figure); perplexity does not.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from lmlab.errors import ArtifactError, ConfigError, DataError


@torch.no_grad()
def sequence_nll(model, ids: list[int], block_size: int, stride: int) -> tuple[float, int]:
    """(Σ NLL in nats, scored tokens) of token ids under a causal model."""
    if not 0 < stride <= block_size:
        raise ConfigError(f"stride={stride} must be in (0, block_size={block_size}]")
    total, count, scored_to = 0.0, 0, 1  # position 0 has no context: never scored
    for begin in range(0, max(1, len(ids) - 1), stride):
        end = min(begin + block_size, len(ids))
        x = torch.tensor([ids[begin:end]])
        labels = x.clone()
        first_new = max(scored_to, begin + 1)  # absolute position of the first new target
        labels[:, : first_new - begin] = -100
        targets = x[:, 1:]
        logits = model(x).logits  # [1, T, V]
        logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, targets[..., None])[..., 0]
        keep = labels[:, 1:] != -100
        total -= float(logp[keep].sum())
        count += int(keep.sum())
        scored_to = end
        if end == len(ids):
            break
    return total, count


def evaluate_lm(model_dir: str | Path, data: str | Path, block_size: int = 0, stride: int = 0,
                max_chars: int = 0) -> dict:
    """Perplexity and bits per byte of MODEL_DIR (a causal LM with its tokenizer) on a text file."""
    from lmlab.model import load_model
    from lmlab.tokenizer.tokenizer import Tokenizer

    from lmlab.model.pretrained import resolve_model_dir

    model_dir, path = resolve_model_dir(model_dir), Path(data)
    model = load_model(model_dir)
    cfg = model.config
    if cfg.arch != "decoder" or cfg.head != "clm":
        raise ArtifactError(f"{model_dir}: perplexity needs a causal LM (arch decoder, head clm), "
                            f"this is arch {cfg.arch!r} head {cfg.head!r}")
    if not (model_dir / "tokenizer").is_dir():
        raise ArtifactError(f"{model_dir}: has no tokenizer/ directory to tokenise {path}")
    tok = Tokenizer.load(model_dir / "tokenizer")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    if max_chars:
        text = text[:max_chars]
    if not text.strip():
        raise DataError(f"{path}: empty text")
    ids = tok.encode(text)
    if len(ids) < 2:
        raise DataError(f"{path}: fewer than 2 tokens; nothing to predict")
    block = block_size or cfg.max_seq_len
    if block > cfg.max_seq_len:
        raise ConfigError(f"block_size={block} exceeds the model's max_seq_len={cfg.max_seq_len}")
    nll, n = sequence_nll(model, ids, block, stride or block // 2 or 1)
    first = tok.decode(ids[:1])  # the unscored first token's bytes are excluded
    n_bytes = len(text.encode("utf-8")) - len(first.encode("utf-8"))
    return {"model": str(model_dir), "data": str(path), "tokens": len(ids), "scored_tokens": n,
            "bytes": n_bytes, "nll_per_token": nll / n, "perplexity": math.exp(min(nll / n, 700)),
            "bits_per_byte": nll / math.log(2) / max(1, n_bytes), "block_size": block,
            "stride": stride or block // 2 or 1}
