"""One process or several (``torchrun --nproc_per_node N -m medsam_lite finetune ...``): data-parallel training
with Gloo on CPUs and NCCL on GPUs. Rank 0 validates and writes; every rank takes its share of each batch."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn


@dataclass
class Distributed:
    """This process's place: rank of world, and the device it trains on."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        where = "GPU" if self.device.type == "cuda" else "CPU"
        return f"{where} ({self.device})" + (f", {self.world} processes" if self.world > 1 else "")

    def barrier(self) -> None:
        if self.world > 1:
            torch_dist.barrier()

    def wrap(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel around ``module`` when there are several processes."""
        if self.world == 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the processes."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        torch_dist.all_reduce(tensor)
        return float(tensor[0]) / self.world

    def broadcast(self, value: float) -> float:
        """Rank 0's ``value`` on every process."""
        if self.world == 1:
            return value
        box = [value]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.world > 1 and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def start_distributed(device: str = "auto") -> Distributed:
    """From torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), else one process; ``device`` auto: a GPU when
    there is one (each process its LOCAL_RANK's), else the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no GPU here")
    target = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(target)
    if world > 1 and not torch_dist.is_initialized():
        # rank 0 validates while the others wait at their next step: allow long validations (default 30 min)
        torch_dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=6))
    return Distributed(rank, world, target)
