"""SIGTERM during a validation (a scheduler's grace period is short) and during the final
validation of averaged.pt: the run stops within a decoding batch, saves last.pt and says so;
--resume redoes the abandoned validation first, so it ends exactly as a run never stopped."""
import json
import os
import signal
from pathlib import Path

import pytest

import nmt.training as training
from nmt import checkpoint
from nmt.config import load_recipe
from nmt.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "smoke" / "transformer.yaml"
TINY = ["data.max_train_pairs=300", "data.max_valid_pairs=20", "tokenizer.vocab_size=300",
        "train.batch_tokens=600", "train.max_epochs=0", "train.max_steps=4",
        "train.valid_every=2", "train.log_every=1", "train.threads=1", "train.keep_last=2",
        "train.average_last=2", "train.checkpoint_every=2", "decode.batch_tokens=40"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _data(data_dir, monkeypatch):
    monkeypatch.setenv("NMT_DATA_DIR", str(data_dir))


def records(out: Path) -> list[dict]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall"} for r in rows if r["kind"] != "train"]


def test_sigterm_in_a_validation_stops_within_a_batch_and_resumes_exactly(tmp_path, tok_dir,
                                                                          monkeypatch):
    recipe = load_recipe(RECIPE, TINY)
    whole = training.train(recipe, tmp_path / "whole", quiet=True,
                           tokenizer=Tokenizer.load(tok_dir))
    assert whole["threads"] == 1 and not whole["interrupted"]  # the threads the run used

    real, calls, batches = training.translate_lines, [], []

    def signalled(model, tok, lines, dcfg, device, progress=False, check=None):
        """Validation's decoding; SIGTERM arrives with its first batch at the `at`-th call."""
        calls.append(len(lines))

        def batch_done():
            batches.append(len(calls))
            if len(calls) == at and batches.count(at) == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            if check is not None:
                check()
        return real(model, tok, lines, dcfg, device, progress, check=batch_done)

    monkeypatch.setattr(training, "translate_lines", signalled)
    out = tmp_path / "stopped"
    at = 1  # the validation at step 2
    s = training.train(recipe, out, quiet=True, tokenizer=Tokenizer.load(tok_dir))
    assert s["interrupted"] and s["steps"] == 2 and batches == [1]  # no batch after the signal
    assert checkpoint.load(out, "last")["state"]["step"] == 2
    assert [r for r in records(out) if r["kind"] == "valid"] == []

    calls.clear(), batches.clear()
    at = 3  # resumed: the validation at 2 again, the one at 4, then averaged.pt's
    s = training.train(recipe, out, resume=True, quiet=True)
    assert s["interrupted"] and s["steps"] == 4 and len(calls) == 3
    assert "stopped while validating averaged.pt" in (out / "train.log").read_text()

    calls.clear(), batches.clear()
    at = 0
    s = training.train(recipe, out, resume=True, quiet=True)
    assert not s["interrupted"] and len(calls) == 1  # only averaged.pt is validated again
    assert records(out) == records(tmp_path / "whole")
    a = checkpoint.load(out, "last")["model"]
    b = checkpoint.load(tmp_path / "whole", "last")["model"]
    assert all((a[k] == b[k]).all() for k in a)
