"""Issue 32's reliability items outside the run-directory state machine (test_rundir_states.py):
export never deletes a run and leaves no partial directory, a full disk is one error naming
the file, bracketed words survive rich, no traceback for odd paths and inputs, one output line
per input line whatever separators a translation holds, and the smaller items."""
import builtins
import errno
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

import cli
from cli import app
from nmt import atomic, checkpoint, prediction, rundir
from nmt.compare import runs, stale
from nmt.config import load_recipe, recipe_from_dict
from nmt.data import read_lines
from nmt.errors import NMTError

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")
LONG = "x" * 300  # a file name over the 255 bytes a name may have


def invoke(*args):
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in res.output, res.output
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), \
        repr(res.exception)
    return res, " ".join(res.output.split())


@pytest.fixture
def run(tmp_path, trained_run):
    """A copy of the shared tiny Transformer run, with a lock file as training leaves it."""
    d = tmp_path / "run"
    shutil.copytree(trained_run, d)
    (d / rundir.LOCK).write_text("1\n")
    return d


class _FullFile(io.RawIOBase):
    """A file on a disk that fills up after `room` bytes."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def writable(self):
        return True

    def write(self, b):
        self.room -= len(b)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.f.write(b)

    def flush(self):
        if not self.f.closed:
            self.f.flush()

    def fileno(self):
        return self.f.fileno()

    def close(self):
        if not self.closed:
            super().close()
            self.f.close()


def full_disk(monkeypatch, under: Path, room: int = 100) -> None:
    """Every file opened for writing under `under` (by open() or os.fdopen, as atomic_write
    does) runs out of space after `room` bytes."""
    real_open, real_fdopen = builtins.open, os.fdopen

    def wrap(f, path, mode):
        inside = str(Path(path).resolve()).startswith(str(under.resolve()))
        return _FullFile(f, room) if inside and any(c in mode for c in "wax") else f

    def fake_open(file, mode="r", *a, **kw):
        f = real_open(file, mode, *a, **kw)
        return wrap(f, file, mode) if isinstance(file, (str, Path)) else f

    def fake_fdopen(fd, mode="r", *a, **kw):
        path = os.readlink(f"/proc/self/fd/{fd}")
        return wrap(real_fdopen(fd, mode, *a, **kw), path, mode)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(atomic.os, "fdopen", fake_fdopen)


# ----------------------------------------------------------------------------- export (3, 5, 10)

def test_export_never_replaces_a_run_directory(run, tmp_path):
    pytest.importorskip("ctranslate2")
    before = sorted(p.name for p in run.iterdir())
    for target in (run, run / "tokenizer", tmp_path):  # the run, inside it, above it
        res, text = invoke("export", run, "-o", target, "--force")
        assert res.exit_code == 2 and "run" in text and str(target) in text, text
        assert sorted(p.name for p in run.iterdir()) == before
    assert (run / "best.pt").is_file()
    starting = tmp_path / "starting"  # a training that holds its lock, nothing written yet
    held = rundir.claim(starting, resume=False, overwrite=False)
    try:
        res, text = invoke("export", run, "-o", starting, "--force")
        assert res.exit_code == 2 and "training run directory" in text, text
    finally:
        held.release()


def test_export_to_a_file_or_a_long_name_is_one_error(run, tmp_path):
    pytest.importorskip("ctranslate2")
    f = tmp_path / "file.txt"
    f.write_text("keep me")
    for target, says in ((f, "is a file"), (f / "sub", "not a directory"),
                         (tmp_path / LONG, "name too long")):
        res, text = invoke("export", run, "-o", target, "--force")
        assert res.exit_code == 2 and says in text.lower(), text
    assert f.read_text() == "keep me"


def test_export_on_a_full_disk_leaves_no_partial_directory(run, tmp_path, monkeypatch):
    pytest.importorskip("ctranslate2")
    out = tmp_path / "exports" / "ct2"
    out.parent.mkdir()
    full_disk(monkeypatch, out.parent, room=1000)
    res, text = invoke("export", run, "-o", out)
    assert res.exit_code == 2 and "disk full" in text and "exports" in text, text
    assert list(out.parent.iterdir()) == []
    monkeypatch.undo()
    res, text = invoke("export", run, "-o", out)  # and with room, it works, --force replaces it
    assert res.exit_code == 0, text
    (out / "stray").write_text("x")
    res, text = invoke("export", run, "-o", out, "--force")
    assert res.exit_code == 0 and not (out / "stray").exists(), text
    assert sorted(p.name for p in out.parent.iterdir()) == ["ct2"]


# ----------------------------------------------------------------------------- full disk (5)

def test_torch_failing_on_a_full_disk_is_one_error_and_keeps_the_checkpoint(tmp_path,
                                                                             monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"model": {"w": torch.zeros(3)}})
    before = path.read_bytes()
    full_disk(monkeypatch, tmp_path, room=100)
    with pytest.raises(NMTError, match=r"last.pt: disk full.*previous last.pt is kept"):
        checkpoint.save(path, {"model": {"w": torch.zeros(10_000)}})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_average_on_a_full_disk_is_one_error(run, tmp_path, monkeypatch):
    full_disk(monkeypatch, tmp_path / "avg", room=100)
    (tmp_path / "avg").mkdir()
    res, text = invoke("average", run / "best.pt", "-o", tmp_path / "avg" / "a.pt")
    assert res.exit_code == 2 and "a.pt: disk full" in text, text
    assert list((tmp_path / "avg").iterdir()) == []


# ----------------------------------------------------------------------------- rich (6)

def test_bracketed_words_survive_error_printing(tmp_path, capsys):
    @cli.user_errors
    def fails():
        raise NMTError("CTranslate2 is not installed; pip install 'nmt[ctranslate2]' or "
                       "sacrebleu[ja]")

    with pytest.raises(typer.Exit):
        fails()
    err = " ".join(capsys.readouterr().err.split())
    assert "pip install 'nmt[ctranslate2]' or sacrebleu[ja]" in err
    res, text = invoke("average", tmp_path / "[run]" / "a.pt", "-o", tmp_path / "b.pt")
    assert res.exit_code == 2 and "[run]/a.pt" in text, text
    res, text = invoke("data", "stats", "--set", "data.test=[a, b")
    assert res.exit_code == 2 and "data.test=[a, b" in text, text


# ----------------------------------------------------------------------------- tracebacks (10)

def test_a_name_too_long_for_any_output_is_one_error(run, tmp_path):
    cases = [("translate", "--checkpoint", run, "-o", tmp_path / LONG),
             ("average", run / "best.pt", "-o", tmp_path / (LONG + ".pt")),
             ("attention", "--checkpoint", run, "--text", "ein Hund", "-o",
              tmp_path / (LONG + ".png")),
             ("train", ROOT / "recipes/smoke/transformer.yaml", "--out", tmp_path / LONG)]
    for args in cases:
        res, text = invoke(*args)
        assert res.exit_code == 2 and "too long" in text.lower(), (args[0], text)


def test_deeply_nested_inputs_are_one_error(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(NMTError, match="deep.yaml: .*nested"):
        load_recipe(deep)
    listkey = tmp_path / "listkey.yaml"
    listkey.write_text("train:\n  ? [a, b]\n  : 1\n")
    with pytest.raises(NMTError, match="(?s)listkey.yaml: .*must be a name, not a list.*line 2"):
        load_recipe(listkey)
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text('{"de": "a", "en": "b"}\n' + "[" * 100_000 + "\n")
    from nmt.data import load_split
    cfg = recipe_from_dict({"data": {"source": "jsonl", "path": str(tmp_path)}}).data
    with pytest.raises(NMTError, match="train.jsonl: line 2.*nested"):
        load_split(cfg, "train")


# ----------------------------------------------------------------------------- one line (11)

@pytest.mark.parametrize("sep", ["\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85",
                                 "\u2028", "\u2029", "\t", "\r\n"])
def test_no_line_separator_survives_in_a_translation(sep):
    line = prediction._one_line(f"a{sep}b")
    assert line.splitlines() == [line] and len(line.split("\t")) == 1 and "a" in line


# ----------------------------------------------------------------------------- smaller (12)

def test_yaml_merge_keys_are_accepted(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("base: &base\n  lr: 0.002\n  seed: 3\ntrain:\n  <<: *base\n  seed: 4\n")
    from nmt.config import read_yaml
    values = read_yaml(p)
    assert values["train"] == {"lr": 0.002, "seed": 4}
    dup = tmp_path / "dup.yaml"
    dup.write_text("train:\n  lr: 1\n  lr: 2\n")
    with pytest.raises(NMTError, match="duplicate key 'lr'"):
        read_yaml(dup)


def test_a_cr_only_file_says_so(tmp_path):
    from nmt.data import read_lines
    p = tmp_path / "train.de"
    p.write_bytes(b"ein Hund\rzwei Katzen\rdrei\r")
    with pytest.raises(NMTError, match=r"train.de: .*CR"):
        read_lines(p)
    p.write_bytes(b"ein Hund\r\nzwei\r\n")  # CRLF is fine
    assert read_lines(p) == ["ein Hund", "zwei"]


def test_translate_refuses_to_write_over_its_input(run, tmp_path):
    src = tmp_path / "x.de"
    src.write_text("ein Hund\n")
    res, text = invoke("translate", src, "--checkpoint", run, "-o", src)
    assert res.exit_code == 2 and "input" in text, text
    assert src.read_text() == "ein Hund\n"


def test_the_resume_command_quotes_a_path_with_spaces(tmp_path):
    out = tmp_path / "my runs" / "a [b]"
    cmd = rundir.resume_command(out)
    assert shlex.split(cmd) == ["nmt", "train", "--out", str(out), "--resume"]


def test_jobs_logs_are_appended_with_a_header_per_attempt(tmp_path):
    log = tmp_path / "sys.log"
    for attempt in ("first", "second"):
        fd = runs._open_log(log, "sys")
        os.write(fd, f"{attempt} attempt's output\n".encode())
        os.close(fd)
    text = log.read_text()
    assert "first attempt's output" in text and "second attempt's output" in text
    assert text.count("==== sys:") == 2 and text.index("first") < text.index("second")


def test_average_refuses_a_missing_output_directory_like_translate(run, tmp_path):
    for args in (("average", run / "best.pt", "-o", tmp_path / "no" / "a.pt"),
                 ("translate", "--checkpoint", run, "-o", tmp_path / "no" / "a.txt"),
                 ("attention", "--checkpoint", run, "--text", "ein Hund", "-o",
                  tmp_path / "no" / "a.png")):
        res, text = invoke(*args)
        assert res.exit_code == 2 and "does not exist; create it first" in text, (args, text)
    assert not (tmp_path / "no").exists()


def test_averaging_one_checkpoint_says_one(run, tmp_path):
    res, text = invoke("average", run / "best.pt", "-o", tmp_path / "a.pt")
    assert res.exit_code == 0 and "averaged 1 checkpoint (" in text, text


# ----------------------------------------------------------------------------- --jobs (8)

def test_a_child_dies_with_its_parent_killed_by_sigkill(tmp_path):
    """compare --jobs children (compare.runs._die_with_parent, as _run_alone calls it) end when
    their parent is SIGKILLed instead of training on, holding the systems' locks."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", f"""
import os, time
from nmt.compare import runs

if os.fork() == 0:  # the child, as _run_alone starts
    runs._die_with_parent()
    with open({str(pid_file)!r} + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace({str(pid_file)!r} + ".tmp", {str(pid_file)!r})
    time.sleep(60)
    os._exit(0)
time.sleep(60)
"""], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 60
    while not pid_file.is_file():
        assert time.time() < deadline and parent.poll() is None
        time.sleep(0.05)
    child = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while _alive(child):
        assert time.time() < deadline, "the child outlived its SIGKILLed parent"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_compare_decodes_with_the_recipes_threads(run, tmp_path):
    r = recipe_from_dict({"train": {"threads": 1}, "decode": {"beam": 1}})
    src = ["ein Hund", "zwei Katzen"]
    torch.set_num_threads(2)
    try:
        runs._decode(run, src, tmp_path / "t.hyp", "cpu", r, stale.decode_key(r, src))
        assert torch.get_num_threads() == 2  # the caller's setting is given back
    finally:
        torch.set_num_threads(1)
    info = json.loads((tmp_path / "t.json").read_text())
    assert info["device"] == "cpu (1 thread)" and len(read_lines(tmp_path / "t.hyp")) == 2


def test_the_device_column_says_the_threads_a_run_used():
    assert runs._device_name(torch.device("cpu"), threads=1) == "cpu (1 thread)"
    assert runs._device_name(torch.device("cpu"), threads=3) == "cpu (3 threads)"
