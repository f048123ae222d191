"""Run directories: a lock one process holds, a failed start that leaves nothing in the way,
--overwrite that keeps the old run until the new one stands, resume from the checkpoint's own
recipe, and SIGTERM handled like Ctrl-C."""
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import nmt.training as training
from cli import app
from nmt import checkpoint, rundir
from nmt.config import load_recipe
from nmt.errors import NMTError
from nmt.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "smoke" / "transformer.yaml"
TINY = ["data.max_train_pairs=300", "data.max_valid_pairs=20", "tokenizer.vocab_size=300",
        "train.batch_tokens=600", "train.max_epochs=0", "train.max_steps=2",
        "train.valid_every=2", "train.log_every=1", "train.threads=1"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _data(data_dir, monkeypatch):
    monkeypatch.setenv("NMT_DATA_DIR", str(data_dir))



def recipe(*sets):
    return load_recipe(RECIPE, TINY + list(sets))


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_start_that_failed_before_any_checkpoint_can_simply_be_run_again(tmp_path, tok_dir):
    out = tmp_path / "run"
    with pytest.raises(NMTError, match="no split"):
        training.train(recipe("data.valid=nope"), out, quiet=True,
                       tokenizer=Tokenizer.load(tok_dir))
    assert (out / "recipe.yaml").is_file() and (out / "train.log").is_file()
    res = invoke("train", RECIPE, "--out", out, "--resume")
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "nothing to resume" in text and "without --resume" in text
    # no --overwrite needed
    s = training.train(recipe(), out, quiet=True, tokenizer=Tokenizer.load(tok_dir))
    assert s["steps"] == 2
    assert "nope" not in (out / "recipe.yaml").read_text()


def test_overwrite_keeps_the_old_run_until_the_new_one_has_data_and_model(tmp_path, tok_dir):
    out = tmp_path / "run"
    training.train(recipe(), out, quiet=True, tokenizer=Tokenizer.load(tok_dir))
    before = {p.name: p.read_bytes() for p in [out / "best.pt", out / "last.pt",
                                               out / "recipe.yaml", out / "tokenizer/spm.model"]}
    bad = recipe("data.source=files", f"data.path={tmp_path / 'typo'}")
    with pytest.raises(NMTError, match="file not found"):
        training.train(bad, out, overwrite=True, quiet=True, tokenizer=Tokenizer.load(tok_dir))
    after = {p.name: p.read_bytes() for p in [out / "best.pt", out / "last.pt",
                                              out / "recipe.yaml", out / "tokenizer/spm.model"]}
    assert before == after and not (out / rundir.STASH).exists()
    s = training.train(recipe("train.max_steps=4"), out, overwrite=True, quiet=True,
                       tokenizer=Tokenizer.load(tok_dir))
    assert s["steps"] == 4 and checkpoint.load(out, "last")["state"]["step"] == 4
    assert not (out / rundir.STASH).exists()


def test_a_run_directory_in_use_is_refused(tmp_path, tok_dir):
    out = tmp_path / "run"
    held = rundir.claim(out, resume=False, overwrite=False)
    with pytest.raises(NMTError, match=f"in use by a running training \\(process {os.getpid()}"):
        training.train(recipe(), out, quiet=True, tokenizer=Tokenizer.load(tok_dir))
    held.release()
    s = training.train(recipe(), out, quiet=True, tokenizer=Tokenizer.load(tok_dir))
    assert s["steps"] == 2


def test_a_lock_left_by_a_dead_process_does_not_block(tmp_path, tok_dir):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(out / rundir.LOCK)!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'999'); print('locked', flush=True)\n"
         "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(NMTError, match="in use"):
        rundir.claim(out, resume=False, overwrite=False)
    holder.kill()
    holder.wait()
    assert (out / rundir.LOCK).is_file()  # the file stays; its lock died with the process
    s = training.train(recipe(), out, quiet=True, tokenizer=Tokenizer.load(tok_dir))
    assert s["steps"] == 2
    fd = os.open(out / rundir.LOCK, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # and training let go of it at the end
    os.close(fd)


def test_resume_takes_the_recipe_from_the_checkpoint(tmp_path, tok_dir):
    out = tmp_path / "run"
    training.train(recipe("train.lr=0.003"), out, quiet=True, tokenizer=Tokenizer.load(tok_dir))
    r = rundir.resume_recipe(out, [])
    assert r.train.lr == 0.003 and r.train.max_steps == 2
    assert rundir.resume_recipe(out, ["train.max_steps=4", "train.lr=0.003"]).train.max_steps == 4
    with pytest.raises(NMTError, match="cannot change train.lr: 0.003 -> 0.1"):
        rundir.resume_recipe(out, ["train.lr=0.1"])
    # how the finished model decodes may change (a comparison whose beam changed while a
    # system was still training resumes it); what greedy validation depends on may not
    r = rundir.resume_recipe(out, ["decode.beam=3", "decode.alpha=1.0", "train.lr=0.003"])
    assert (r.decode.beam, r.decode.alpha) == (3, 1.0)
    r = rundir.resume_recipe(out, ["decode.shortlist=10", "decode.shortlist_frequent=50",
                                   "train.lr=0.003"])  # validation never uses a shortlist
    assert (r.decode.shortlist, r.decode.shortlist_frequent) == (10, 50)
    r = rundir.resume_recipe(out, ["train.tensorboard=false", "train.progress_every=5",
                                   "train.lr=0.003"])  # what the run reports, not what it learns
    assert (r.train.tensorboard, r.train.progress_every) == (False, 5)
    with pytest.raises(NMTError, match="cannot change decode.max_len_a"):
        rundir.resume_recipe(out, ["decode.max_len_a=2.0", "train.lr=0.003"])
    # the decoding batch size only groups the same lines (a run saved with a number resumes
    # under auto, its default since)
    saved = rundir.resume_recipe(out, ["decode.batch_tokens=4096", "train.lr=0.003"])
    assert saved.decode.batch_tokens == 4096
    assert rundir.resume_recipe(out, ["train.lr=0.003"]).decode.batch_tokens == "auto"
    res = invoke("train", "--out", out, "--resume", "--quiet", "--set", "train.max_steps=3")
    assert res.exit_code == 0, res.output
    assert checkpoint.load(out, "last")["state"]["step"] == 3


def test_a_best_checkpoint_copied_over_last_is_not_resumed(tmp_path, tok_dir):
    out = tmp_path / "run"
    training.train(recipe(), out, quiet=True, tokenizer=Tokenizer.load(tok_dir))
    (out / "last.pt").write_bytes((out / "best.pt").read_bytes())
    res = invoke("train", "--out", out, "--resume")
    assert res.exit_code == 2 and "not a checkpoint training can continue from" in \
        " ".join(res.output.split())


@pytest.mark.parametrize("target", ["file", "unwritable"])
def test_an_unusable_out_is_one_clear_error(tmp_path, target):
    out = tmp_path / "out"
    if target == "file":
        out.write_text("x")
        want = "is a file, not a directory"
    else:
        out = Path("/proc/nmt-no-such-dir/run")  # not creatable, even by root
        want = "cannot create the run directory"
    res = invoke("train", RECIPE, "--out", out, *[x for s in TINY for x in ("--set", s)])
    assert res.exit_code == 2 and want in " ".join(res.output.split()), res.output


def test_sigterm_saves_last_and_the_one_line_resume_command_works(tmp_path, data_dir):
    """SIGTERM (timeout, kill, cluster schedulers) stops like Ctrl-C; the printed command, with
    no recipe file and no --set, resumes a run started with a --set that is not resumable."""
    out = tmp_path / "run"
    env = {**os.environ, "NMT_DATA_DIR": str(data_dir), "COLUMNS": "40"}
    sets = TINY[:-4] + ["train.max_steps=400", "train.checkpoint_every=3", "train.log_every=1",
                        "train.threads=1", "train.lr=0.003"]
    p = subprocess.Popen([sys.executable, "cli.py", "train", str(RECIPE), "--quiet", "--out",
                          str(out), *[x for s in sets for x in ("--set", s)]], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "last.pt").is_file() and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert p.poll() is None, "the run ended before it could be stopped"
    p.send_signal(signal.SIGTERM)
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr
    hint = [line for line in stderr.splitlines() if "resume with" in line]
    assert hint == [f"resume with: nmt train --out {out} --resume"], stderr
    stopped = checkpoint.load(out, "last")
    assert 0 < stopped["state"]["step"] < 400
    cmd = hint[0].removeprefix("resume with: nmt ").split()
    res = subprocess.run([sys.executable, "cli.py", *cmd, "--quiet", "--set",
                          f"train.max_steps={stopped['state']['step'] + 2}"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    resumed = checkpoint.load(out, "last")
    assert resumed["state"]["step"] == stopped["state"]["step"] + 2
    assert resumed["recipe"]["train"]["lr"] == 0.003


def test_an_overwrite_killed_before_commit_gives_the_old_run_back(tmp_path, tok_dir, capsys):
    out = tmp_path / "run"
    training.train(recipe(), out, quiet=True, tokenizer=Tokenizer.load(tok_dir))
    best = (out / "best.pt").read_bytes()
    run = rundir.claim(out, resume=False, overwrite=True)  # the old run moved aside ...
    (out / "train.log").write_text("the new run's first line\n")
    run.release()  # ... and the process killed: no commit, no rollback
    assert not (out / "best.pt").exists()
    s = training.train(recipe(), out, resume=True, quiet=True)  # resumes the old run
    assert "previous run is back" in capsys.readouterr().err
    assert s["steps"] == 2 and not (out / rundir.STASH).exists()
    assert (out / "best.pt").read_bytes() == best
