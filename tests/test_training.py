"""Training: every smoke recipe trains end to end, the loss falls, and the run directory,
schedule, non-finite guard and resume checks behave. Tiny slices and models keep it fast."""
import json
import math
from pathlib import Path

import pytest
import torch
from helpers_ckpt import tiny_model, toy_pairs
from typer.testing import CliRunner

import nmt.training as training
from nmt import checkpoint
from nmt.atomic import atomic_write
from nmt.batching import BATCHERS
from nmt.config import TrainConfig, load_recipe
from nmt.errors import NMTError
from nmt.tokenizer import PAD, Tokenizer

ROOT = Path(__file__).resolve().parents[1]
SMOKE = sorted((ROOT / "recipes" / "smoke").glob("*.yaml"))
TINY = ["data.max_train_pairs=300", "data.max_valid_pairs=20", "tokenizer.vocab_size=300",
        "train.batch_tokens=600", "train.max_epochs=0", "train.max_steps=4",
        "train.valid_every=2", "train.log_every=1", "train.threads=1"]


@pytest.fixture(autouse=True)
def _data(data_dir, monkeypatch):
    monkeypatch.setenv("NMT_DATA_DIR", str(data_dir))



def recipe(name="transformer", *sets):
    return load_recipe(ROOT / "recipes" / "smoke" / f"{name}.yaml", TINY + list(sets))


def records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_smoke_recipes_exist_and_cover_the_comparison():
    names = {p.stem for p in SMOKE}
    assert {"transformer", "bahdanau", "luong-dot", "luong-general", "luong-concat",
            "no-attention"} <= names
    for p in SMOKE:
        r = load_recipe(p)
        assert r.data.max_train_pairs and r.train.max_epochs  # a slice and a fixed budget
        assert p.read_text().startswith("#")                  # each says what it is for


@pytest.mark.parametrize("path", SMOKE, ids=[p.stem for p in SMOKE])
def test_every_smoke_recipe_trains_and_writes_a_usable_run(path, tmp_path, tok_dir):
    r = recipe(path.stem)
    out = tmp_path / "run"
    s = training.train(r, out, quiet=True, tokenizer=Tokenizer.load(tok_dir))
    assert s["steps"] == 4 and s["params"] > 0 and s["tokens_per_s"] > 0
    assert not s["interrupted"] and "max_steps" in s["stopped"]
    for f in ("best.pt", "last.pt", "recipe.yaml", "metrics.jsonl", "train.log",
              "tokenizer/spm.model"):
        assert (out / f).is_file(), f
    assert [x["step"] for x in records(out, "train")] == [1, 2, 3, 4]
    valid = records(out, "valid")
    assert [v["step"] for v in valid] == [2, 4]
    for v in valid:
        assert math.isfinite(v["val_loss"]) and v["val_ppl"] == pytest.approx(
            math.exp(v["val_loss"]), rel=1e-3)
        assert 0 <= v["val_bleu"] <= 100 and "tok:13a" in v["bleu_signature"]
    assert s["best_bleu"] == max(v["val_bleu"] for v in valid)
    model, tok, saved = checkpoint.load_for_inference(out)  # best.pt is enough to translate
    assert saved.model == r.model and not model.training
    last = checkpoint.load(out, which="last")
    assert last["state"]["step"] == 4 and last["optimizer"]["state"]
    assert "step" not in last  # the run's state is stored once, in "state"
    assert load_recipe(out / "recipe.yaml").model == r.model


def test_loss_falls_with_training(tmp_path, tok_dir):
    r = recipe("transformer", "train.max_steps=40", "train.valid_every=40",
               "train.schedule=constant", "train.lr=0.003")
    training.train(r, tmp_path / "run", quiet=True, tokenizer=Tokenizer.load(tok_dir))
    losses = [x["loss"] for x in records(tmp_path / "run", "train")]
    assert len(losses) == 40 and losses[0] > math.log(300)  # starts near uniform over the vocab
    assert sum(losses[-5:]) / 5 < losses[0] - 1.5


def test_sequence_loss_ignores_padding():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)
    tgt = torch.tensor([[4, 5, 6, PAD], [4, 5, PAD, PAD]])
    want = sum(torch.nn.functional.cross_entropy(logits[b, :n], tgt[b, :n], reduction="sum",
                                                 label_smoothing=0.1)
               for b, n in ((0, 3), (1, 2)))
    got = training.sequence_loss(logits, tgt, 0.1)
    assert torch.allclose(got, want)
    changed = logits.clone()
    changed[1, 2:] = 100.0  # whatever the model says at padded positions does not count
    assert torch.allclose(training.sequence_loss(changed, tgt, 0.1), want)


def test_inverse_sqrt_warms_up_to_the_peak_then_decays():
    cfg = TrainConfig(lr=1e-3, warmup=100, min_lr=1e-5)
    f = [training.lr_factor(s, cfg) for s in range(1, 100_001)]
    assert all(a < b for a, b in zip(f[:99], f[1:100]))       # linear warm-up
    assert f[99] == 1.0 and max(f) == 1.0                      # peak train.lr at the warm-up end
    assert f[399] == pytest.approx(0.5)                        # (100/400)^0.5: inverse sqrt
    assert min(f) == pytest.approx(cfg.min_lr / cfg.lr)        # floored at min_lr
    assert training.lr_factor(7, TrainConfig(schedule="constant")) == 1.0


def test_a_taken_run_dir_is_refused_unless_overwrite(tmp_path, tok_dir):
    out = tmp_path / "run"
    r = recipe("transformer", "train.max_steps=2")
    training.train(r, out, quiet=True, tokenizer=Tokenizer.load(tok_dir))
    with pytest.raises(NMTError, match="already holds a run.*--resume.*--overwrite"):
        training.train(r, out, quiet=True, tokenizer=Tokenizer.load(tok_dir))
    with pytest.raises(NMTError, match="pick one"):
        training.train(r, out, resume=True, overwrite=True, quiet=True)
    (out / "step-9.pt").write_bytes(b"stale")
    s = training.train(r, out, overwrite=True, quiet=True, tokenizer=Tokenizer.load(tok_dir))
    assert s["steps"] == 2 and not (out / "step-9.pt").exists()
    assert len(records(out, "train")) == 2  # the old run's records are gone


def test_resume_checks_the_recipe_and_continues(tmp_path, tok_dir):
    out = tmp_path / "run"
    training.train(recipe("bahdanau"), out, quiet=True, tokenizer=Tokenizer.load(tok_dir))
    with pytest.raises(NMTError, match="recipe mismatch.*model.hidden_size"):
        training.train(recipe("bahdanau", "model.hidden_size=64"), out, resume=True)
    with pytest.raises(NMTError, match="recipe mismatch.*model.attention"):
        training.train(recipe("luong-dot"), out, resume=True)
    with pytest.raises(NMTError, match="cannot change train.lr"):
        training.train(recipe("bahdanau", "train.lr=0.1"), out, resume=True)
    with pytest.raises(NMTError, match="nothing to resume"):
        training.train(recipe("bahdanau"), tmp_path / "empty", resume=True)
    s = training.train(recipe("bahdanau", "train.max_steps=6"), out, resume=True, quiet=True)
    assert s["steps"] == 6
    assert [x["step"] for x in records(out, "train")] == [1, 2, 3, 4, 5, 6]
    assert load_recipe(out / "recipe.yaml").train.max_steps == 6
    s = training.train(recipe("bahdanau", "train.max_steps=6"), out, resume=True, quiet=True)
    assert s["steps"] == 6 and "max_steps" in s["stopped"]  # a finished run stays finished
    assert len(records(out, "train")) == 6


def test_nonfinite_losses_are_skipped_then_stop_the_run(tmp_path, tok_dir, monkeypatch, capsys):
    real = training.sequence_loss
    calls = {"n": 0}

    def nan_on_third_call(logits, tgt, smoothing):
        calls["n"] += 1
        loss = real(logits, tgt, smoothing)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(training, "sequence_loss", nan_on_third_call)
    out = tmp_path / "run"
    s = training.train(recipe("transformer"), out, tokenizer=Tokenizer.load(tok_dir))
    assert s["steps"] == 4 and calls["n"] == 5  # one batch more: its update was skipped
    assert "update skipped" in capsys.readouterr().out
    assert all(math.isfinite(p.float().sum()) for p in checkpoint.load(out)["model"].values())

    good = (out / "last.pt").read_bytes()
    monkeypatch.setattr(training, "sequence_loss", lambda *a: real(*a) * float("nan"))
    r = recipe("transformer", "train.max_steps=20", "train.max_bad_steps=3")
    with pytest.raises(NMTError, match="3 updates in a row had a non-finite.*last good"):
        training.train(r, out, resume=True, quiet=True)
    assert (out / "last.pt").read_bytes() == good  # the last good checkpoint is untouched


def test_keep_last_keeps_the_newest_periodic_checkpoints(tmp_path, tok_dir):
    r = recipe("transformer", "train.max_steps=5", "train.checkpoint_every=1",
               "train.keep_last=2", "train.valid_every=5")
    training.train(r, tmp_path / "run", quiet=True, tokenizer=Tokenizer.load(tok_dir))
    assert sorted(p.name for p in (tmp_path / "run").glob("step-*.pt")) == \
        ["step-4.pt", "step-5.pt"]
    assert checkpoint.load(tmp_path / "run" / "step-4.pt")["state"]["step"] == 4


def test_cli_train_reports_user_errors_in_one_line(tmp_path):
    from cli import app

    res = CliRunner().invoke(app, ["train", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "recipe not found" in res.output
    res = CliRunner().invoke(app, ["train", str(SMOKE[0]), "--out", str(tmp_path / "x"),
                                   "--resume"])
    assert res.exit_code == 2 and "nothing to resume" in " ".join(res.output.split())
    assert "Traceback" not in res.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_is_a_user_error(tmp_path):
    with pytest.raises(NMTError, match="no CUDA GPU.*--device cpu"):
        training.train(recipe("transformer", "train.device=cuda"), tmp_path / "run")


def test_trainer_update_steps_once_and_reports_what_it_did():
    """Trainer.update without a run directory (as bench/ uses it): one optimizer step per call,
    the tokens it counts are the batches' real target tokens, and the loss falls on a batch it
    keeps seeing."""
    torch.manual_seed(0)
    model = tiny_model("transformer").train()
    pairs = toy_pairs(64, seed=3)
    cfg = TrainConfig(lr=3e-3, schedule="constant", max_steps=10)
    t = training.Trainer(model, cfg, pairs)
    group = [list(range(0, 16)), list(range(16, 32))]  # two micro-batches, one update
    first = t.update(group)
    want = sum(len(y) + 1 for _, y in pairs[:32])
    assert not first.skipped and first.tokens == first.update_tokens == want
    assert t.state.step == 1 and t.state.tokens == want and first.lr == pytest.approx(3e-3)
    for _ in range(8):
        last = t.update(group)
    assert t.state.step == 9 and last.loss / last.tokens < first.loss / first.tokens - 0.3
    with pytest.raises(RuntimeError, match="only update"):
        t.save("last")


@pytest.mark.parametrize("family", ["transformer", "rnn-luong-general"])  # the RNN: an LSTM
@pytest.mark.parametrize("amp", ["bf16", False])
def test_train_amp_decides_whether_updates_run_under_bf16_autocast(amp, family):
    """train.amp=bf16 runs the update's forward under CPU bf16 autocast (the loss still falls),
    false keeps it in float32, whatever the CPU can do."""
    torch.manual_seed(0)
    model = tiny_model(family).train()
    pairs = toy_pairs(32, seed=3)
    t = training.Trainer(model, TrainConfig(lr=3e-3, schedule="constant", max_steps=10,
                                            amp=amp), pairs)
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append(torch.is_autocast_enabled("cpu")))
    group = [list(range(0, 16))]
    first = t.update(group)
    for _ in range(6):
        last = t.update(group)
    assert set(seen) == {amp == "bf16"}
    assert last.loss / last.tokens < first.loss / first.tokens - 0.3


@pytest.mark.parametrize("batching", ["bucket", "mixed"])
def test_train_batching_chooses_the_epochs_batches(batching):
    pairs = toy_pairs(200, seed=4)
    cfg = TrainConfig(batching=batching, batch_tokens=120, seed=9)
    t = training.Trainer(tiny_model("transformer"), cfg, pairs)
    lens = [len(x) for x, _ in pairs], [len(y) for _, y in pairs]
    assert t.epoch_batches(2) == BATCHERS[batching](*lens, 120, 9, 2)
    other = BATCHERS["mixed" if batching == "bucket" else "bucket"](*lens, 120, 9, 2)
    assert t.epoch_batches(2) != other


def test_an_interrupted_atomic_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"x": 1})
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path, binary=True) as f:
            f.write(b"half a checkpoint")
            raise KeyboardInterrupt
    assert checkpoint.load(path)["x"] == 1 and [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    with atomic_write(tmp_path / "out.txt") as f:
        f.write("done\n")
    assert (tmp_path / "out.txt").read_text() == "done\n"


def test_max_minutes_stops_after_the_update_that_spends_it_and_resume_can_extend_it(
        tmp_path, tok_dir):
    out = tmp_path / "run"
    # 6 ms: spent by the first update, the only stopping rule left
    r = recipe("transformer", "train.max_steps=0", "train.max_minutes=0.0001")
    s = training.train(r, out, quiet=True, tokenizer=Tokenizer.load(tok_dir))
    assert s["steps"] == 1 and "max_minutes" in s["stopped"]
    assert records(out, "valid")[-1]["step"] == 1  # best.pt has seen the final weights
    # a time limit is when to stop, not what the updates compute: --resume may raise it
    s = training.train(recipe("transformer", "train.max_steps=3", "train.max_minutes=60"), out,
                       resume=True, quiet=True)
    assert s["steps"] == 3 and "max_steps" in s["stopped"]
    with pytest.raises(NMTError, match="train.max_steps.*max_minutes"):
        recipe("transformer", "train.max_steps=0", "train.max_minutes=0")
    with pytest.raises(NMTError, match="train.max_minutes"):
        recipe("transformer", "train.max_minutes=-1")
