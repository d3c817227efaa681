"""Training-step throughput of lmlab's Transformer vs Hugging Face at equal shapes, same run.

Decoder: lmlab gpt2 family vs `transformers.GPT2LMHeadModel`; encoder: lmlab bert family vs
`transformers.BertForMaskedLM`. A step is forward + loss + backward (no optimizer, which is
identical for both). Both sides use the same precision mode: fp32, or bf16 autocast (what
`Trainer(bf16=True)` does). Rounds alternate between the two models so that machine noise
hits both alike; the figure is the ratio of median step times.

    python benchmarks/bench_model.py                       # 6 layers, d_model 384, seq 256, batch 8
    python benchmarks/bench_model.py --steps 5 --layers 2  # a quick look
    # masked LM, lmlab bf16 vs Hugging Face's default fp32 (4 layers, d_model 256, seq 128, batch 16):
    python benchmarks/bench_model.py --models encoder --layers 4 --d-model 256 --heads 4 --seq 128 \
        --batch 16 --precisions bf16 --hf-precision fp32
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def hf_model(kind: str, a):
    import transformers as T

    if kind == "decoder":
        cfg = T.GPT2Config(vocab_size=a.vocab_gpt, n_embd=a.d_model, n_layer=a.layers, n_head=a.heads,
                           n_positions=a.seq, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0,
                           bos_token_id=None, eos_token_id=None)
        return T.GPT2LMHeadModel(cfg)
    cfg = T.BertConfig(vocab_size=a.vocab_bert, hidden_size=a.d_model, num_hidden_layers=a.layers,
                       num_attention_heads=a.heads, intermediate_size=4 * a.d_model,
                       max_position_embeddings=a.seq, hidden_dropout_prob=0, attention_probs_dropout_prob=0)
    return T.BertForMaskedLM(cfg)


def lmlab_model(kind: str, a):
    from lmlab.model import Transformer, preset

    family, vocab = ("gpt2", a.vocab_gpt) if kind == "decoder" else ("bert", a.vocab_bert)
    cfg = preset(f"{family}-small", vocab_size=vocab, d_model=a.d_model, n_heads=a.heads, n_layers=a.layers,
                 d_ff=4 * a.d_model, max_seq_len=a.seq, dropout=0.0, attn_dropout=0.0)
    return Transformer(cfg)


def batch(kind: str, a, vocab: int):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (a.batch, a.seq), generator=g)
    if kind == "decoder":
        return ids, ids  # HF shifts labels inside; lmlab is given shifted targets below
    labels = torch.full_like(ids, -100)
    where = torch.rand(ids.shape, generator=g) < 0.15
    labels[where] = ids[where]
    return ids, labels


def step_fn(kind: str, side: str, model, ids, labels):
    if side == "hf":
        def step():
            model(input_ids=ids, labels=labels).loss.backward()
        return step
    if kind == "decoder":
        targets = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -100)], 1)

        def step():
            model(ids, labels=targets).loss.backward()
        return step

    def step():
        model(ids, labels=labels).loss.backward()
    return step


def _autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def measure(a, kind: str, precision: str) -> dict:
    torch.manual_seed(0)
    vocab = a.vocab_gpt if kind == "decoder" else a.vocab_bert
    ids, labels = batch(kind, a, vocab)
    sides = {"hf": hf_model(kind, a).train(), "lmlab": lmlab_model(kind, a).train()}
    steps = {s: step_fn(kind, s, m, ids, labels) for s, m in sides.items()}
    times = {s: [] for s in sides}
    modes = {"hf": a.hf_precision or precision, "lmlab": precision}
    for r in range(a.warmup + a.steps):
        for s in (("hf", "lmlab") if r % 2 == 0 else ("lmlab", "hf")):
            sides[s].zero_grad(set_to_none=True)
            t = time.perf_counter()
            with _autocast(modes[s]):
                steps[s]()
            if r >= a.warmup:
                times[s].append(time.perf_counter() - t)
    tokens = a.batch * a.seq
    hf_t, lm_t = statistics.median(times["hf"]), statistics.median(times["lmlab"])
    return {"model": kind, "precision": precision, "hf_precision": modes["hf"], "hf_tokens_per_s": round(tokens / hf_t),
            "lmlab_tokens_per_s": round(tokens / lm_t), "speedup": round(hf_t / lm_t, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--d-model", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab-gpt", type=int, default=50257)
    p.add_argument("--vocab-bert", type=int, default=30522)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", default="decoder,encoder")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--hf-precision", default=None, help="Hugging Face's mode if not the same (e.g. fp32)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from lmlab.machine import header

    print(header(), flush=True)
    import transformers

    transformers.logging.set_verbosity_error()
    for kind in a.models.split(","):
        for precision in a.precisions.split(","):
            print(json.dumps(measure(a, kind, precision)), flush=True)


if __name__ == "__main__":
    main()
