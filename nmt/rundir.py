"""A run directory's life: claiming it, locking it, replacing an old run, resuming, stopping.

What a run directory promises (README, "Guarantees"):
- one process at a time: the directory is locked (flock on `.lock`) for the whole run; the kernel
  drops the lock when its process dies, however it dies, so a crash never leaves it stuck;
- a directory without a checkpoint (a run that failed or was stopped before its first one) is
  simply started again: nothing in it is worth keeping;
- `--overwrite` moves the old run aside and deletes it only once the new run has loaded its data
  and built its model; if the new run fails, is stopped (Ctrl-C, SIGTERM) or killed (SIGKILL, a
  power cut) before that, the old run is put back as it was (at once, or by the next claim or
  `--resume` of the directory);
- `--resume` continues from last.pt with the recipe stored in it (the recipe file is not read);
  only when to stop and where to run may change;
- Ctrl-C and SIGTERM (what `timeout`, `kill` and cluster schedulers send) both finish the
  current update (or give up the current validation at its next batch: training.Abandoned),
  write last.pt and stop.

The invariant every step below keeps, whatever kills the process between two of them:
  A run with a checkpoint is never deleted or replaced except by a commit() that has its
  successor in place (data loaded, model built). Until that commit every file of the old run is
  either in the directory or in `.replaced/` (or `.replaced.partial/` while files move), never
  both, never neither, and the next claim or --resume puts it back whole; after the commit (one
  rename of `.replaced/` to `.replaced.committed-PID`) nothing brings it back over the new run.
The directory's states, and the step (one rename or one delete) that leaves each:
  run R                -> .replaced.partial/ filling up with R   (claim_fresh with --overwrite)
  .replaced.partial/   -> .replaced/ = R complete                 (one rename)
  .replaced/ + new run without checkpoint -> .replaced.committed-PID/  (commit: one rename; the
                          delete that follows may fail or be killed: what is left is only
                          deleted, by this or a later claim)
  .replaced/ + new run -> new run's files deleted, then .replaced.partial/ (rollback) -> R
tests/test_rundir_states.py kills a process at every step, by SIGKILL and SIGTERM, and checks it.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shlex
import shutil
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from nmt import checkpoint, layout
from nmt.config import Recipe, recipe_from_dict, to_dict
from nmt.errors import NMTError

# what a run writes into its directory; finding any of them means the directory is taken
# (besides the periodic step-N.pt checkpoints; nmt/layout.py spells every name)
CHECKPOINTS = (layout.LAST, layout.BEST)
RUN_OUTPUTS = (*CHECKPOINTS, layout.METRICS, layout.RECIPE, layout.LOG, layout.TOKENIZER,
               layout.AVERAGED, layout.TENSORBOARD)
# recipe fields that --resume may change: when to stop, where to run, what the run reports, and
# how the finished model decodes; nothing that changes what the updates compute. Validation
# decodes greedily with the recipe's length limits, and its BLEU steers the plateau schedule and
# best.pt, so decode.max_len_a/b stay fixed; beam, length penalty, n-best and sampling settings
# are not used by it, and decode.batch_tokens only groups the same lines (its auto value follows
# the device, which may change too).
RESUMABLE = ("train.max_steps", "train.max_epochs", "train.max_minutes", "train.patience",
             "train.max_bad_steps", "train.device", "train.threads", "train.tensorboard",
             "train.progress_every", "train.progress_seconds", "train.cuda_graphs",
             "decode.beam", "decode.alpha", "decode.nbest", "decode.batch_tokens", "decode.sample",
             "decode.temperature", "decode.top_k", "decode.top_p", "decode.seed",
             "decode.shortlist", "decode.shortlist_frequent",  # validation decodes without one
             # where the data lies: training resumes only on the content it was trained on
             # (checked by its identity, training._same_data)
             "data.path", "data.src_file", "data.tgt_file")
LOCK, STASH, PARTIAL, TRASH = layout.LOCK, layout.STASH, layout.PARTIAL, layout.TRASH
# keys every checkpoint written by training holds, so that --resume can continue from it
RESUME_KEYS = ("recipe", "tokenizer", "model", "optimizer", "scheduler", "rng", "state")


def outputs(out_dir: Path) -> list[Path]:
    """Everything of a run in out_dir (checkpoints, logs, recipe, tokenizer)."""
    if not out_dir.is_dir():
        return []
    return [out_dir / n for n in RUN_OUTPUTS if (out_dir / n).exists()] + layout.periodic(out_dir)


def has_checkpoint(out_dir: Path) -> bool:
    return any((out_dir / n).is_file() for n in CHECKPOINTS) or bool(layout.periodic(out_dir))


def _remove(p: Path) -> None:
    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


# called between the steps of the state machine with the step's name; tests kill the process there
_step_hook: Callable[[str], None] | None = None


def _step(name: str) -> None:
    if _step_hook is not None:
        _step_hook(name)


@contextmanager
def _uninterrupted():
    """Ctrl-C and SIGTERM wait until the block's steps are done (they arrive right after it);
    only SIGKILL or a power cut can stop it halfway, which recover() then completes."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS) if main else None
    try:
        yield
    finally:
        if before is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _stopped(signum, frame):
    raise KeyboardInterrupt


def _writable_dir(out_dir: Path) -> None:
    """out_dir exists as a directory we may write in, or one clear error saying why not."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NMTError(f"--out {out_dir}: is a file, not a directory; choose a directory for the "
                       f"run")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NMTError(f"--out {out_dir}: cannot create the run directory "
                       f"({e.strerror or e}); choose a writable place") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise NMTError(f"--out {out_dir}: not writable; choose a writable place")


class RunDir:
    """A claimed run directory: holds its lock and, with --overwrite, the old run until commit()."""

    def __init__(self, out_dir: Path, active: bool = True):
        self.out_dir, self.active = Path(out_dir), active
        self._lock_fd: int | None = None
        self._stash: Path | None = None
        self._term = None  # SIGTERM's handler before claim_fresh stashed a run

    # ---- locking

    def lock(self) -> None:
        """Take the directory's lock, or say who holds it. flock: released when the holder dies."""
        _writable_dir(self.out_dir)
        path = self.out_dir / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise NMTError(f"{path}: cannot create the lock file ({e.strerror or e}); choose a "
                           f"writable --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "another process"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise NMTError(f"{self.out_dir} is in use by a running training (process "
                               f"{holder}); wait for it to finish, stop it, or choose another "
                               f"--out") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock; the file itself may stay
            self._lock_fd = None

    # ---- claiming a fresh run

    def claim_fresh(self, overwrite: bool) -> None:
        """Make room for a new run. Leftovers without a checkpoint are cleared; a real run is
        refused unless overwrite, in which case it is moved aside until commit()."""
        taken = outputs(self.out_dir)
        if not taken:
            return
        if not has_checkpoint(self.out_dir):  # a start that failed or was stopped early
            for p in taken:
                _remove(p)
            return
        if not overwrite:
            names = ", ".join(sorted(p.name for p in taken))
            raise NMTError(f"{self.out_dir} already holds a run ({names}); pass --resume to "
                           f"continue it, --overwrite to replace it, or choose another --out")
        partial, stash = self.out_dir / PARTIAL, self.out_dir / STASH
        with _uninterrupted():
            _step("stash: make")
            partial.mkdir()
            for p in taken:
                _step(f"stash: move {p.name}")
                os.replace(p, partial / p.name)
            _step("stash: complete")
            os.replace(partial, stash)  # from here the old run is whole in .replaced/
            self._stash = stash
            # SIGTERM until commit(): unwind through rollback(), as Ctrl-C does, instead of
            # dying with the old run set aside
            if threading.current_thread() is threading.main_thread():
                self._term = signal.signal(signal.SIGTERM, _stopped)
        _step("stash: done")

    def recover(self) -> bool:
        """Finish what a killed process (SIGKILL, power cut) left between two steps: delete a
        committed stash, put back an uncommitted one; True if an old run was put back."""
        for trash in self.out_dir.glob(f"{TRASH}*"):
            shutil.rmtree(trash, ignore_errors=True)
        partial, stash = self.out_dir / PARTIAL, self.out_dir / STASH
        if partial.is_dir():  # everything of the run in out_dir is the old run's: move the rest
            with _uninterrupted():
                self._unstash(partial)
            return True
        if not stash.is_dir():
            return False
        if has_checkpoint(self.out_dir):  # cannot happen: a new run saves only after commit
            raise NMTError(f"{self.out_dir} holds a run with a checkpoint and, in {STASH}/, the "
                           f"run it replaced; keep the one you want (move the other away), "
                           f"then run again")
        self._stash = stash
        self.rollback()
        return True

    def commit(self) -> None:
        """The new run has its data and model: the old one may go now."""
        if self._stash is None:
            return
        trash = self.out_dir / f"{TRASH}-{os.getpid()}"
        with _uninterrupted():
            _step("commit: rename")
            os.replace(self._stash, trash)  # the commit: .replaced/ is never restored again
            self._stash = None
            self._restore_term()
        _step("commit: delete")
        shutil.rmtree(trash, ignore_errors=True)
        if trash.exists():  # an immutable or busy file; it is never read again
            print(f"warning: {trash}: could not delete all of the replaced run; delete it "
                  f"yourself", file=sys.stderr)

    def rollback(self) -> None:
        """The new run failed before commit(): drop what it wrote and put the old run back."""
        if self._stash is None:
            return
        partial = self.out_dir / PARTIAL
        with _uninterrupted():
            if has_checkpoint(self.out_dir):  # never delete a checkpoint to make room
                raise NMTError(f"{self.out_dir} holds a checkpoint and, in {STASH}/, the run "
                               f"it replaced; keep the one you want (move the other away)")
            for p in outputs(self.out_dir):  # the new run's: no checkpoint among them
                _step(f"rollback: delete {p.name}")
                _remove(p)
            _step("rollback: unstash")
            os.replace(self._stash, partial)
            self._stash = None
            self._unstash(partial)
            self._restore_term()

    def _unstash(self, partial: Path) -> None:
        for p in sorted(partial.iterdir()):
            _step(f"rollback: move {p.name}")
            os.replace(p, self.out_dir / p.name)
        _step("rollback: done")
        partial.rmdir()

    def _restore_term(self) -> None:
        if self._term is not None:
            signal.signal(signal.SIGTERM, self._term)
            self._term = None

    def abandon(self, exc: BaseException | None) -> None:
        """The claim ends with `exc` before commit(): put the old run back; a stop signal (Ctrl-C,
        SIGTERM) is then said as such."""
        stashed = self._stash is not None
        self.rollback()
        if stashed and isinstance(exc, KeyboardInterrupt):
            raise NMTError(f"{self.out_dir}: stopped before the new run had its data and "
                           f"model; the previous run is back in place") from None

    # ---- as a context manager around a whole training

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None:
                self.abandon(exc)
        finally:
            self._restore_term()
            self.release()


def claim(out_dir: Path, resume: bool, overwrite: bool, active: bool = True) -> RunDir:
    """Lock out_dir (only where `active`: rank 0 of a distributed run) and, for a new run, clear
    or stash what is there. Use as `with claim(...) as run:` and call run.commit() once the data
    is loaded and the model built."""
    run = RunDir(out_dir, active)
    if not active:
        return run
    run.lock()
    try:
        if run.recover():
            _say_recovered(out_dir)
        if not resume:
            run.claim_fresh(overwrite)
    except BaseException as e:
        try:
            run.abandon(e)
        finally:
            run._restore_term()
            run.release()
        raise
    return run


def recover(out_dir: Path) -> None:
    """Put back a run an --overwrite set aside and never committed to (it was killed), so that
    `--resume` finds it; the directory's lock is taken for that moment."""
    out_dir = Path(out_dir)
    if not ((out_dir / STASH).is_dir() or (out_dir / PARTIAL).is_dir()):
        return
    run = RunDir(out_dir)
    run.lock()
    try:
        if run.recover():
            _say_recovered(out_dir)
    finally:
        run.release()


def _say_recovered(out_dir: Path) -> None:
    print(f"note: {out_dir}: an --overwrite was stopped before the new run had its data and "
          f"model; the previous run is back in place", file=sys.stderr)


# ----------------------------------------------------------------------------- resuming

def resume_command(out_dir: Path) -> str:
    """The one-line command that resumes out_dir, quoted for a POSIX shell (spaces, brackets)."""
    return f"nmt train --out {shlex.quote(str(out_dir))} --resume"


def resumable(out_dir: Path) -> None:
    """Refuse a --resume of a directory without last.pt before anything is written there (the
    lock would create the directory); an --overwrite that was killed is put back first. Reads
    no checkpoint: read_last does, once, under the run's lock."""
    out_dir = Path(out_dir)
    recover(out_dir)
    if not (out_dir / layout.LAST).is_file():
        _nothing_to_resume(out_dir)


def _nothing_to_resume(out_dir: Path) -> None:
    hint = ("start it without --resume (the run stopped before its first checkpoint, so "
            "nothing is lost)" if outputs(out_dir) else "start the run without --resume")
    raise NMTError(f"{out_dir}: nothing to resume (no {layout.LAST}); {hint}")


def read_last(out_dir: Path) -> dict:
    """last.pt of out_dir, checked to be a checkpoint training can continue from. Training
    calls it once per resume, holding the directory's lock (claim), so the checkpoint it
    continues from is the one no other process can replace meanwhile."""
    path = Path(out_dir) / layout.LAST
    if not path.is_file():
        _nothing_to_resume(Path(out_dir))
    ckpt = checkpoint.load(path, which="last")
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise NMTError(f"{path}: not a checkpoint training can continue from (it lacks "
                       f"{', '.join(missing)}: a {layout.BEST} or an averaged model copied over "
                       f"{layout.LAST}?); restore the run's own {layout.LAST}, or start a new run")
    return ckpt


def load_last(out_dir: Path) -> dict:
    """last.pt of out_dir (read_last), after putting back a run an --overwrite set aside and
    was killed: for a look at a run that no training holds (resume_recipe without a
    checkpoint)."""
    recover(Path(out_dir))
    return read_last(out_dir)


def resume_recipe(out_dir: Path, overrides: list[str] | None = None, recipe: Recipe | None = None,
                  ckpt: dict | None = None) -> Recipe:
    """The recipe to resume out_dir with: the one stored in its last.pt (`ckpt`, read when not
    given), with changes to RESUMABLE fields only. The changes come either as `--set` overrides
    (`nmt train --resume`: the printed resume command needs no recipe file and no --set) or as
    the whole recipe a caller asks for (`recipe`: `nmt compare`); training.train passes the
    last.pt it read under the lock.
    Any other field may only repeat the stored value (the name excepted); a model change is
    named as such, since it could not even load the weights."""
    ckpt = ckpt if ckpt is not None else load_last(out_dir)
    where = f"{ckpt['path']} (recipe)"
    saved = recipe_from_dict(ckpt["recipe"], where=where)
    if recipe is None:
        recipe = recipe_from_dict(to_dict(saved), where=where, overrides=list(overrides or []))
    a, b = flat(to_dict(saved)), flat(to_dict(recipe))
    changed = sorted(k for k in a.keys() | b.keys() if k != "name" and a.get(k) != b.get(k))
    source = "--set" if overrides else "recipe mismatch"

    def diff(keys: list[str]) -> str:
        return "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys)

    model = [k for k in changed if k.startswith("model.")]
    if model:
        raise NMTError(f"{source}: {ckpt['path']} was trained with another model "
                       f"({diff(model)}); resume with the recipe it was trained with, or train "
                       f"a new run in another --out")
    fixed = [k for k in changed if k not in RESUMABLE]
    if fixed:
        raise NMTError(f"{source}: --resume continues {out_dir} with its own recipe and cannot "
                       f"change {diff(fixed)} (the left values are the run's); only "
                       f"{', '.join(RESUMABLE)} may change. Train a new run in another --out to "
                       f"change the rest")
    for k in changed:
        section, key = k.split(".")
        setattr(getattr(saved, section), key, getattr(getattr(recipe, section), key))
    return saved


def flat(d: dict, prefix: str = "") -> dict:
    """{"train": {"lr": x}} -> {"train.lr": x}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# ----------------------------------------------------------------------------- stopping

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def catch_stop_signals(flag: threading.Event):
    """First Ctrl-C or SIGTERM: set `flag` (training finishes the update, writes last.pt and
    stops). A second one aborts at once. Returns a function that puts the old handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {}

    def handler(signum, frame):
        flag.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    for s in STOP_SIGNALS:
        previous[s] = signal.signal(s, handler)

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    return restore
