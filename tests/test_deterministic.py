"""train.deterministic and exact resume of RNNs with dropout between layers.

The recipe field is typed like every other; turning it on asks torch for deterministic kernels,
cuDNN for deterministic algorithms and cuBLAS for a deterministic workspace, and a run puts
those process-wide switches back when it ends. A 2-layer GRU with dropout, stopped mid-epoch
and resumed through the real command line, ends bit-identical to the same run left alone: on
the CPU here, and on CUDA where a GPU is present (there cuDNN's own RNN dropout state must be
re-derived from the saved RNG state, which torch.cuda.get_rng_state() does not hold), where the
Transformer is checked too. The CUDA tests skip without a GPU; bench/gpu_check.sh runs them.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nmt.training as training
from nmt import distributed as dist
from nmt.config import recipe_from_dict
from nmt.errors import NMTError
from nmt.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "recipes" / "smoke"
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
STEPS, STOP = 11, 5  # ~8 updates per epoch: the stop at 5 is mid-epoch, the end in epoch 2
# validation only at the end, on short greedy outputs: it does not touch the training RNG
TINY = ["data.max_train_pairs=300", "data.max_valid_pairs=10", "tokenizer.vocab_size=300",
        "train.batch_tokens=2000", "train.max_epochs=0", "train.valid_every=1000",
        f"train.checkpoint_every={STOP}", "train.log_every=1", "train.threads=1",
        "model.enc_layers=2", "model.dec_layers=2", "model.dropout=0.3",
        "decode.max_len_a=0", "decode.max_len_b=5", "train.deterministic=true"]


def test_the_field_is_a_typed_bool_off_by_default():
    assert recipe_from_dict({}).train.deterministic is False
    assert recipe_from_dict({"train": {"deterministic": True}}).train.deterministic is True
    with pytest.raises(NMTError, match=r"train\.deterministic must be true or false"):
        recipe_from_dict({"train": {"deterministic": "yes"}})
    with pytest.raises(NMTError, match=r"--set.*train\.deterministic must be true or false"):
        recipe_from_dict({}, overrides=["train.deterministic=1"])


@pytest.fixture
def switches(monkeypatch):
    """torch's process-wide determinism switches, recorded instead of flipped (and put back)."""
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms",
                        lambda mode, warn_only=False: calls.append((mode, warn_only)))
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    return calls


def test_turning_it_on_sets_torch_cudnn_and_cublas(switches):
    dist.use_deterministic_algorithms(torch.device("cpu"))
    assert switches == [(True, False)]
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in dist.CUBLAS_DETERMINISTIC


def test_a_run_puts_the_switches_back(switches):
    with dist.kept_determinism():
        dist.use_deterministic_algorithms(torch.device("cpu"))
    assert switches[-1] == (False, False)  # as before (recorded: the real flag never changed)
    assert not torch.backends.cudnn.deterministic and torch.backends.cudnn.benchmark


def test_a_nondeterministic_cublas_setting_is_refused_on_cuda(switches, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":0:0")
    with pytest.raises(NMTError, match=r"train\.deterministic: CUBLAS_WORKSPACE_CONFIG is "
                                       r"':0:0'.*:4096:8"):
        dist.use_deterministic_algorithms(torch.device("cuda"))
    assert not switches
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # a deterministic one is kept
    dist.use_deterministic_algorithms(torch.device("cuda"))
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8" and switches == [(True, False)]


def test_training_turns_it_on_for_the_run_only(tmp_path, data_dir, tok_dir, monkeypatch):
    monkeypatch.setenv("NMT_DATA_DIR", str(data_dir))
    seen = []
    real_update = training.Trainer.update

    def update(self, group, stream=None):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return real_update(self, group, stream)

    monkeypatch.setattr(training.Trainer, "update", update)
    r = recipe_from_dict({}, overrides=TINY + ["data.source=multi30k", "train.max_steps=2",
                                               "train.device=cpu", "model.arch=rnn",
                                               "model.hidden_size=32", "model.emb_dim=16"])
    training.train(r, tmp_path / "run", quiet=True, tokenizer=Tokenizer.load(tok_dir))
    assert seen == [True, True] and not torch.are_deterministic_algorithms_enabled()
    assert "deterministic algorithms" in (tmp_path / "run" / "train.log").read_text()


def _cli(out: Path, *args: str, sets: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "cli.py"), "train", *args, "--quiet", "--out", str(out),
            *[x for s in sets for x in ("--set", s)]]


@pytest.mark.parametrize("system, device", [
    ("bahdanau", "cpu"), pytest.param("bahdanau", "cuda", marks=CUDA),
    pytest.param("transformer", "cuda", marks=CUDA)])  # on the CPU: tests/test_resume.py
def test_stopped_mid_epoch_and_resumed_ends_bit_identical(tmp_path, data_dir, system, device):
    """Through the real command line, each run in a fresh process (as cuBLAS's setting needs):
    the run left alone, and the run stopped at a mid-epoch checkpoint then resumed."""
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    env["NMT_DATA_DIR"] = str(data_dir)
    sets = TINY + [f"train.device={device}"]
    run = lambda *a, **kw: subprocess.run(*a, env=env, check=True, capture_output=True,
                                          cwd=ROOT, **kw)
    whole, stopped, recipe = tmp_path / "whole", tmp_path / "stopped", str(SMOKE / f"{system}.yaml")
    run(_cli(whole, recipe, sets=sets + [f"train.max_steps={STEPS}"]))
    run(_cli(stopped, recipe, sets=sets + [f"train.max_steps={STOP}"]))
    mid = torch.load(stopped / "last.pt", map_location="cpu", weights_only=False)["state"]
    assert mid["step"] == STOP and mid["batch_in_epoch"] > 0  # stopped mid-epoch
    run(_cli(stopped, "--resume", sets=[f"train.max_steps={STEPS}"]))
    a, b = (torch.load(p / "last.pt", map_location="cpu", weights_only=False)
            for p in (whole, stopped))
    assert a["state"]["step"] == b["state"]["step"] == STEPS and a["state"]["epoch"] > 1
    assert a["model"].keys() == b["model"].keys()
    different = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not different, f"weights differ after resume on {device}: {different[:5]}"


@CUDA
def test_cudnn_rnn_dropout_state_follows_the_saved_rng_state():
    """The hazard and the fix, on one GRU: restoring the CUDA generator alone does not give the
    dropout masks an uninterrupted run draws next, unless the cuDNN state was re-derived at the
    point the generator state was saved."""
    dev = torch.device("cuda")
    torch.manual_seed(0)
    gru = torch.nn.GRU(16, 16, num_layers=2, dropout=0.5, batch_first=True).to(dev).train()
    x = torch.randn(4, 7, 16, device=dev)
    with torch.no_grad():
        gru(x)                                          # the dropout state starts and advances
        saved = torch.cuda.get_rng_state(dev)
        going_on = gru(x)[0]                            # an uninterrupted run, next call
        torch.cuda.set_rng_state(saved, dev)
        resumed = gru(x)[0]                             # a resumed run, next call
        assert not torch.equal(going_on, resumed)       # the drift: the state was not saved

        torch.manual_seed(0)
        gru(x)
        saved = torch.cuda.get_rng_state(dev)
        training._reseed_rnn_dropout(dev)               # what Trainer.save does
        going_on = gru(x)[0]
        torch.cuda.set_rng_state(saved, dev)            # what Trainer._restore does
        resumed = gru(x)[0]
    assert torch.equal(going_on, resumed)
