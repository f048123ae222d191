"""Data parallelism under `torchrun`: a few helpers so training reads the same with 1 or N ranks.

Every rank builds the same deterministic batch list and takes its own share of each update
(see training.py), so nothing here shards data; it only starts the process group and wraps the
handful of collectives training needs. With one process every helper is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from nmt.errors import NMTError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    """The device `name` means (training, translating and comparing all ask here): `auto` is the
    GPU when torch sees one, else the CPU; anything but auto, cpu or cuda[:N], or CUDA on a
    machine without a GPU, is a user error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and name != "cuda" and not name.startswith("cuda:"):
        raise NMTError(f"device {name!r}: use auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NMTError(f"device {name!r} requested but torch sees no CUDA GPU "
                       f"(torch {torch.__version__}); use --device cpu")
    return torch.device(name)


def setup(device_name: str) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world == 1:
        return Dist(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)  # one GPU per process
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                **({"device_id": device} if device.type == "cuda" else {}))
    return Dist(rank, world, local_rank, local_world, device)


def cleanup(d: Dist) -> None:
    if d.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def any_flags(d: Dist, *flags: bool) -> list[bool]:
    """Per flag: is it set on any rank? Keeps ranks agreeing on skips and stops."""
    if d.world == 1:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def broadcast(d: Dist, obj):
    """Rank 0's `obj` on every rank (validation results, for identical decisions everywhere)."""
    if d.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(d: Dist, obj) -> list:
    """Every rank's `obj`, in rank order (RNG states for the checkpoint)."""
    if d.world == 1:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out
