"""Collectives of a data-parallel run, for the model class and the router.

HFLM shards documents only across several GPUs (accelerate). Under `torchrun --nproc_per_node N`
on CPU every process would evaluate everything as rank 0, so there plain torch.distributed (gloo)
collectives take accelerate's place. The same calls are made on every rank.
"""

from __future__ import annotations

import os

import torch


def init_cpu_process_group() -> tuple[int, int] | None:
    """(rank, world size) when this CPU process is one of several, else None."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def collectives_for(rank: int, world_size: int, device) -> "Collectives":
    """HFLM's (accelerate's) ranks, or under torchrun on CPU a gloo group's."""
    if world_size == 1 and device.type == "cpu" and (ranks := init_cpu_process_group()):
        return Collectives(*ranks, cpu=True)
    return Collectives(rank, world_size)


class Collectives:
    def __init__(self, rank: int = 0, world_size: int = 1, cpu: bool = False):
        self.rank, self.world_size, self.cpu = rank, world_size, cpu

    def all_gather_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        flat = tensor.reshape(1) if tensor.dim() == 0 else tensor
        out = [torch.zeros_like(flat) for _ in range(self.world_size)]
        dist.all_gather(out, flat)
        return torch.cat(out)

    def barrier(self) -> None:
        if self.world_size < 2:
            return
        if self.cpu:
            import torch.distributed as dist

            dist.barrier()
        else:
            from accelerate.utils import wait_for_everyone

            wait_for_everyone()

    def gather_objects(self, obj) -> list:
        if self.world_size < 2:
            return [obj]
        if self.cpu:
            import torch.distributed as dist

            out = [None] * self.world_size
            dist.all_gather_object(out, obj)
            return out
        from accelerate.utils import gather_object

        return gather_object([obj])

    def broadcast(self, obj):
        if self.world_size < 2:
            return obj
        holder = [obj]
        if self.cpu:
            import torch.distributed as dist

            dist.broadcast_object_list(holder, src=0)
        else:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(holder, from_process=0)
        return holder[0]
