"""Processes and devices: single process, or torchrun (torch.distributed) with DDP or FSDP2.

    torchrun --nproc-per-node=2 -m lmlab pretrain --config RECIPE.yaml --out DIR
    torchrun --nnodes=2 --node-rank=R --rdzv-backend=c10d --rdzv-endpoint=HOST:29400 \\
             --nproc-per-node=8 -m lmlab pretrain ...          # multi-node: same command per node

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; each process takes CUDA device LOCAL_RANK, and
the backend is `lmlab.machine`'s choice (NCCL on CUDA, gloo on the CPU).
Rank r of W, at optimizer step s with A accumulation steps, trains on the global micro-batches
s·W·A + m·W + r (m < A), so a W-process run sees exactly the batches of a 1-process run with
W·A accumulation steps. Only rank 0 writes files: it builds a stage's data while the others
wait (`main_first`), and it commits checkpoints between two barriers.

A collective that a peer never joins (a stopped or hung process) fails after
`train.dist_timeout_s`; one whose peer died fails at once. Either becomes `PeerLost` (exit
status 5), whose message names each peer on this host and its state (stopped, exited,
running), instead of the backend's traceback; torchrun's --max-restarts then restarts the
group, which resumes from the last checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from lmlab import machine
from lmlab.errors import ConfigError, LmlabError


class PeerLost(LmlabError):
    """A collective failed: another rank stopped answering (timeout) or its process ended."""

    exit_code = 5


# Building a stage's data on rank 0 may take hours on a large corpus: the others wait for it
# on a side group with this timeout rather than the training collectives' one.
DATA_WAIT = timedelta(hours=24)


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    timeout_s: int = 600
    peers: list[tuple[str, int]] = field(default_factory=list)  # (host, pid) of each rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    m = machine.detect()
    if requested == "auto":
        requested = m.device
    if requested == "cuda":
        if local_rank >= m.cuda_devices:
            raise ConfigError(f"train.device: process {local_rank} of this node needs CUDA device {local_rank}, "
                              f"and this machine has {m.cuda_devices}; start at most {m.cuda_devices} "
                              "(torchrun --nproc-per-node), or train on the CPU with --train.device=cpu")
        return torch.device("cuda", local_rank)
    return torch.device(requested)


def _attempt_store(world: int, timeout: timedelta):
    """torchrun's store, with this restart's keys apart from the previous attempts' (or None: the
    default rendezvous). torchrun keeps one store across --max-restarts attempts, and a restarted
    rank could read a dead rank's address from it and wait on it. Fenced by the restart count,
    which only one agent's ranks share: on a single node. Across nodes, launch torchrun with
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 instead (a new store per attempt)."""
    one_agent = int(os.environ.get("LOCAL_WORLD_SIZE", "0")) == world
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or not one_agent:
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                          timeout=timeout)
    return dist.PrefixStore(f"lmlab/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


_CONTEXT: Context | None = None  # this process's group, once joined: a stage and its trainer share it


def setup(requested_device: str = "auto", timeout_s: int = 600) -> Context:
    """Join the process group when launched by torchrun; otherwise a single-process context.
    timeout_s: how long a collective waits for the other ranks before it fails (PeerLost)."""
    global _CONTEXT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Context(device=pick_device(requested_device), timeout_s=timeout_s)
    if _CONTEXT is not None and dist.is_initialized():
        if _CONTEXT.timeout_s != timeout_s:
            raise LmlabError(f"train.dist_timeout_s={timeout_s}: this process already joined its group with "
                             f"{_CONTEXT.timeout_s} s; give one value")
        return _CONTEXT
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = timedelta(seconds=timeout_s)
        backend, device_id = machine.detect().dist_backend(device), device if device.type == "cuda" else None
        store = _attempt_store(world, timeout)
        if store is None:
            dist.init_process_group(backend, timeout=timeout, device_id=device_id)
        else:
            dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout,
                                    device_id=device_id)
    _CONTEXT = Context(rank, world, local, device, timeout_s, _gather_peers(world, device))
    return _CONTEXT


def _gather_peers(world: int, device: torch.device) -> list[tuple[str, int]]:
    """(host, pid) of every rank, to name a peer that stops answering: bytes in a tensor, not a pickle."""
    mine = torch.zeros(72, dtype=torch.uint8)
    host = socket.gethostname().encode()[:64]
    mine[:len(host)] = torch.tensor(list(host), dtype=torch.uint8)
    mine[64:] = torch.tensor(list(os.getpid().to_bytes(8, "little")), dtype=torch.uint8)
    every = [torch.zeros_like(mine, device=device) for _ in range(world)]
    dist.all_gather(every, mine.to(device))
    peers = []
    for row in (bytes(t.cpu().tolist()) for t in every):
        peers.append((row[:64].rstrip(b"\0").decode(errors="replace"), int.from_bytes(row[64:], "little")))
    return peers


def teardown(ctx: Context) -> None:
    global _CONTEXT
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
    _CONTEXT = None


def _state(pid: int) -> str:
    """What a process on this host is doing, from /proc: stopped, exited, running or sleeping."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return "exited"
    return {"T": "stopped (SIGSTOP or a debugger)", "t": "stopped by a debugger", "Z": "exited",
            "X": "exited", "D": "in uninterruptible I/O", "R": "running"}.get(fields[0], "alive")


def peer_states(ctx: Context) -> list[str]:
    host = socket.gethostname()
    return [f"rank {r} (pid {pid} on {h}): " + (_state(pid) if h == host else "on another host")
            for r, (h, pid) in enumerate(ctx.peers) if r != ctx.rank]


def is_collective_failure(e: BaseException) -> bool:
    """A failed collective: the backends raise plain RuntimeErrors (gloo) or DistErrors."""
    text = str(e)
    return isinstance(e, dist.DistError) or (isinstance(e, RuntimeError) and (
        "gloo/transport" in text or "Connection reset by peer" in text or "Connection closed by peer" in text
        or ("NCCL" in text and ("timeout" in text.lower() or "remote" in text.lower()))))


def peer_lost(e: BaseException, ctx: Context, where: str, last_checkpoint: str | None = None) -> PeerLost:
    """The typed error for a collective that failed, naming the peers and what to do."""
    text = str(e)
    timed_out = "timed out" in text.lower() or "timeout" in text.lower()
    what = (f"no answer from the other ranks within train.dist_timeout_s={ctx.timeout_s} s" if timed_out
            else "a peer process ended or closed its connection")
    peers = "; ".join(peer_states(ctx)) or "no peers recorded"
    resume = (f"it resumes from {last_checkpoint}" if last_checkpoint
              else "no checkpoint was saved yet, so it starts over")
    return PeerLost(f"rank {ctx.rank}: {where}: {what} ({peers}). Look at the log of the rank that failed or "
                    "stopped (a stopped process: end it, or continue it with SIGCONT), then run the same torchrun "
                    f"command again, or launch it with --max-restarts=N to restart by itself: {resume}. If a "
                    "peer is only slow (a long evaluation or save), raise --train.dist_timeout_s")


@contextlib.contextmanager
def collectives(ctx: Context, where: str | Callable[[], str], last_checkpoint: Callable[[], str | None] = lambda: None):
    """Turn a failed collective inside the block into PeerLost; `where` (or what it returns at
    the failure) says what this rank was doing."""
    try:
        yield
    except Exception as e:
        if ctx.distributed and is_collective_failure(e):
            raise peer_lost(e, ctx, where() if callable(where) else where, last_checkpoint()) from None
        raise


@contextlib.contextmanager
def main_first(ctx: Context, what: str):
    """Run the block on rank 0 first, then on the others: rank 0 builds what is missing (data, a
    tokenizer) while the others wait, and they then find it complete and only read it. A failure
    on rank 0 ends the others too, with a message that points to rank 0's."""
    if not ctx.distributed:
        yield
        return
    done = torch.zeros(1)
    with collectives(ctx, f"waiting for rank 0 {what}"):
        group = dist.new_group(backend="gloo", timeout=DATA_WAIT)  # collective: every rank creates it
        if ctx.is_main:
            try:
                yield
                done.fill_(1)
            finally:
                dist.broadcast(done, 0, group=group)
                dist.destroy_process_group(group)
            return
        dist.broadcast(done, 0, group=group)
        dist.destroy_process_group(group)
    if not done.item():
        raise LmlabError(f"rank {ctx.rank}: rank 0 failed {what}; its message says why")
    yield


def all_true(flag: bool, ctx: Context) -> bool:
    """Whether `flag` holds on every rank (one all-reduce): a decision all ranks take alike."""
    if not ctx.distributed:
        return flag
    bad = torch.tensor([0.0 if flag else 1.0], device=ctx.device)
    dist.all_reduce(bad, op=dist.ReduceOp.SUM)
    return bad.item() == 0


def all_reduce_sum(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    if ctx.distributed:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def transformer_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Every layer of every stack (encoder, decoder), in order: the units of FSDP and of activation checkpointing."""
    from lmlab.model.layers import TransformerLayer

    return [m for m in model.modules() if isinstance(m, TransformerLayer)]


def wrap(model: torch.nn.Module, ctx: Context, strategy: str = "ddp") -> torch.nn.Module:
    """The module that runs forward/backward: the model itself, DDP around it, or the model
    sharded in place by FSDP2 (each layer a unit, so only one layer's weights are gathered at
    a time: for models that do not fit one device)."""
    if not ctx.distributed:
        return model
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        # the mesh of the training device (fully_shard's default mesh is CUDA whenever torch sees
        # a GPU, even for a run on the CPU)
        mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
        for layer in transformer_layers(model):
            fully_shard(layer, mesh=mesh)
        return fully_shard(model, mesh=mesh)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
