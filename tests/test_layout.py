"""The run-directory and comparison layout has one owner (nmt/layout.py): periodic checkpoints
are listed, found and pruned by step there, no other module spells a layout file name, and
training takes a loaded tokenizer and reads last.pt once per --resume, under the lock."""
import ast
import errno
import fcntl
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import nmt.training as training
from cli import app
from nmt import checkpoint, layout
from nmt.config import load_recipe
from nmt.tokenizer import INFO_FILE, Tokenizer

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "smoke" / "transformer.yaml"
TINY = ["data.max_train_pairs=300", "data.max_valid_pairs=20", "tokenizer.vocab_size=300",
        "train.batch_tokens=600", "train.max_epochs=0", "train.max_steps=2",
        "train.valid_every=2", "train.log_every=1", "train.threads=1"]


# ----------------------------------------------------------------------------- periodic checkpoints

def touch(d: Path, *names: str) -> None:
    for n in names:
        (d / n).write_text(n)


def test_periodic_checkpoints_are_listed_by_step_not_by_name(tmp_path):
    touch(tmp_path, "step-10.pt", "step-9.pt", "step-100.pt", "step-x.pt", "step-5.pt.tmp",
          "last.pt", "step-7.json")
    found = layout.periodic(tmp_path)
    assert [p.name for p in found] == ["step-9.pt", "step-10.pt", "step-100.pt"]
    assert [layout.step_of(p) for p in found] == [9, 10, 100]
    assert layout.step_of(tmp_path / "step-x.pt") is None
    assert layout.step_of(tmp_path / layout.LAST) is None
    assert layout.periodic(tmp_path / "missing") == []


def test_the_checkpoint_of_a_step_is_found_where_its_step_says(tmp_path):
    p = layout.periodic_path(tmp_path, 1200)
    assert p.parent == tmp_path and layout.step_of(p) == 1200
    touch(tmp_path, p.name)
    assert layout.periodic(tmp_path) == [p]


def save_last(d: Path, text: str) -> None:
    """As checkpoint.save writes last.pt: a new file renamed over the old one."""
    (d / "tmp").write_text(text)
    os.replace(d / "tmp", d / layout.LAST)


def test_keep_periodic_keeps_the_newest_k_copies_of_last(tmp_path):
    for step in range(1, 6):
        save_last(tmp_path, f"state at {step}")
        layout.keep_periodic(tmp_path, step, keep=3)
    kept = layout.periodic(tmp_path)
    assert [layout.step_of(p) for p in kept] == [3, 4, 5]
    assert [p.read_text() for p in kept] == ["state at 3", "state at 4", "state at 5"]
    assert (tmp_path / layout.LAST).read_text() == "state at 5"
    layout.keep_periodic(tmp_path, 5, keep=3)  # the same step again: replaced, not doubled
    assert [layout.step_of(p) for p in layout.periodic(tmp_path)] == [3, 4, 5]


def test_keep_periodic_with_keep_one_writes_none_and_pruning_spares_the_newest(tmp_path):
    (tmp_path / layout.LAST).write_text("x")
    layout.keep_periodic(tmp_path, 4, keep=1)
    assert layout.periodic(tmp_path) == []
    touch(tmp_path, "step-2.pt", "step-20.pt", "step-3.pt")
    layout.prune_periodic(tmp_path, 1)
    assert [p.name for p in layout.periodic(tmp_path)] == ["step-20.pt"]
    assert (tmp_path / layout.LAST).is_file()


def test_a_checkpoints_step_is_read_from_its_state_or_its_own_record():
    assert layout.checkpoint_step({"state": {"step": 7}, "step": 3}) == 7  # training's
    assert layout.checkpoint_step({"step": 3}) == 3  # an averaged checkpoint's
    assert layout.checkpoint_step({}) is None


def test_a_comparison_lays_out_its_systems_and_a_run_knows_its_comparison(tmp_path):
    where = layout.ComparisonDir(tmp_path)
    run = where.system("bahdanau-seed1")
    assert layout.ComparisonDir.of_system(run) == where
    assert layout.ComparisonDir.of_system(tmp_path / "runs" / "bahdanau") is None
    assert where.hypotheses("bahdanau", "test") == layout.hypotheses(run.parent / "bahdanau",
                                                                     "test")
    assert where.system_log("x").parent == where.systems and where.tokenizer != where.heldout
    assert layout.decoding_record(where.hypotheses("x", "test")).suffix == ".json"
    # the run directory's own names never collide with a comparison's per-system files
    names = {layout.LAST, layout.BEST, layout.AVERAGED, layout.RECIPE, layout.METRICS,
             layout.LOG, layout.DATA_RECORD, layout.TOKENIZER, layout.TENSORBOARD,
             layout.HELDOUT, layout.SHORTLIST, layout.DONE}
    assert len(names) == 12 and layout.hypotheses(run, "test").name not in names


# ----------------------------------------------------------------------------- no other spelling

# names that identify a layout file wherever they appear in a string
FILE_NAMES = (layout.LAST, layout.BEST, layout.AVERAGED, layout.RECIPE, layout.METRICS,
              layout.LOG, layout.DATA_RECORD, layout.SHORTLIST, layout.RESULTS, layout.REPORT,
              layout.REPORT_HTML, layout.LEARNING_CURVES, layout.TOKENIZER_SETTINGS, layout.DONE,
              layout.HYPOTHESES, layout.PERIODIC.split("{")[0])  # step-N.pt: its "step-"
# plain words (also recipe sections and JSON keys): a layout name only as a path component
DIR_NAMES = (layout.TOKENIZER, layout.TENSORBOARD, layout.HELDOUT, layout.SYSTEMS, layout.LOCK,
             layout.STASH, layout.PARTIAL, layout.TRASH)


def _code_files() -> list[Path]:
    files = sorted((ROOT / "nmt").rglob("*.py")) + [ROOT / "cli.py"]
    return [p for p in files if p != ROOT / "nmt" / "layout.py"]


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, kinds) and n.body and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)}


def spellings(source: str) -> list[tuple[int, str]]:
    """(line, name) of each layout name spelled in a string literal of `source`: a file name
    anywhere in a string (f-strings' literal parts included), a directory name as the right
    side of a `/` path join. Docstrings describe the layout and may name its files."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    found = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
            found += [(n.lineno, name) for name in FILE_NAMES if name in n.value]
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) and \
                isinstance(n.right, ast.Constant) and isinstance(n.right.value, str):
            first = n.right.value.split("/")[0]
            found += [(n.lineno, first)] if first in DIR_NAMES else []
    return found


def test_the_scan_finds_each_kind_of_spelling():
    src = ('"""Writes last.pt."""\n'
           'a = out / "last.pt"\n'
           'b = f"{out}/step-{n}.pt"\n'
           'c = out / "tokenizer" / "spm.model"\n'
           'd = {"tokenizer": 1, "systems": {}}\n'
           'e = f"saved {layout.LAST}"\n'
           'g = out.glob("step-*.pt")\n')
    assert sorted(spellings(src)) == [(2, layout.LAST), (3, "step-"), (4, layout.TOKENIZER),
                                      (7, "step-")]


def test_no_module_spells_a_layout_name_but_layout():
    found = [f"{p.relative_to(ROOT)}:{line}: {name}" for p in _code_files()
             for line, name in spellings(p.read_text(encoding="utf-8"))]
    assert not found, "spelled outside nmt/layout.py (use its constants):\n" + "\n".join(found)


# ----------------------------------------------------------------------------- train() and resume

@pytest.fixture
def _data(data_dir, monkeypatch, one_thread):
    monkeypatch.setenv("NMT_DATA_DIR", str(data_dir))


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


@pytest.mark.usefixtures("_data")
def test_train_takes_a_loaded_tokenizer_and_copies_it_byte_for_byte(tmp_path, tok_dir):
    assert (tok_dir / INFO_FILE).is_file()  # a built tokenizer: its record is copied too
    out = tmp_path / "run"
    s = training.train(load_recipe(RECIPE, TINY), out, quiet=True,
                       tokenizer=Tokenizer.load(tok_dir))
    assert s["steps"] == 2
    assert _files(out / layout.TOKENIZER) == _files(tok_dir)
    # a tokenizer from a checkpoint (fine-tuning) has no record: its models alone, as saved
    init = Tokenizer.from_state(checkpoint.load(out)["tokenizer"])
    init.save(tmp_path / "saved")
    out2 = tmp_path / "finetuned"
    training.train(load_recipe(RECIPE, TINY), out2, quiet=True, tokenizer=init)
    assert _files(out2 / layout.TOKENIZER) == _files(tmp_path / "saved")
    assert INFO_FILE not in _files(out2 / layout.TOKENIZER)


def _locked(lock: Path) -> bool:
    """Whether some open file holds the flock on `lock` (this process's claim counts: flock
    locks belong to open files, so a second open of the same file is refused too)."""
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError as e:
        assert e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
        return True
    finally:
        os.close(fd)


@pytest.mark.usefixtures("_data")
def test_resume_reads_last_pt_once_while_holding_the_lock(tmp_path, tok_dir, monkeypatch):
    out = tmp_path / "run"
    training.train(load_recipe(RECIPE, TINY), out, quiet=True, tokenizer=Tokenizer.load(tok_dir))
    reads = []
    real_load = torch.load

    def counting_load(f, *args, **kwargs):
        if Path(str(f)).name == layout.LAST:
            reads.append(_locked(out / layout.LOCK))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    res = CliRunner().invoke(app, ["train", "--out", str(out), "--resume", "--quiet",
                                   "--set", "train.max_steps=4"])
    assert res.exit_code == 0, res.output
    assert reads == [True]  # once, and under the run directory's lock
    monkeypatch.undo()
    assert checkpoint.load(out, "last")["state"]["step"] == 4
    assert not _locked(out / layout.LOCK)  # let go at the end
