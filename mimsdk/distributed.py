"""torchrun support: one process per device, rank 0 alone writes."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def place(self) -> tuple[int, int]:
        """(rank, world): this process's slice of every global batch."""
        return self.rank, self.world


def init_processes(device: torch.device, group: bool = False) -> Processes:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on CUDA).

    One process joins no group, unless ``group`` asks for one (FSDP needs it even alone): a group of one
    over an in-memory store, which opens no port.
    """
    backend = "nccl" if device.type == "cuda" else "gloo"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        if group and not dist.is_initialized():
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        return Processes()
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Processes(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def mean_across(value: torch.Tensor, procs: Processes) -> torch.Tensor:
    """Average a tensor over all processes (identity for one)."""
    if procs.world == 1:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / procs.world


def barrier(procs: Processes) -> None:
    if procs.world > 1:
        dist.barrier()


def pick_device(name: str) -> torch.device:
    """``train.device``: ``auto`` is CUDA when there is one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``train.precision`` on ``device``: the autocast dtype, or None for fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    # auto: bf16 where the hardware does it fast (CUDA with bf16); fp32 on CPU, where bf16 is slower.
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None
