"""Run by torchrun (2 ranks, accumulation 1, DDP or FSDP) or directly (1 rank, accumulation 2), with or
without adversarial training, optionally stopping (checkpoint, exit) after some steps as a preempted
run does; copies the final checkpoint's weights to the given path.

    ddp_worker.py OUT ACCUM RESULT [PARALLEL [ADVERSARIAL [STOP_AFTER [DEVICE]]]]
"""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).parent))
from helpers import make_trainer, stop_after, tiny_model  # noqa: E402

out, accum, result = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
parallel = sys.argv[4] if len(sys.argv) > 4 else "ddp"
adversarial = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
stop = int(sys.argv[6]) if len(sys.argv) > 6 else 0
device = sys.argv[7] if len(sys.argv) > 7 else "cpu"
tr = make_trainer(out, model=tiny_model(dropout=0.0), grad_accum_steps=accum, max_steps=5, save_every_steps=5,
                  parallel=parallel, adversarial=adversarial, device=device)
if stop:
    stop_after(tr, stop)
summary = tr.fit()
if tr.ctx.is_main and not stop:
    from safetensors.torch import save_file

    from lmlab.artifacts import load_tensors  # the checkpoint holds the full (unsharded) weights

    save_file(load_tensors(out / "checkpoints" / "step-00000005" / "model.safetensors"), result)
    print("losses", summary["train_loss"])
from lmlab.train.distributed import teardown  # noqa: E402

teardown(tr.ctx)
