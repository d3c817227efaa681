"""LoRA against full fine-tuning on a real checkpoint: all-MiniLM-L6-v2 with a classification
head, one training step of each, alternating in one process (so a shared machine slows both
alike): trainable parameters and the median step time.

    python benchmarks/bench_lora.py                  # rank 8 on q and v (lmlab's defaults)
    python benchmarks/bench_lora.py --rank 16 --rounds 12

A step is forward + loss + backward + clipping + fused AdamW on the trainable parameters, at
batch 32 × 40 tokens (about an SST-2 batch padded to its longest row), bf16 autocast where the
CPU has it natively (`lmlab.machine`). Accuracy comes from a whole run::

    python benchmarks/bench_real_checkpoint.py --only lmlab --lr 5e-4 \
        --lmlab-options="--model.attn_dropout=0 --lora.rank=8"
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
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=8, help="steps of each side (the first two are warm-up)")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()

    import torch

    from lmlab.hf.convert import import_hf
    from lmlab.machine import detect, header
    from lmlab.model.pretrained import model_from_init
    from lmlab.tasks.lora import LoRAConfig, apply_lora
    from real_checkpoint import minilm_dir

    if a.threads:
        torch.set_num_threads(a.threads)
    print(header())
    work = Path(tempfile.mkdtemp(prefix="lmlab-bench-lora-"))
    import_hf(minilm_dir(), work / "minilm")
    torch.manual_seed(0)
    ids = torch.randint(1000, 20000, (32, 40))  # [B, T]
    mask = torch.ones(32, 40, dtype=torch.long)
    mask[::2, 25:] = 0  # half the rows padded, as in a batch padded to its longest row
    labels = torch.randint(0, 2, (32,))
    bf16 = detect().native_bf16

    def build(rank: int):
        model, _ = model_from_init(work / "minilm", {"head": "classification", "n_labels": 2, "attn_dropout": 0.0})
        if rank:
            apply_lora(model, LoRAConfig(rank=rank))
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        return model, params, torch.optim.AdamW(params, lr=5e-5, fused=True)

    sides = {"full fine-tuning": build(0), f"LoRA r={a.rank}": build(a.rank)}
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(a.rounds):
        for name, (model, params, opt) in sides.items():
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
                loss = model(ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad()
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["full fine-tuning"][2:])
    print(f"{'':18} {'trainable':>12} {'of':>12} {'step s':>8} {'ratio':>6}")
    for name, (model, params, _) in sides.items():
        step = statistics.median(times[name][2:])
        print(f"{name:18} {sum(p.numel() for p in params):>12,} {sum(p.numel() for p in model.parameters()):>12,} "
              f"{step:8.3f} {step / base:6.2f}")


if __name__ == "__main__":
    main()
