"""One rank of a multi-process `lmlab` run, with faults and instruments, for the distributed
fault tests (and the reliability campaign, which loads this file by path).

    python rank_worker.py REPORT_DIR [--nan R:S | --inf-grad R:S | --stop R:S | --kill R:S] [--audit] -- ARGS...

runs `lmlab ARGS...` (e.g. ``pretrain --out OUT ...``) in this process, which torchrun (or
`launch`, below) started with RANK and WORLD_SIZE set. Faults hit rank R at optimizer step S
(1-based): --nan makes its loss NaN; --inf-grad puts an inf into one of its gradients after
DDP's all-reduce (a fault only that rank sees); --stop sends it SIGSTOP; --kill SIGKILLs it,
only in torchrun's first attempt (TORCHELASTIC_RESTART_COUNT 0), so a restart runs clean.
--audit records every write under OUT (files opened for writing, directories made, renames,
removals) with the phase it happened in (data, train, save, final), and, after each
checkpoint save, whether the step's manifest existed when this rank left the save's barrier.
At exit, REPORT_DIR/rank-R.json holds the exit code, the steps and skipped steps, a hash of the
weights and the instruments' records; REPORT_DIR/stopped-R.json the time of a --stop.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def _fault(spec: str | None) -> tuple[int, int] | None:
    if not spec:
        return None
    rank, step = spec.split(":")
    return int(rank), int(step)


def _is_write(mode, flags) -> bool:
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))


def main(argv: list[str]) -> int:
    split = argv.index("--")
    opts, args = argv[:split], argv[split + 1:]
    report_dir = Path(opts[0])
    flags = {o.split("=")[0]: (o.split("=", 1)[1] if "=" in o else True) for o in opts[1:]}
    rank = int(os.environ.get("RANK", "0"))
    out = Path(args[args.index("--out") + 1]).resolve()
    record: dict = {"rank": rank, "restart": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
                    "writes": [], "saves": [], "manifest_missing_after_save": []}
    phase = {"now": "data"}

    if flags.get("--audit"):
        def audit(event, args):
            if event == "open":
                path, mode, oflags = (list(args) + [None, None])[:3]
                if isinstance(path, int) or not _is_write(mode, oflags):
                    return
            elif event == "os.mkdir":
                path = args[0]
                if isinstance(path, int) or os.path.exists(path):  # exist_ok on a directory that exists
                    return
            elif event in ("os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"):
                path = args[0]
                if isinstance(path, int):  # ftruncate of a descriptor opened (and recorded) before
                    return
            else:
                return
            path = os.path.abspath(os.fsdecode(path))
            if path == str(out) or path.startswith(str(out) + os.sep):
                record["writes"].append([phase["now"], event, os.path.relpath(path, out)])
        sys.addaudithook(audit)

    from lmlab.cli import main as lmlab_main
    from lmlab.train.loop import Trainer

    trainers: list[Trainer] = []
    nan, inf_grad = _fault(flags.get("--nan")), _fault(flags.get("--inf-grad"))
    stop, kill = _fault(flags.get("--stop")), _fault(flags.get("--kill"))
    original_init, original_step, original_save = Trainer.__init__, Trainer.train_step, Trainer.save

    def init(self, *a, **k):
        original_init(self, *a, **k)
        trainers.append(self)
        runner = self.runner

        def forward(*a, **k):
            result = runner(*a, **k)
            if nan == (rank, self.step + 1):
                result.loss = result.loss * float("nan")
            return result
        self.runner = forward

    def train_step(self):
        phase["now"] = "train"
        at = (rank, self.step + 1)
        if kill == at and record["restart"] == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        if stop == at:
            (report_dir / f"stopped-{rank}.json").write_text(json.dumps({"time": time.time(), "step": at[1]}))
            os.kill(os.getpid(), signal.SIGSTOP)
        if inf_grad == at:
            import torch

            total_norm = torch.nn.utils.get_total_norm  # what the loop measures the gradients with

            def norm_after_poison(grads, *a, **k):
                grads = list(grads)
                grads[0].view(-1)[0] = float("inf")  # after DDP's all-reduce: this rank alone
                torch.nn.utils.get_total_norm = total_norm
                return total_norm(grads, *a, **k)
            torch.nn.utils.get_total_norm = norm_after_poison
        return original_step(self)

    def save(self):
        phase["now"] = "save"
        original_save(self)
        manifest = self.out / "checkpoints" / f"step-{self.step:08d}" / "manifest.json"
        record["saves"].append(self.step)
        if not manifest.exists():
            record["manifest_missing_after_save"].append(self.step)
        phase["now"] = "train"

    original_fit = Trainer.fit

    def fit(self):
        result = original_fit(self)
        phase["now"] = "final"  # the stage writes its model, plots and summary
        return result

    Trainer.__init__, Trainer.train_step, Trainer.save, Trainer.fit = init, train_step, save, fit
    code = lmlab_main(args)
    phase["now"] = "final"
    if trainers:
        import torch

        tr = trainers[-1]
        digest = hashlib.sha256()
        for name, p in sorted(tr.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        record.update(step=tr.step, skipped_steps=tr.guard.skipped_steps, params_sha256=digest.hexdigest())
    record["exit_code"] = code
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / f"rank-{rank}.json").write_text(json.dumps(record))
    return code


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(report_dir: Path, lmlab_args: list[str], faults: list[str] = (), world: int = 2,
           env: dict | None = None) -> list[subprocess.Popen]:
    """Start `world` ranks of this worker as torchrun would (RANK, WORLD_SIZE, LOCAL_RANK and a
    rendezvous on 127.0.0.1); their stderr goes to REPORT_DIR/stderr-R.txt."""
    report_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs = []
    for rank in range(world):
        rank_env = {**(env or os.environ), "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                    "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        with open(report_dir / f"stderr-{rank}.txt", "w") as err:
            procs.append(subprocess.Popen([sys.executable, __file__, str(report_dir), *faults, "--", *lmlab_args],
                                          env=rank_env, stdout=subprocess.DEVNULL, stderr=err))
    return procs


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
