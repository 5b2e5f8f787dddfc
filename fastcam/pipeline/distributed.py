"""Scale-out under torchrun: each rank explains a strided shard of the dataset into its own store shard.

Rank r explains the dataset indices r, r+W, r+2W, ... (`fastcam.io.run.shard_indices`: no padding
duplicates, unlike DistributedSampler); the reader interleaves the shards back into dataset order.
Each shard has its own commit record, so a crashed rank resumes like a single run. Without torchrun
everything here reduces to one process: rank 0 of a world of 1.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from fastcam._device import parse_device  # noqa: F401 - re-exported (its home before fastcam._device)


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun launch (rank 0 of 1 without torchrun)."""

    rank: int
    world: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's shared files (run.json, ids.json, the report)."""
        return self.rank == 0


def torchrun_ranks() -> Ranks:
    """Rank, world size and local rank from torchrun's environment variables."""
    return Ranks(rank=int(os.environ.get("RANK", "0")), world=int(os.environ.get("WORLD_SIZE", "1")),
                 local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def rank_device(device: str | torch.device | None, ranks: Ranks) -> torch.device:
    """The device this rank explains on: the given one, else cuda:LOCAL_RANK when CUDA is available, else
    the CPU; a bare "cuda" also means cuda:LOCAL_RANK. A CUDA device is made current."""
    if device is None:
        device = f"cuda:{ranks.local_rank}" if torch.cuda.is_available() else "cpu"
    device = parse_device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ranks.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


@contextlib.contextmanager
def process_group(world: int, device: torch.device) -> Iterator[Callable[[], None]]:
    """Yields a barrier; joins (and afterwards leaves) a process group when world > 1."""
    if world <= 1:
        yield lambda: None
        return
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        created = True
    try:
        yield (lambda: dist.barrier(device_ids=[device.index]) if device.type == "cuda" else dist.barrier())
    finally:
        if created:
            dist.destroy_process_group()
