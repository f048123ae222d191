"""Atomic file writes: checkpoints and translation outputs are never seen half written."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from nmt.errors import NMTError


@contextlib.contextmanager
def atomic_write(path: str | Path, binary: bool = False) -> Iterator[IO]:
    """A file opened beside `path` (same directory, so the rename cannot cross file systems)
    and renamed onto it, synced, when the block ends without error; on an error or a crash the
    temporary file goes and whatever `path` held before stays."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        text = {} if binary else {"encoding": "utf-8", "newline": "\n"}
        with os.fdopen(fd, "wb" if binary else "w", **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_parent(path: str | Path, what: str) -> None:
    """The directory an output goes into (`path`'s parent) exists and is a directory; it is
    never created, as a typo in it would hide the output. `what` names the option, e.g. "-o
    out.en"."""
    parent = Path(path).parent
    if parent.exists() and not parent.is_dir():
        raise NMTError(f"{what}: {parent} is a file, not a directory")
    if not parent.is_dir():
        raise NMTError(f"{what}: directory {parent} does not exist; create it first")
