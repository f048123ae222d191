"""Exact resumption and data parallelism, through the real command line.

A run killed with SIGKILL mid-epoch, or stopped with Ctrl-C, and resumed from last.pt must end
with bit-identical weights to the same run left alone (dropout on, so RNG states matter too).
Two torchrun ranks, on one machine or as two nodes, must match one process accumulating the same
two batches per update.
"""
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes" / "smoke" / "transformer.yaml")
STEPS = 36
# ~13 updates per epoch; checkpoints every 5 updates land mid-epoch; validation per epoch. On the
# CPU, where resuming is bit-identical without train.deterministic (README, Guarantees), and one
# process per rank fits any machine; CUDA: tests/test_deterministic.py
TINY = ["train.device=cpu", "data.max_train_pairs=300", "data.max_valid_pairs=20",
        "tokenizer.vocab_size=300", "train.batch_tokens=600", "train.max_epochs=0",
        f"train.max_steps={STEPS}", "train.valid_every=0", "train.checkpoint_every=5",
        "train.log_every=1", "train.threads=1", "train.accum_steps=2", "model.dropout=0.2"]


def cli(*args: str, sets=TINY) -> list[str]:
    return [sys.executable, str(ROOT / "cli.py"), "train", RECIPE, "--quiet", *args,
            *[x for s in sets for x in ("--set", s)]]


@pytest.fixture(scope="module")
def env(data_dir):
    return {**os.environ, "NMT_DATA_DIR": str(data_dir)}


def weights(run: Path) -> dict:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=False)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a["state"]["step"] == b["state"]["step"] and a["model"].keys() == b["model"].keys()
    different = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not different, f"weights differ: {different[:5]}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, env):
    out = tmp_path_factory.mktemp("resume") / "whole"
    subprocess.run(cli("--out", str(out)), env=env, check=True, capture_output=True, cwd=ROOT)
    return weights(out)


def start_and_stop(out: Path, env, sig: int) -> subprocess.CompletedProcess:
    """Start a run, wait for its first checkpoint (plus a little), then send `sig`."""
    p = subprocess.Popen(cli("--out", str(out)), env=env, cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "last.pt").is_file() and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # some updates past the checkpoint, which the resumed run must redo
    assert p.poll() is None, "the run ended before it could be stopped; raise train.max_steps"
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=120)
    return subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)


def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tmp_path, env, uninterrupted):
    out = tmp_path / "killed"
    killed = start_and_stop(out, env, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    ckpt = weights(out)
    st = ckpt["state"]
    assert 0 < st["step"] < STEPS and st["batch_in_epoch"] > 0  # killed mid-epoch
    subprocess.run(cli("--out", str(out), "--resume"), env=env, check=True, capture_output=True,
                   cwd=ROOT)
    assert_same_weights(weights(out), uninterrupted)
    steps = [line for line in (out / "metrics.jsonl").read_text().splitlines()
             if '"kind": "train"' in line]
    assert len(steps) == STEPS  # records logged after the checkpoint were not duplicated


def test_ctrl_c_saves_last_and_says_how_to_resume(tmp_path, env, uninterrupted):
    out = tmp_path / "interrupted"
    stopped = start_and_stop(out, env, signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr
    assert f"resume with: nmt train --out {out} --resume\n" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert 0 < weights(out)["state"]["step"] < STEPS
    subprocess.run(cli("--out", str(out), "--resume"), env=env, check=True, capture_output=True,
                   cwd=ROOT)
    assert_same_weights(weights(out), uninterrupted)


# 20 updates of 2 batches each, dropout off: what data-parallel ranks must end equal to
PARALLEL = [*TINY[1:-2], "train.max_steps=20", "model.dropout=0"]


@pytest.fixture(scope="module")
def accumulating(tmp_path_factory, env):
    """last.pt of one CPU process accumulating two batches per update (PARALLEL)."""
    out = tmp_path_factory.mktemp("accumulating") / "single"
    subprocess.run(cli("--out", str(out), sets=["train.device=cpu", *PARALLEL,
                                                 "train.accum_steps=2"]),
                   env=env, check=True, capture_output=True, cwd=ROOT)
    return weights(out)


@pytest.mark.parametrize("device", [
    "cpu",
    # two GPUs over NCCL, under deterministic kernels: runs where a machine has two (the GPU
    # check's first tests); float rounding may differ a little more there
    pytest.param("cuda", marks=pytest.mark.skipif(torch.cuda.device_count() < 2,
                                                  reason="needs 2 CUDA GPUs")),
])
def test_two_ranks_match_one_process_accumulating(tmp_path, env, device, request):
    """Same global batch per update (2 ranks x 1 batch vs 1 rank x 2 batches), dropout off: the
    loss normalisation by the update's total target tokens makes the gradients equal."""
    sets = [f"train.device={device}", *PARALLEL]
    if device == "cuda":
        sets.append("train.deterministic=true")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    if device == "cuda":
        subprocess.run(cli("--out", str(single), sets=sets + ["train.accum_steps=2"]), env=env,
                       check=True, capture_output=True, cwd=ROOT)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", *cli("--out", str(ddp), sets=sets)[1:]],
                         env=env, capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    a = weights(single) if device == "cuda" else request.getfixturevalue("accumulating")
    b = weights(ddp)
    sa, sb = a["state"], b["state"]
    assert sa["step"] == sb["step"] == 20 and b["world"] == 2 and len(b["rng"]) == 2
    assert sa["epoch"] == sb["epoch"] > 1  # an epoch end, where a rank may run short, was crossed
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-5 if device == "cpu" else 1e-4,
                              rtol=0), k


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(importlib.util.find_spec("torch.distributed.run") is None
                    or not torch.distributed.is_available()
                    or not torch.distributed.is_gloo_available(),
                    reason="needs torchrun (torch.distributed.run) with the gloo backend")
def test_two_nodes_match_one_process_accumulating(tmp_path, env, accumulating):
    """torchrun's own multi-node launch: two "machines" on 127.0.0.1 (--nnodes 2, one rank
    each, static rendezvous at --master_addr:--master_port, gloo) writing one run directory on
    a shared file system, as a SLURM job on two nodes does (docs/multinode.md); they must end
    where one process accumulating the same two batches per update ends."""
    ddp = tmp_path / "nodes"
    port = _free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
                               "--nproc_per_node=1", f"--node_rank={k}",
                               "--master_addr=127.0.0.1", f"--master_port={port}",
                               *cli("--out", str(ddp), sets=["train.device=cpu", *PARALLEL])[1:]],
                              env={**env, "GLOO_SOCKET_IFNAME": "lo"}, cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for k in (0, 1)]
    outs = []
    try:
        for p in nodes:
            outs.append(p.communicate(timeout=300))
    finally:
        for p in nodes:  # a node left waiting for its peer must not outlive the test
            if p.poll() is None:
                p.kill()
                p.communicate()
    for k, (p, (_, err)) in enumerate(zip(nodes, outs)):
        assert p.returncode == 0, f"node {k}: {err[-3000:]}"
    a, b = accumulating, weights(ddp)
    assert a["state"]["step"] == b["state"]["step"] == 20 and b["world"] == 2
    assert a["state"]["epoch"] == b["state"]["epoch"] > 1
    assert len(b["rng"]) == 2  # each node's rank saved its RNG state through rank 0
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-5, rtol=0), k
