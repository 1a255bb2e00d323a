"""``torchrun`` / DistributedDataParallel helpers every trainer shares.

Outside ``torch.distributed`` every function is the single-process identity (rank 0 of 1), so a
trainer is written once for both. Under ``torchrun`` each rank holds an equal share of the
prompts; statistics are averaged over ranks, group advantages are computed over the gathered
rewards of whole groups, and the gradient all-reduce is DDP's.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str = "cpu") -> bool:
    """Join the process group ``torchrun`` describes: gloo for ``device="cpu"``, nccl for
    ``"cuda"`` (each rank on GPU ``LOCAL_RANK``). False when not launched by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return dist.is_available() and dist.is_initialized()
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return True


def _collective_device() -> torch.device:
    """nccl reduces CUDA tensors, gloo CPU ones."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_across_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average each value over ranks (every rank holds equally many completions)."""
    _, size = world()
    if size == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return {k: float(v) / size for k, v in zip(keys, t.tolist(), strict=True)}


def all_ranks_agree(flag: bool) -> bool:
    """True when ``flag`` holds on every rank; every rank gets the same answer, so a branch on it
    that contains a collective (DDP's backward) is taken by all ranks or by none."""
    return mean_across_ranks({"flag": float(flag)})["flag"] == 1.0


def gather(t: torch.Tensor) -> torch.Tensor:
    """Concatenate equally sized 1-D tensors of every rank, in rank order."""
    _, size = world()
    if size == 1:
        return t
    t = t.to(_collective_device()).contiguous()
    parts = [torch.empty_like(t) for _ in range(size)]
    dist.all_gather(parts, t)
    return torch.cat(parts)


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank (a picklable value, e.g. a metrics dict)."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def ddp(module: nn.Module) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel under torchrun, itself otherwise."""
    return nn.parallel.DistributedDataParallel(module) if world()[1] > 1 else module


__all__ = [
    "all_ranks_agree",
    "barrier",
    "broadcast_object",
    "ddp",
    "gather",
    "init_distributed",
    "mean_across_ranks",
    "world",
]
