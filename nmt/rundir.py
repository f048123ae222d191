"""A run directory's life: claiming it, locking it, replacing an old run, resuming, stopping.

What a run directory promises (README, "Guarantees"):
- one process at a time: the directory is locked (flock on `.lock`) for the whole run; the kernel
  drops the lock when its process dies, however it dies, so a crash never leaves it stuck;
- a directory without a checkpoint (a run that failed or was stopped before its first one) is
  simply started again: nothing in it is worth keeping;
- `--overwrite` moves the old run aside and deletes it only once the new run has loaded its data
  and built its model; if the new run fails before that, the old run is put back as it was;
- `--resume` continues from last.pt with the recipe stored in it (the recipe file is not read);
  only when to stop and where to run may change;
- Ctrl-C and SIGTERM (what `timeout`, `kill` and cluster schedulers send) both finish the
  current update, write last.pt and stop.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

from nmt import checkpoint
from nmt.config import Recipe, recipe_from_dict, to_dict
from nmt.errors import NMTError

# what a run writes into its directory; finding any of them means the directory is taken
RUN_OUTPUTS = ("last.pt", "best.pt", "metrics.jsonl", "recipe.yaml", "train.log", "tokenizer",
               "averaged.pt", "tensorboard")
CHECKPOINTS = ("last.pt", "best.pt")
# recipe fields that --resume may change: when to stop, where to run, what the run reports, and
# how the finished model decodes; nothing that changes what the updates compute. Validation
# decodes greedily with the recipe's length limits, and its BLEU steers the plateau schedule and
# best.pt, so decode.max_len_a/b stay fixed; beam, length penalty, n-best and sampling settings
# are not used by it, and decode.batch_tokens only groups the same lines (its auto value follows
# the device, which may change too).
RESUMABLE = ("train.max_steps", "train.max_epochs", "train.max_minutes", "train.patience",
             "train.max_bad_steps", "train.device", "train.threads", "train.tensorboard",
             "train.progress_every", "train.progress_seconds",
             "decode.beam", "decode.alpha", "decode.nbest", "decode.batch_tokens", "decode.sample",
             "decode.temperature", "decode.top_k", "decode.top_p", "decode.seed",
             # where the data lies: training resumes only on the content it was trained on
             # (checked by its identity, training._same_data)
             "data.path")
LOCK = ".lock"
STASH = ".replaced"  # the old run while --overwrite has not yet committed to the new one
# keys every checkpoint written by training holds, so that --resume can continue from it
RESUME_KEYS = ("recipe", "tokenizer", "model", "optimizer", "scheduler", "rng", "state")


def outputs(out_dir: Path) -> list[Path]:
    """Everything of a run in out_dir (checkpoints, logs, recipe, tokenizer)."""
    if not out_dir.is_dir():
        return []
    return [out_dir / n for n in RUN_OUTPUTS if (out_dir / n).exists()] + \
        sorted(out_dir.glob("step-*.pt"))


def has_checkpoint(out_dir: Path) -> bool:
    return any((out_dir / n).is_file() for n in CHECKPOINTS) or any(out_dir.glob("step-*.pt"))


def _remove(p: Path) -> None:
    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


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
        stash = self.out_dir / STASH
        stash.mkdir()
        for p in taken:
            os.replace(p, stash / p.name)
        self._stash = stash

    def recover(self) -> bool:
        """Put back a run that an --overwrite killed (SIGKILL, power cut) before commit() had
        moved aside; True if there was one."""
        stash = self.out_dir / STASH
        if not stash.is_dir():
            return False
        self._stash = stash
        self.rollback()
        return True

    def commit(self) -> None:
        """The new run has its data and model: the old one may go now."""
        if self._stash is not None:
            shutil.rmtree(self._stash, ignore_errors=True)
            self._stash = None

    def rollback(self) -> None:
        """The new run failed before commit(): drop what it wrote and put the old run back."""
        if self._stash is None:
            return
        for p in outputs(self.out_dir):
            _remove(p)
        for p in self._stash.iterdir():
            os.replace(p, self.out_dir / p.name)
        self._stash.rmdir()
        self._stash = None

    # ---- as a context manager around a whole training

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None:
                self.rollback()
        finally:
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
            print(f"note: {out_dir}: an --overwrite was stopped before the new run had its data "
                  f"and model; the previous run is back in place", file=sys.stderr)
        if not resume:
            run.claim_fresh(overwrite)
    except BaseException:
        run.release()
        raise
    return run


# ----------------------------------------------------------------------------- resuming

def load_last(out_dir: Path) -> dict:
    """last.pt of out_dir, checked to be a checkpoint training can continue from."""
    out_dir = Path(out_dir)
    path = out_dir / "last.pt"
    if not path.is_file():
        hint = ("start it without --resume (the run stopped before its first checkpoint, so "
                "nothing is lost)" if outputs(out_dir) else "start the run without --resume")
        raise NMTError(f"{out_dir}: nothing to resume (no last.pt); {hint}")
    ckpt = checkpoint.load(path, which="last")
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise NMTError(f"{path}: not a checkpoint training can continue from (it lacks "
                       f"{', '.join(missing)}: a best.pt or an averaged model copied over "
                       f"last.pt?); restore the run's own last.pt, or start a new run")
    return ckpt


def resume_recipe(out_dir: Path, overrides: list[str] | None = None, recipe: Recipe | None = None,
                  ckpt: dict | None = None) -> Recipe:
    """The recipe to resume out_dir with: the one stored in its last.pt (`ckpt`, read when not
    given), with changes to RESUMABLE fields only. The changes come either as `--set` overrides
    (`nmt train --resume`: the printed resume command needs no recipe file and no --set) or as
    the whole recipe a caller asks for (`recipe`: `nmt compare`, `training.train(resume=True)`).
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
