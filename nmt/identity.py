"""What a run was made from: the content identity of the data files it read, and the cache folder
that remembers it.

A split's identity is the size and sha256 of each file `load_split` read (`Corpus.files`), in
order, without their paths: data moved to another folder keeps its identity, a file edited in
place (even reordered lines of the same size) changes it. A source without files (a Hugging Face
hub dataset) is identified by the sha256 of its text. Hashing streams the file; the digest is
remembered in the cache folder by (path, size, mtime_ns), so a later start does not read the
file again. `nmt compare` retrains what was trained on other data, `--resume` accepts data that
moved but not data that changed, and the encoded-corpus cache (nmt/data.py) is keyed by it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from nmt.errors import NMTError

HASHES = "file-hashes.json"
# a file modified less than this long before it was hashed may be modified again within the
# file system's timestamp granularity without its mtime changing ("racy" in git's terms): its
# digest is used but not remembered
RACY_SECONDS = 2.0


def cache_root() -> Path:
    """$NMT_CACHE_DIR, else the user cache ($XDG_CACHE_HOME or ~/.cache) /nmt/cache."""
    if os.environ.get("NMT_CACHE_DIR"):
        return Path(os.environ["NMT_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nmt" / "cache"


def _read_memo(path: Path) -> dict:
    try:
        memo = json.loads(path.read_text())
        return memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: it is only a shortcut


def write_json_atomic(path: Path, obj) -> bool:
    """Write obj as JSON into path via a temporary file and a rename, so that a reader (another
    process included) sees the old or the new file, never half of one. False if the cache
    folder cannot be written (the cache is a shortcut; nothing depends on it)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f)
        os.replace(tmp, path)
        return True
    except OSError:
        return False


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks; remembered by (absolute path, size,
    mtime_ns) in the cache folder, so an unchanged file is hashed once."""
    path = Path(path).absolute()
    try:
        st = path.stat()
    except OSError as e:
        raise NMTError(f"{path}: cannot read it ({e.strerror or e})") from None
    memo_path = cache_root() / HASHES
    memo = _read_memo(memo_path)
    key = str(path)
    if memo.get(key, [None])[:2] == [st.st_size, st.st_mtime_ns]:
        return memo[key][2]
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    except OSError as e:
        raise NMTError(f"{path}: cannot read it ({e.strerror or e})") from None
    digest = h.hexdigest()
    if time.time() - st.st_mtime > RACY_SECONDS:
        memo = _read_memo(memo_path)  # another process may have added entries meanwhile
        memo[key] = [st.st_size, st.st_mtime_ns, digest]
        write_json_atomic(memo_path, memo)
    return digest


def of_files(paths) -> dict:
    """The identity of the data in these files: name (for messages), size and sha256 of each,
    in order."""
    return {"files": [{"name": Path(p).name, "size": Path(p).stat().st_size,
                       "sha256": file_sha256(p)} for p in paths]}


def of_corpus(corpus) -> dict:
    """A Corpus's identity: that of the files it was read from, else (no files, e.g. a Hugging
    Face hub dataset) the sha256 of its text."""
    if corpus.files:
        return of_files(corpus.files)
    h = hashlib.sha256()
    for side in (corpus.src, corpus.tgt):
        h.update("\n".join(side).encode("utf-8"))
        h.update(b"\0")
    return {"text": corpus.name, "sha256": h.hexdigest(), "pairs": len(corpus.src)}


def content(x: dict):
    """What of an identity is content: sizes and digests (no names, no paths)."""
    if "files" in x:
        return [(f["size"], f["sha256"]) for f in x["files"]]
    return x.get("sha256")


def same(a: dict, b: dict) -> bool:
    """The same content, wherever it lies (names and paths are not compared)."""
    return content(a) == content(b)


def changed(old: dict, new: dict) -> str:
    """What differs between two identities, by file name: "train.en", "train.en, train.de",
    or a description when the sources differ in kind; "" when the content is the same."""
    if same(old, new):
        return ""
    if "files" in old and "files" in new and len(old["files"]) == len(new["files"]):
        return ", ".join(n["name"] for o, n in zip(old["files"], new["files"])
                         if (o["size"], o["sha256"]) != (n["size"], n["sha256"]))

    def name(x: dict) -> str:
        return ", ".join(f["name"] for f in x["files"]) if "files" in x else x.get("text", "?")
    return f"{name(old)} -> {name(new)}"


def key(*parts) -> str:
    """A short stable key (hex) for JSON-able parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def store_dir(final: Path, fill: Callable[[Path], None]) -> str | None:
    """Make the cache entry `final` (a folder) by fill(tmp) in a temporary folder beside it and
    a rename, so that a reader never sees part of an entry, and of two processes storing the
    same entry at once one wins and the other's copy goes (theirs holds the same). Returns why
    it could not be stored (e.g. a full disk: the cache is a shortcut, nothing depends on it),
    None when it was or already is."""
    if final.is_dir():
        return None
    tmp = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
        fill(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process stored it first
            pass
        return None
    except OSError as e:
        return f"{final.parent}: {e.strerror or e}"
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
