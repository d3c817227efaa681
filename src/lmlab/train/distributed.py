"""Processes and devices: single process, or torchrun (torch.distributed) with DDP or FSDP2.

    torchrun --nproc-per-node=2 -m lmlab pretrain --config RECIPE.yaml --out DIR
    torchrun --nnodes=2 --node-rank=R --rdzv-backend=c10d --rdzv-endpoint=HOST:29400 \\
             --nproc-per-node=8 -m lmlab pretrain ...          # multi-node: same command per node

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; each process takes CUDA device LOCAL_RANK, and
the backend is `lmlab.machine`'s choice (NCCL on CUDA, gloo on the CPU).
Rank r of W, at optimizer step s with A accumulation steps, trains on the global micro-batches
s·W·A + m·W + r (m < A), so a W-process run sees exactly the batches of a 1-process run with
W·A accumulation steps. Only rank 0 writes files, after a barrier.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from lmlab import machine
from lmlab.errors import ConfigError


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

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


def setup(requested_device: str = "auto", timeout_s: int = 600) -> Context:
    """Join the process group when launched by torchrun; otherwise a single-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Context(device=pick_device(requested_device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(machine.detect().dist_backend(device), timeout=timedelta(seconds=timeout_s),
                                device_id=device if device.type == "cuda" else None)
    return Context(rank, world, local, device)


def teardown(ctx: Context) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


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
