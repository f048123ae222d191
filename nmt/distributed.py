"""Data parallelism under `torchrun`: a few helpers so training reads the same with 1 or N ranks.

Every rank builds the same deterministic batch list and takes its own share of each update
(see training.py), so nothing here shards data; it only starts the process group and wraps the
handful of collectives training needs. With one process every helper is a no-op.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
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
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and \
            device.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise NMTError(f"device {name!r}: torch sees {n} CUDA GPU{'s' if n > 1 else ''} "
                       f"(cuda:0{f' to cuda:{n - 1}' if n > 1 else ''}); pick one of them "
                       f"or --device cuda")
    return device


def bf16_pays(device: torch.device) -> bool:
    """Whether bf16 autocast pays on `device`: a CPU with AVX512-BF16 but no AMX. There the same
    minutes buy more updates at the same validation BLEU; with AMX it gains nothing, and without
    native bf16 torch emulates it, several times slower. Not on CUDA: these small models leave a
    GPU waiting on kernel launches, not on arithmetic, and autocast's casts only add launches
    (bench/RESULTS.md, "Settings judged")."""
    return device.type == "cpu" and torch.cpu._is_avx512_bf16_supported() and \
        not torch.cpu._is_amx_tile_supported()


def uses_bf16(amp: bool | str, device: torch.device) -> bool:
    """train.amp or decode.amp on `device`: whether training updates or the search run under
    bf16 autocast (auto, and true as older recipes say: where bf16_pays; bf16: always)."""
    return amp == "bf16" or (amp in (True, "auto") and bf16_pays(device))


def cpu_count() -> int:
    """The cores this process may run on (its affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 1


def decode_batch_tokens(batch_tokens: int | str, device: torch.device | str) -> int:
    """decode.batch_tokens on `device`: a number as given; auto = 4,096 source tokens on a CPU,
    where larger batches gain nothing, and 16,384 on a GPU, where a batch of small models'
    kernels is bound by launches, so larger batches decode faster at the same BLEU; 16,384 and
    not more because a full beam-5 batch of the Transformer recipe then still fits a small GPU
    (bench/log/2026-12-04-gpu-h200-comparison.md)."""
    if batch_tokens != "auto":
        return int(batch_tokens)
    return 16384 if torch.device(device).type == "cuda" else 4096


def is_main_process() -> bool:
    """Whether this process is rank 0 (or the only one), from torchrun's environment: known
    before the process group is joined, which needs the device the recipe names."""
    return int(os.environ.get("WORLD_SIZE", "1")) == 1 or int(os.environ["RANK"]) == 0


def setup(device_name: str) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world == 1:
        return Dist(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if local_rank >= gpus:
            raise NMTError(f"torchrun started {local_world} processes on this machine but torch "
                           f"sees {gpus} CUDA GPU{'s' if gpus != 1 else ''}: local rank "
                           f"{local_rank} has no GPU of its own (one GPU per process). Start at "
                           f"most {gpus} (torchrun --nproc_per_node={gpus}), or train on the "
                           f"CPU with --device cpu")
        device = torch.device("cuda", local_rank)  # one GPU per process
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                **({"device_id": device} if device.type == "cuda" else {}))
    return Dist(rank, world, local_rank, local_world, device)


# the two cuBLAS workspace settings with which cuBLAS is deterministic (CUDA >= 10.2); the first
# is the faster, for 32 MiB of GPU memory per stream
CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")


def use_deterministic_algorithms(device: torch.device) -> None:
    """train.deterministic: deterministic kernels only (an op without one raises an error that
    names it), cuDNN's deterministic algorithms without autotuning, and a cuBLAS workspace
    setting that makes cuBLAS deterministic (CUBLAS_WORKSPACE_CONFIG, set here when unset).

    torch sizes cuBLAS's workspace from that variable once, at the process's first matrix
    multiply on the GPU, so it must be set before: training calls this before it builds its
    model, which is before any in a process that starts with nmt (the command line, torchrun's
    ranks). A program that multiplied matrices on the GPU before training (a notebook) should
    export the variable before it starts. The switches are process-wide: `kept_determinism`
    puts them back."""
    config = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if device.type == "cuda" and config is not None and config not in CUBLAS_DETERMINISTIC:
        raise NMTError(f"train.deterministic: CUBLAS_WORKSPACE_CONFIG is {config!r}, with which "
                       f"cuBLAS is not deterministic; unset it or set it to "
                       f"{' or '.join(CUBLAS_DETERMINISTIC)}")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC[0])
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


@contextmanager
def kept_determinism() -> Iterator[None]:
    """Put torch's deterministic-algorithm and cuDNN switches back as they were on leaving: they
    are process-wide, and a caller (tests, a comparison's next system) keeps its own. The cuBLAS
    variable stays set: torch may have read it already, and a later deterministic run needs it."""
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2:]


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
