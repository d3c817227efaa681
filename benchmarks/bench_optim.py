"""Muon against AdamW on the quickstart's BERT, in one process: the optimizer step alone and the
whole training step (masked-LM forward + backward + clip + step).

The model is the quickstart's `bert` stage (bert-tiny preset: 4 layers, d_model 128, d_ff 512,
WordPiece vocabulary 4,000, blocks of 128 tokens, batch 16); Muon updates its 24 hidden matrices
(16 of 128×128, 8 of 128×512 once the tall ones are transposed) and AdamW the rest. Optimizers:
  adamw        torch's fused AdamW (optim.name=adamw)
  muon         optim.name=muon: lmlab's Muon, Newton–Schulz batched by shape, in the machine's dtype
  muon-fp32    the same with Newton–Schulz forced to float32
  muon-bf16    the same with Newton–Schulz forced to bf16
  torch-muon   torch.optim.Muon (bf16, one matrix at a time) + fused AdamW: the route before lmlab's
Rounds alternate between the optimizers so that machine noise hits all alike; each figure is a
median, and the ratios are to AdamW's median in the same run.

    python benchmarks/bench_optim.py                          # this machine as it is
    python benchmarks/bench_optim.py --rounds 30 --parts optimizer
    # an AVX2-only CPU, approximately: torch's and oneDNN's kernels lowered to AVX2, lmlab told so
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 LMLAB_MACHINE=avx2 python benchmarks/bench_optim.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from lmlab import machine
from lmlab.model import Transformer, preset
from lmlab.train.optim import MuonAdamW, OptimConfig, build_optimizer

OPTIMIZERS = ("adamw", "muon", "muon-fp32", "muon-bf16", "torch-muon")


def quickstart_bert(vocab: int, seq: int) -> Transformer:
    torch.manual_seed(0)
    return Transformer(preset("bert-tiny", vocab_size=vocab, d_model=128, n_heads=4, n_layers=4, d_ff=512,
                              max_seq_len=seq, dropout=0.0, attn_dropout=0.0)).train()


def make_optimizer(name: str, model: Transformer) -> torch.optim.Optimizer:
    opt = build_optimizer(model, OptimConfig(name="adamw" if name == "adamw" else "muon", lr=2e-3))
    if name in ("muon-fp32", "muon-bf16"):
        opt._muon.ns_dtype = torch.float32 if name == "muon-fp32" else torch.bfloat16
    elif name == "torch-muon":
        assert isinstance(opt, MuonAdamW)
        groups = opt._muon.param_groups
        opt._muon = torch.optim.Muon([{"params": [torch.zeros(1, 1)]}], lr=2e-3, adjust_lr_fn="match_rms_adamw")
        opt._muon.param_groups, opt._muon.state = groups, opt.state
    assert name == "adamw" or isinstance(opt, MuonAdamW)
    return opt


def masked_batch(vocab: int, batch: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (batch, seq), generator=g)
    labels = torch.full_like(ids, -100)
    where = torch.rand(ids.shape, generator=g) < 0.15
    labels[where] = ids[where]
    return ids.masked_fill(where, 4), labels


def measure(a, part: str) -> dict:
    """Median seconds of `part` ("optimizer" or "train_step") for each optimizer."""
    ids, labels = masked_batch(a.vocab, a.batch, a.seq)
    precision = machine.detect().precision("cpu") if a.precision == "auto" else a.precision
    models = {n: quickstart_bert(a.vocab, a.seq) for n in a.optimizers}
    opts = {n: make_optimizer(n, m) for n, m in models.items()}
    times: dict[str, list[float]] = {n: [] for n in a.optimizers}

    def forward_backward(model):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)

    for n, m in models.items():  # gradients to step on, and the optimizers' state built
        forward_backward(m)
        opts[n].step()
    for r in range(a.warmup + a.rounds):
        order = a.optimizers if r % 2 == 0 else a.optimizers[::-1]
        for n in order:
            if part == "optimizer":
                t = time.perf_counter()
                opts[n].step()  # the same gradients each round: the work, not the trajectory, is timed
            else:
                t = time.perf_counter()
                forward_backward(models[n])
                opts[n].step()
            if r >= a.warmup:
                times[n].append(time.perf_counter() - t)
    med = {n: statistics.median(v) for n, v in times.items()}
    out = {"part": part, "precision": precision, "ms": {n: round(1e3 * v, 2) for n, v in med.items()}}
    if "adamw" in med:
        out["ratio_to_adamw"] = {n: round(v / med["adamw"], 3) for n, v in med.items() if n != "adamw"}
    if part == "train_step":
        out["tokens_per_s"] = {n: round(a.batch * a.seq / v) for n, v in med.items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=4000)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="of the training step (auto: the machine's choice, as train.precision=auto)")
    p.add_argument("--parts", default="optimizer,train_step")
    p.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    a = p.parse_args()
    a.optimizers = tuple(a.optimizers.split(","))
    if a.threads:
        torch.set_num_threads(a.threads)
    print(machine.header(), flush=True)
    m = machine.detect()
    print(json.dumps({"newton_schulz_dtype": str(m.newton_schulz_dtype("cpu")).removeprefix("torch."),
                      "config": {k: v for k, v in vars(a).items()}}), flush=True)
    for part in a.parts.split(","):
        print(json.dumps(measure(a, part)), flush=True)


if __name__ == "__main__":
    main()
