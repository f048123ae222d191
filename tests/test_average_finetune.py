"""Checkpoint averaging (`nmt average`, train.average_last) and fine-tuning (`--init-from`)."""
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from nmt import checkpoint
from nmt.average import average, average_checkpoints
from nmt.config import load_recipe
from nmt.errors import NMTError
from nmt.finetune import load_init
from nmt.tokenizer import Tokenizer
from nmt.training import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.max_train_pairs=300", "data.max_valid_pairs=20", "tokenizer.vocab_size=300",
        "train.batch_tokens=600", "train.max_epochs=0", "train.max_steps=6",
        "train.valid_every=2", "train.log_every=1", "train.threads=1"]


def recipe(name="transformer", *sets):
    return load_recipe(ROOT / "recipes" / "smoke" / f"{name}.yaml", TINY + list(sets))


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    """A tiny run that keeps its last 3 periodic checkpoints and averages them at the end."""
    import os
    os.environ.setdefault("NMT_DATA_DIR", str(data_dir))
    out = tmp_path_factory.mktemp("avg") / "run"
    train(recipe("transformer", "train.keep_last=3", "train.average_last=3"), out, quiet=True)
    return out


def _weights(path):
    return checkpoint.load(path)["model"]


def test_average_is_the_elementwise_mean(run, tmp_path):
    steps = sorted(run.glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    assert [p.name for p in steps] == ["step-2.pt", "step-4.pt", "step-6.pt"]
    out = tmp_path / "avg.pt"
    assert average(run, [], 2, out) == steps[1:]
    got, a, b = _weights(out), _weights(steps[1]), _weights(steps[2])
    for k in got:
        assert torch.allclose(got[k], (a[k] + b[k]) / 2, atol=1e-6), k
    assert any(not torch.equal(a[k], b[k]) for k in a)  # training moved the weights
    # the same files named explicitly give the same checkpoint; one file averages to itself
    assert average(None, steps[1:], None, tmp_path / "named.pt") == steps[1:]
    assert all(torch.equal(v, _weights(tmp_path / "named.pt")[k]) for k, v in got.items())
    average(None, [steps[0]], None, tmp_path / "one.pt")
    assert all(torch.equal(v, _weights(steps[0])[k])
               for k, v in _weights(tmp_path / "one.pt").items())


def test_average_at_end_reports_its_bleu_beside_best(run):
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    avg = [r for r in recs if r["kind"] == "average"]
    assert len(avg) == 1 and avg[0]["averaged_steps"] == [2, 4, 6]
    best = max(r["val_bleu"] for r in recs if r["kind"] == "valid")
    assert avg[0]["best_bleu"] == best and 0 <= avg[0]["val_bleu"] <= 100
    assert "averaged the last 3 checkpoints" in (run / "train.log").read_text()
    expect = average_checkpoints(sorted(run.glob("step-*.pt")))["model"]
    got = _weights(run / "averaged.pt")
    assert all(torch.allclose(got[k], v) for k, v in expect.items())


def test_averaged_checkpoint_translates_from_the_cli(run, tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("Ein Hund läuft.\n\nZwei Männer.\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["translate", str(src), "--checkpoint",
                                   str(run / "averaged.pt"), "--beam", "2", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == 3


def _fake_checkpoint(src: Path, dst: Path, **changes) -> Path:
    ck = checkpoint.load(src)
    for k, v in changes.items():
        ck[k] = v(ck[k])
    checkpoint.save(dst, {k: v for k, v in ck.items() if k != "path"})
    return dst


def test_average_refuses_other_architectures_and_tokenizers(run, tmp_path):
    a = run / "step-4.pt"

    def wider(recipe):
        return {**recipe, "model": {**recipe["model"], "ff_dim": 256}}
    other_arch = _fake_checkpoint(a, tmp_path / "arch.pt", recipe=wider)
    with pytest.raises(NMTError, match=r"different architectures \(model.ff_dim: 256 vs 128"):
        average(None, [a, other_arch], None, tmp_path / "x.pt")
    other_tok = _fake_checkpoint(a, tmp_path / "tok.pt",
                                 tokenizer=lambda t: {**t, "src": t["src"][:-1] + b"x"})
    with pytest.raises(NMTError, match="different tokenizers"):
        average(None, [a, other_tok], None, tmp_path / "x.pt")
    runner = CliRunner()
    for args, msg in ([[str(run), "-o", "x.pt"], "--last K"],
                      [[str(run), "--last", "9", "-o", "x.pt"], "keep_last >= 9"],
                      [[str(a), "--last", "2", "-o", "x.pt"], "drop --last"],
                      [[str(a), str(other_arch), "-o", str(tmp_path / "y.pt")], "ff_dim"]):
        res = runner.invoke(app, ["average", *args])
        said = " ".join(res.output.split())  # rich wraps long lines
        assert res.exit_code == 2 and msg in said and "Traceback" not in said


def test_average_last_needs_the_checkpoints_kept():
    with pytest.raises(NMTError, match="train.average_last"):
        recipe("transformer", "train.keep_last=2", "train.average_last=3")


def test_init_from_starts_from_the_weights_and_fresh_state(run, tmp_path):
    best = checkpoint.load(run / "best.pt")
    r = recipe("transformer", "train.max_steps=2", "data.max_train_pairs=100")
    init = load_init(run, r)
    assert init.path == run / "best.pt"
    # with lr ~ 0 the fine-tuned weights stay those of the checkpoint
    frozen = recipe("transformer", "train.max_steps=2", "train.lr=1e-12", "train.min_lr=1e-13")
    out = tmp_path / "ft"
    train(frozen, out, quiet=True, tokenizer=init.tokenizer, init_weights=init.weights)
    ft = checkpoint.load(out / "last.pt")
    assert ft["state"]["step"] == 2  # the count starts fresh
    assert len(ft["optimizer"]["state"]) and ft["tokenizer"] == best["tokenizer"]
    assert all(torch.allclose(ft["model"][k], v, atol=1e-6) for k, v in best["model"].items())


def test_cli_init_from_and_its_errors(run, tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("NMT_DATA_DIR", str(data_dir))
    runner = CliRunner()
    base = ["train", str(ROOT / "recipes/smoke/transformer.yaml"), "--quiet"]
    sets = [a for s in TINY + ["train.max_steps=2"] for a in ("--set", s)]
    res = runner.invoke(app, [*base, *sets, "--out", str(tmp_path / "ft"), "--init-from",
                              str(run)])
    assert res.exit_code == 0, res.output
    assert "fine-tuning from" in res.output
    assert Tokenizer.load(tmp_path / "ft" / "tokenizer").to_state() == \
        checkpoint.load(run / "best.pt")["tokenizer"]
    for extra, msg in ((["--set", "model.d_model=32"], "model.d_model: 32 here, 64 in the"),
                       (["--set", "tokenizer.vocab_size=400"], "tokenizer.vocab_size: 400"),
                       (["--resume"], "pick one")):
        res = runner.invoke(app, [*base, *sets, *extra, "--out", str(tmp_path / "bad"),
                                  "--init-from", str(run)])
        assert res.exit_code == 2 and msg in " ".join(res.output.split()), res.output
    res = runner.invoke(app, [*base, *sets, "--out", str(tmp_path / "bad"), "--init-from",
                              str(tmp_path / "nothing.pt")])
    assert res.exit_code == 2 and "checkpoint not found" in " ".join(res.output.split())
