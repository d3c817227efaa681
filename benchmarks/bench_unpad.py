"""Padding-free encoder compute (`lmlab.model.unpad`) against the padded path, and against
transformers' `BertForSequenceClassification`, on a real checkpoint: all-MiniLM-L6-v2 with a
classification head, one fine-tuning step of each side in turn on the same SST-2 batches, in one
process (a shared machine slows every side alike): the median step time, wall and CPU (all threads).

    python benchmarks/bench_unpad.py                 # 12 batches of 32, each padded to its longest row
    python benchmarks/bench_unpad.py --rounds 20 --eval
    python benchmarks/bench_unpad.py --attention     # attention alone: torch's fused kernel vs the formula

Sides: lmlab as before this path (padded, torch's fused attention kernel throughout), lmlab padded
(the formula's attention where it is faster: `lmlab.model.attention.fused_grad_is_slow`), lmlab
unpadded (the default), and transformers with its own attention dropout, as the fine-tuning
benchmark runs it (benchmarks/bench_real_checkpoint.py). A step is forward + loss + backward +
clipping + AdamW (torch's fused one for lmlab, its default for transformers, as in that benchmark's
loop), bf16 autocast where the CPU has it natively
(`lmlab.machine`), on batches drawn at random from ``sst2:train``: truncated to 64 tokens, padded
to the longest row (2 positions in 3 are padding). ``--eval`` times inference batches of the dev
set too.

``--attention`` times attention's forward + backward alone, 12 heads of 32 (MiniLM's) and 64, at
1,344 positions a batch (32 × 42) cut into sequences of 16 to 512 keys, each row padded at random
to between a quarter of them and all: `torch.nn.functional.scaled_dot_product_attention` against
`lmlab.model.attention.scaled_dot_product_attention` (the formula), in bf16 and float32. It is
the measurement behind `lmlab.model.attention.FORMULA_GRAD_MAX_KEYS`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=12, help="steps of each side (the first two are warm-up)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-hf", action="store_true", help="leave out the transformers side")
    ap.add_argument("--eval", action="store_true", help="also time inference (no grad) on dev batches of 64")
    ap.add_argument("--attention", action="store_true", help="time attention alone (fused kernel vs formula)")
    a = ap.parse_args()
    if a.attention:
        return attention_table(a)

    import torch
    import transformers

    from lmlab.datasets import sst2
    from lmlab.hf.convert import import_hf
    from lmlab.machine import detect, header
    from lmlab.model import attention
    from lmlab.model.pretrained import model_from_init
    from real_checkpoint import minilm_dir

    if a.threads:
        torch.set_num_threads(a.threads)
    transformers.logging.set_verbosity_error()
    print(header())
    ckpt = minilm_dir()
    work = Path(tempfile.mkdtemp(prefix="lmlab-bench-unpad-"))
    import_hf(ckpt, work / "minilm")
    tok = transformers.AutoTokenizer.from_pretrained(ckpt)
    train = sst2("train")
    g = torch.Generator().manual_seed(0)
    rows = torch.randperm(len(train), generator=g)[:a.rounds * a.batch_size].tolist()
    enc = tok([train[i].text for i in rows], truncation=True, max_length=a.max_length)
    batches = []
    for r in range(a.rounds):
        part = slice(r * a.batch_size, (r + 1) * a.batch_size)
        b = tok.pad({"input_ids": enc["input_ids"][part], "attention_mask": enc["attention_mask"][part]},
                    return_tensors="pt")
        batches.append((b["input_ids"], b["attention_mask"],
                        torch.tensor([train[i].label for i in rows[part]])))
    real = sum(int(m.sum()) for _, m, _ in batches)
    padded = sum(m.numel() for _, m, _ in batches)
    print(f"batches of {a.batch_size}: {padded / len(batches) / a.batch_size:.1f} positions a row, "
          f"{real / padded:.0%} of them tokens")
    bf16 = detect().native_bf16
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else nullcontext

    def lmlab_side(unpad: bool, fused_throughout: bool = False):
        model, _ = model_from_init(work / "minilm", {"head": "classification", "n_labels": 2, "attn_dropout": 0.0,
                                                     "unpad": unpad})

        def step(ids, mask, y):
            rule = attention.fused_grad_is_slow
            if fused_throughout:  # torch's kernel whatever the dtype, as before the rule existed
                attention.fused_grad_is_slow = lambda q, k: False
            try:
                return model(ids, attention_mask=mask, labels=y).loss
            finally:
                attention.fused_grad_is_slow = rule
        return model, step

    def hf_side():
        model = transformers.AutoModelForSequenceClassification.from_pretrained(ckpt, num_labels=2)
        return model, lambda ids, mask, y: model(input_ids=ids, attention_mask=mask, labels=y).loss

    sides = {"lmlab before": lmlab_side(False, fused_throughout=True), "lmlab padded": lmlab_side(False),
             "lmlab unpadded": lmlab_side(True)}
    if not a.no_hf:
        sides["transformers"] = hf_side()
    # lmlab's optimizer is torch's fused AdamW (`lmlab.train.optim`); the transformers loop's is its default
    opts = {name: torch.optim.AdamW(model.parameters(), lr=5e-5, fused=name != "transformers" or None)
            for name, (model, _) in sides.items()}
    wall: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    for ids, mask, y in batches:
        for name, (model, step) in sides.items():
            model.train()
            t, c = time.perf_counter(), time.process_time()
            with autocast():
                loss = step(ids, mask, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opts[name].step()
            opts[name].zero_grad(set_to_none=True)
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    base = {k: statistics.median(v[2:]) for k, v in wall.items()}
    base_cpu = {k: statistics.median(v[2:]) for k, v in cpu.items()}
    ref = "transformers" if "transformers" in sides else "lmlab before"
    print(f"{'training step':18} {'wall s':>8} {'CPU s':>8} {'/ ' + ref:>16} (CPU)")
    for name in sides:
        print(f"{name:18} {base[name]:8.3f} {base_cpu[name]:8.3f} {base[name] / base[ref]:10.2f} "
              f"({base_cpu[name] / base_cpu[ref]:.2f})")
    if a.eval:
        dev = sst2("dev")
        dev_enc = tok([r.text for r in dev], truncation=True, max_length=a.max_length)
        evals: dict[str, float] = {}
        for name, (model, _) in sides.items():
            model.eval()
            t = time.perf_counter()
            with torch.no_grad(), autocast():
                for i in range(0, len(dev), 64):
                    b = tok.pad({"input_ids": dev_enc["input_ids"][i:i + 64],
                                 "attention_mask": dev_enc["attention_mask"][i:i + 64]}, return_tensors="pt")
                    model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            evals[name] = time.perf_counter() - t
        print(f"{'dev set (872)':18} {'wall s':>8} {'/ ' + ref:>16}")
        for name, s in evals.items():
            print(f"{name:18} {s:8.3f} {s / evals[ref]:10.2f}")


def attention_table(a) -> None:
    import torch
    import torch.nn.functional as F

    from lmlab.machine import header
    from lmlab.model.attention import scaled_dot_product_attention

    if a.threads:
        torch.set_num_threads(a.threads)
    print(header())
    print(f"{'dtype':9} {'D':>3} {'keys':>5} {'batch':>5} {'fused ms':>9} {'formula ms':>11} {'ratio':>6}")
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.bfloat16, torch.float32):
        for d in (32, 64):
            for t in (16, 42, 128, 256, 512):
                b = max(1, 1344 // t)
                lengths = torch.randint(t // 4, t + 1, (b,), generator=g)
                lengths[0] = t
                mask = (torch.arange(t)[None, :] < lengths[:, None])[:, None, None, :]  # [B, 1, 1, S]
                q, k, v = (torch.randn(b, 12, t, d, generator=g).to(dtype).requires_grad_() for _ in range(3))
                grad = torch.randn(b, 12, t, d, generator=g).to(dtype)
                sides = {"fused": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                         "formula": lambda: scaled_dot_product_attention(q, k, v, mask)[0]}
                times: dict[str, list[float]] = {k: [] for k in sides}
                for _ in range(a.rounds):
                    for name, fn in sides.items():
                        start = time.perf_counter()
                        fn().backward(grad)
                        times[name].append(time.perf_counter() - start)
                fused, formula = (statistics.median(times[n][2:]) * 1e3 for n in sides)
                print(f"{str(dtype)[6:]:9} {d:3} {t:5} {b:5} {fused:9.2f} {formula:11.2f} {formula / fused:6.2f}",
                      flush=True)


if __name__ == "__main__":
    main()
