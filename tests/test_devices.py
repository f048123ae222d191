"""Devices: a GPU index torch does not see, and more torchrun ranks on a machine than it has
GPUs, are user errors that say how many there are and what to do (checked with a pretend GPU
count, so they run on any machine)."""
import pytest
import torch

from nmt import distributed as dist
from nmt.errors import NMTError


@pytest.fixture
def gpus(monkeypatch):
    """Pretend torch sees `n` CUDA GPUs: gpus(n)."""
    def pretend(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    return pretend


def test_a_gpu_index_beyond_the_count_is_a_user_error(gpus):
    gpus(2)
    assert dist.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert dist.resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(NMTError, match=r"'cuda:2'.*sees 2 CUDA GPUs \(cuda:0 to cuda:1\)"):
        dist.resolve_device("cuda:2")
    gpus(1)
    with pytest.raises(NMTError, match=r"'cuda:1'.*sees 1 CUDA GPU \(cuda:0\)"):
        dist.resolve_device("cuda:1")


def torchrun(monkeypatch, rank: int, world: int) -> None:
    """The environment torchrun gives rank `rank` of `world` processes on one machine."""
    for k, v in {"WORLD_SIZE": world, "RANK": rank, "LOCAL_RANK": rank,
                 "LOCAL_WORLD_SIZE": world}.items():
        monkeypatch.setenv(k, str(v))


def test_more_ranks_than_gpus_is_a_clear_error(gpus, monkeypatch):
    gpus(1)
    torchrun(monkeypatch, rank=1, world=2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: pytest.fail("must stop before"))
    with pytest.raises(NMTError) as e:
        dist.setup("cuda")
    msg = str(e.value)
    assert "2 processes" in msg and "1 CUDA GPU" in msg and "local rank 1" in msg
    assert "--nproc_per_node=1" in msg and "--device cpu" in msg


def test_each_rank_gets_its_own_gpu_when_there_are_enough(gpus, monkeypatch):
    gpus(2)
    torchrun(monkeypatch, rank=1, world=2)
    picked = []
    monkeypatch.setattr(torch.cuda, "set_device", picked.append)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)  # no process group
    d = dist.setup("cuda")
    assert d.device == torch.device("cuda", 1) == picked[0] and (d.rank, d.world) == (1, 2)


@pytest.mark.parametrize("pays", [True, False])
def test_train_amp_auto_uses_bf16_only_where_it_pays(pays, monkeypatch):
    monkeypatch.setattr(dist, "bf16_pays", lambda device: pays)
    cpu = torch.device("cpu")
    assert dist.uses_bf16("auto", cpu) is pays
    assert dist.uses_bf16(True, cpu) is pays  # older recipes' `amp: true` reads as auto
    assert dist.uses_bf16("bf16", cpu) and not dist.uses_bf16(False, cpu)


def test_decode_batch_tokens_auto_is_larger_on_a_gpu_and_a_number_stays():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    # a GPU decodes a batch of small models' steps in about the time of a smaller one
    assert dist.decode_batch_tokens("auto", cpu) < dist.decode_batch_tokens("auto", cuda)
    assert dist.decode_batch_tokens("auto", "cpu") == 4096  # the size before auto, on a CPU
    assert dist.decode_batch_tokens(300, cuda) == dist.decode_batch_tokens(300, cpu) == 300


def test_bf16_pays_on_this_cpu_by_its_instruction_sets_and_never_on_cuda():
    assert dist.bf16_pays(torch.device("cpu")) == (
        torch.cpu._is_avx512_bf16_supported() and not torch.cpu._is_amx_tile_supported())
    # small models leave a GPU launch-bound: float32 (TF32) was faster than bf16 on an H200
    cuda = torch.device("cuda")
    assert not dist.bf16_pays(cuda) and not dist.uses_bf16("auto", cuda)
    assert dist.uses_bf16("bf16", cuda)
