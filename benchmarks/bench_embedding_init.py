"""Does initialising a small language model's token embeddings from word vectors lower its
early training loss? Random init vs `init_embeddings` (PCA to d_model, norms kept), same seeds.

    python benchmarks/bench_embedding_init.py --corpus CORPUS.txt --vectors VEC_DIR --steps 300

The model is lmlab's own GPT (`lmlab.model`, gpt2 family): 2 layers, d_model 64, 4 heads,
word-level vocabulary = the vectors' `--vocab` (4000) most frequent words + <unk>, output layer
untied from the embedding (so that only the input side is initialised), AdamW lr 1e-3, batch
16 × 32 tokens (all adjustable). The held-out loss (next-word cross-entropy on the last 5 % of the
corpus) is reported every `--eval-every` steps, averaged over `--seeds` seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lmlab.embeddings.initialize import init_embeddings
from lmlab.embeddings.vectors import WordVectors
from lmlab.embeddings.vocab import make_tokenizer, read_lines
from lmlab.machine import header
from lmlab.model import Transformer, preset


def small_gpt(vocab: int, d_model: int, seq: int) -> Transformer:
    cfg = preset("gpt2-tiny", vocab_size=vocab, d_model=d_model, n_heads=4, n_layers=2, d_ff=2 * d_model,
                 max_seq_len=seq, dropout=0.0, attn_dropout=0.0, tie_embeddings=False)
    return Transformer(cfg)


def encode(corpus: Path, words: list[str]) -> np.ndarray:
    index = {w: i + 1 for i, w in enumerate(words)}  # 0 = <unk>
    tokenize = make_tokenizer("words")
    ids: list[int] = []
    for _, _, line in read_lines([corpus]):
        ids.extend(index.get(t, 0) for t in tokenize([line])[0])
    return np.asarray(ids, dtype=np.int64)


def run(ids: np.ndarray, vocab: list[str], wv: WordVectors | None, seed: int, steps: int, eval_every: int,
        seq: int, batch: int, d_model: int) -> tuple[list[tuple[int, float]], dict | None]:
    torch.manual_seed(seed)
    model = small_gpt(len(vocab), d_model, seq)
    stats = None
    if wv is not None:
        with torch.no_grad():
            stats = init_embeddings(model.embed.tokens.weight, vocab, wv, projection="pca")
    split = int(len(ids) * 0.95)
    train, held = torch.from_numpy(ids[:split]), torch.from_numpy(ids[split:])
    g = torch.Generator().manual_seed(seed)
    held_starts = torch.arange(0, len(held) - seq - 1, seq)[:256]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

    def held_loss() -> float:
        model.eval()
        with torch.no_grad():
            x = torch.stack([held[s:s + seq] for s in held_starts])
            y = torch.stack([held[s + 1:s + seq + 1] for s in held_starts])
            loss = model(x, labels=y).loss.item()
        model.train()
        return loss

    curve = [(0, held_loss())]
    for step in range(1, steps + 1):
        starts = torch.randint(0, len(train) - seq - 1, (batch,), generator=g)
        x = torch.stack([train[s:s + seq] for s in starts])
        y = torch.stack([train[s + 1:s + seq + 1] for s in starts])
        loss = model(x, labels=y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0:
            curve.append((step, held_loss()))
    return curve, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--vectors", required=True, help="a WordVectors directory (lmlab embed train)")
    ap.add_argument("--vocab", type=int, default=4000)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(header(), flush=True)
    wv = WordVectors.load(args.vectors)
    words = wv.words[: args.vocab]
    vocab = ["<unk>"] + words
    ids = encode(Path(args.corpus), words)
    results: dict = {"tokens": len(ids), "unk_share": float((ids == 0).mean()), "vocab": len(vocab),
                     "d_model": args.d_model, "seq": args.seq, "batch": args.batch, "seeds": args.seeds}
    t0 = time.perf_counter()
    for name, source in (("random", None), ("word-vectors", wv)):
        curves = []
        for seed in range(args.seeds):
            curve, stats = run(ids, vocab, source, seed, args.steps, args.eval_every, args.seq, args.batch,
                               args.d_model)
            curves.append([loss for _, loss in curve])
            if stats:
                results["init_stats"] = {k: v for k, v in stats.items() if k != "unmatched_examples"}
        results[name] = {"steps": [s for s, _ in curve], "held_out_loss": np.mean(curves, 0).round(4).tolist()}
        print(name, results[name], flush=True)
    results["time_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
