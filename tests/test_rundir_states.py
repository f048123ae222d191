"""The run-directory state machine (rundir.py) killed at every step: claim, --overwrite, commit
and rollback, by SIGKILL and by SIGTERM, each in a forked child (no training inside), then the
invariant checked: the old complete run or the new one is there, and the next claim or
`--resume` finds it."""
import os
import shutil
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from nmt import rundir
from nmt.errors import NMTError

OLD = {"last.pt": "old last", "best.pt": "old best", "recipe.yaml": "old recipe",
       "train.log": "old log", "metrics.jsonl": "old metrics", "tokenizer/spm.model": "old spm",
       "step-4.pt": "old step 4"}
NEW = {"recipe.yaml": "new recipe", "train.log": "new log", "tokenizer/spm.model": "new spm"}


def write(out: Path, files: dict) -> None:
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)


def content(out: Path) -> dict:
    return {str(p.relative_to(out)): p.read_text() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != rundir.LOCK}


def old_run(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    out.mkdir(parents=True)
    write(out, OLD)
    return out


def in_child(fn, kill_at: int, sig: int) -> tuple[int, int]:
    """Run fn() in a forked child whose rundir steps are counted; at step `kill_at` the child
    sends itself `sig`. Returns (steps seen, wait status)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(r)
            seen = [0]

            def hook(step: str) -> None:
                seen[0] += 1
                os.write(w, b".")
                if seen[0] == kill_at:
                    os.kill(os.getpid(), sig)

            rundir._step_hook = hook
            fn()
        except BaseException:  # noqa: BLE001 - the child reports by exit status only
            code = 3
        finally:
            os._exit(code)
    os.close(w)
    steps = 0
    while chunk := os.read(r, 64):
        steps += len(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return steps, status


def overwrite_and_commit(out: Path) -> None:
    with rundir.claim(out, resume=False, overwrite=True) as run:
        write(out, NEW)
        run.commit()
        write(out, {"last.pt": "new last"})


def overwrite_and_fail(out: Path) -> None:
    with rundir.claim(out, resume=False, overwrite=True):
        write(out, NEW)
        raise NMTError("the new run's data is missing")


def check_invariant(out: Path, committed_new: bool | None) -> str:
    """After the next claim (as --resume makes it): the old run complete, or the new one with
    nothing of the old. Returns which."""
    rundir.claim(out, resume=True, overwrite=False).release()
    found = content(out)
    assert not (out / rundir.STASH).exists()
    if found == OLD:
        assert committed_new is not True
        return "old"
    assert committed_new is not False, found
    assert found.get("last.pt") in (None, "new last") and "best.pt" not in found, found
    assert not any(v.startswith("old") for v in found.values()), found
    return "new"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
@pytest.mark.parametrize("scenario", ["commit", "rollback"])
def test_killed_at_every_step_the_old_or_the_new_run_is_there(tmp_path, sig, scenario):
    fn = overwrite_and_commit if scenario == "commit" else overwrite_and_fail
    total, _ = in_child(lambda: fn(old_run(tmp_path / "dry")), 0, sig)  # count the steps
    assert total >= 6
    outcomes = []
    for k in range(1, total + 1):
        base = tmp_path / f"k{k}"
        out = old_run(base)
        in_child(lambda: fn(out), k, sig)
        outcomes.append(check_invariant(out, False if scenario == "rollback" else None))
    if scenario == "commit":  # once the new run had committed, the old one never came back
        assert outcomes[-1] == "new" and outcomes == sorted(outcomes, key=["old", "new"].index)


def test_a_stash_left_by_a_failed_delete_never_replaces_the_new_run(tmp_path, monkeypatch):
    """Item 1: commit()'s delete of the old run fails (an immutable or busy file); the next
    claim must not put the old run back over the new, complete one."""
    out = old_run(tmp_path)

    def cannot_delete(path, ignore_errors=False, **kw):  # as rmtree meets `chattr +i`
        if not ignore_errors:
            raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(shutil, "rmtree", cannot_delete)
    overwrite_and_commit(out)
    monkeypatch.undo()
    rundir.claim(out, resume=True, overwrite=False).release()
    found = content(out)
    assert found["last.pt"] == "new last" and found["recipe.yaml"] == "new recipe"
    assert "best.pt" not in found and not (out / rundir.STASH).exists()


def test_resume_after_an_overwrite_killed_before_commit_finds_the_old_run(tmp_path):
    """Item 2: `nmt train --out RUN --resume` after an --overwrite stopped by SIGKILL before it
    committed answers with the old run, not "nothing to resume"."""
    out = old_run(tmp_path)
    run = rundir.claim(out, resume=False, overwrite=True)
    write(out, NEW)
    run.release()  # killed: no commit, no rollback
    res = CliRunner().invoke(app, ["train", "--out", str(out), "--resume"])
    text = " ".join(res.output.split())
    assert "nothing to resume" not in text and "nothing is lost" not in text
    assert "not a readable checkpoint" in text  # the old (fake) last.pt is back and read
    assert content(out) == OLD


def test_sigterm_before_commit_puts_the_old_run_back_with_a_message(tmp_path):
    out = old_run(tmp_path)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            with rundir.claim(out, resume=False, overwrite=True):
                write(out, NEW)
                os.kill(os.getpid(), signal.SIGTERM)
        except NMTError as e:
            code = 5 if "previous run is back in place" in str(e) else 4
        except BaseException:  # noqa: BLE001
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 5
    assert content(out) == OLD and not (out / rundir.STASH).exists()
