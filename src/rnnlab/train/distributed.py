"""Data parallelism with torch.distributed, as launched by ``torchrun``.

Every process builds the same model from the same seed and draws the same *global* batch from the
same seeded stream, then keeps its own contiguous slice (``Batch.shard``). DistributedDataParallel
averages the gradients across processes during backward, so with a loss that is a mean over equal
slices every process takes exactly the step that one process would take on the whole batch.
The backend is gloo on CPU and nccl on GPU; ``torchrun`` sets RANK, WORLD_SIZE and MASTER_ADDR.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup(device: torch.device) -> tuple[int, int, torch.device, bool]:
    """(rank, world size, this process's device, whether this call created the process group)."""
    created = False
    if not (dist.is_available() and dist.is_initialized()):
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1, device, False
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        created = True
    rank, world = dist.get_rank(), dist.get_world_size()
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank % torch.cuda.device_count())))
        torch.cuda.set_device(device)
    return rank, world, device, created


def mean(value: float, world: int, device: torch.device) -> float:
    """The mean of a number over all processes."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t) / world


def gather(t: torch.Tensor, world: int, dim: int) -> torch.Tensor:
    """Every process's ``t`` concatenated along ``dim``, in rank order."""
    if world == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=dim)


def any_of(flags: list[bool], world: int, device: torch.device) -> list[bool]:
    """Per flag: whether it is set in any process (one all-reduce for all of them)."""
    if world == 1:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]
