"""Following a run: plain progress lines without a terminal (also in train.log), and
TensorBoard events when tensorboard is installed."""
import json
from pathlib import Path

import pytest

from nmt.config import load_recipe
from nmt.errors import NMTError
from nmt.live import ProgressLines, TensorBoardLog, clock
from nmt.training import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.max_train_pairs=300", "data.max_valid_pairs=20", "tokenizer.vocab_size=300",
        "train.batch_tokens=600", "train.max_epochs=0", "train.max_steps=4",
        "train.valid_every=2", "train.log_every=1", "train.threads=1"]


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_lines_every_n_updates_or_seconds():
    out, now = [], Clock()
    by_steps = ProgressLines(100, 10, 0, True, out.append, now)
    for step in range(1, 31):
        now.t += 2.0
        by_steps(step, 1, 3.0, 1e-3, 1000.0, now.t)
    assert [line.split()[1] for line in out] == ["10/100", "20/100", "30/100"]
    # 30 updates took 60 s (the clock started before the first): 70 more take 140 s
    assert out[-1].endswith("elapsed 0:01:00 eta 0:02:20")
    out.clear()
    by_time = ProgressLines(100, 0, 5.0, True, out.append, now)
    for step in range(1, 11):
        now.t += 2.0
        by_time(step, 2, 3.0, 1e-3, 1000.0, now.t)
    assert [line.split()[1] for line in out] == ["3/100", "6/100", "9/100"]  # 6 s apart
    assert "epoch 2 loss 3.000 lr 1.0e-03 1,000 tok/s" in out[0]
    out.clear()
    ProgressLines(100, 1, 1.0, False, out.append, now)(1, 1, 1.0, 1.0, 1.0, 1.0)
    ProgressLines(100, 0, 0, True, out.append, now)(1, 1, 1.0, 1.0, 1.0, 1.0)
    assert out == [] and clock(3725) == "1:02:05"


@pytest.fixture
def _data(data_dir, monkeypatch):
    monkeypatch.setenv("NMT_DATA_DIR", str(data_dir))


@pytest.mark.usefixtures("_data")
def test_a_run_without_a_terminal_logs_progress_lines(tmp_path, capsys):
    recipe = load_recipe(ROOT / "recipes/smoke/transformer.yaml",
                         TINY + ["train.progress_every=1", "train.tensorboard=false"])
    train(recipe, tmp_path / "run", quiet=True)  # pytest's stdout is not a terminal
    shown = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    logged = [line.split(" ", 2)[2] for line in
              (tmp_path / "run" / "train.log").read_text().splitlines()
              if line.split(" ", 2)[2].startswith("step ")]
    assert [line.split()[1] for line in shown] == ["1/4", "2/4", "3/4", "4/4"]
    assert logged == shown and shown[-1].endswith("eta 0:00:00")
    assert not (tmp_path / "run" / "tensorboard").exists()


@pytest.mark.usefixtures("_data")
def test_tensorboard_events_hold_the_metrics_and_attention(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = load_recipe(ROOT / "recipes/smoke/bahdanau.yaml", TINY)
    train(recipe, tmp_path / "run", quiet=True)
    ev = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0})
    ev.Reload()
    tags = ev.Tags()
    assert {"train/loss", "train/lr", "train/tok_per_s", "valid/val_loss", "valid/val_ppl",
            "valid/val_bleu"} <= set(tags["scalars"])
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
            .splitlines()]
    want = [(r["step"], r["loss"]) for r in recs if r["kind"] == "train"]
    got = [(e.step, e.value) for e in ev.Scalars("train/loss")]
    assert [s for s, _ in got] == [s for s, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-5)
    assert [e.step for e in ev.Images("valid/attention")] == [2, 4]


def test_tensorboard_missing_or_off_is_quiet_or_says_so(tmp_path, monkeypatch):
    import builtins

    warned = []
    off = TensorBoardLog(tmp_path, False, warned.append)
    off.record({"kind": "train", "step": 1, "loss": 1.0})
    off.close()
    real = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    TensorBoardLog(tmp_path, True, warned.append).record({"kind": "valid", "step": 1})
    assert len(warned) == 1 and "pip install 'nmt[tensorboard]'" in warned[0]
    # the default, auto, writes events when it can and says nothing on a plain install
    TensorBoardLog(tmp_path, "auto", warned.append).record({"kind": "valid", "step": 1})
    assert len(warned) == 1
    assert not (tmp_path / "tensorboard").exists()


def test_train_tensorboard_takes_true_false_or_auto():
    smoke = Path(__file__).resolve().parents[1] / "recipes" / "smoke" / "transformer.yaml"
    assert load_recipe(smoke).train.tensorboard == "auto"
    assert load_recipe(smoke, ["train.tensorboard=false"]).train.tensorboard is False
    with pytest.raises(NMTError, match="train.tensorboard.*true, false or auto"):
        load_recipe(smoke, ["train.tensorboard=sometimes"])
    with pytest.raises(NMTError, match="train.tensorboard must be a bool or str"):
        load_recipe(smoke, ["train.tensorboard=[1]"])
