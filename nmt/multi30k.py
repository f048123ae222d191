"""Multi30k task 1 (Elliott et al. 2016): 29,000 / 1,014 / 1,000 image descriptions in en, de, fr,
cs, and the later official test sets (test_2017_flickr and test_2017_mscoco in en, de, fr;
test_2018_flickr in en, de, fr, cs). Each file a recipe needs is fetched once from the official
repository into a local cache and checked against the sha256 list shipped with the package
(`nmt/multi30k.sha256`; data/README.md says where it comes from); files of other languages or
splits are never fetched.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from nmt.errors import NMTError
from nmt.identity import file_sha256

SPLITS = ("train", "val", "test_2016_flickr", "test_2017_flickr", "test_2017_mscoco",
          "test_2018_flickr")
LANGS = ("en", "de", "fr", "cs")
# the original release, which multi30k_dir() fetches when not told which files are needed
CORE = tuple(f"{s}.{lang}.gz" for s in SPLITS[:3] for lang in LANGS)
URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw"


def data_root() -> Path:
    """$NMT_DATA_DIR, else the user cache ($XDG_CACHE_HOME or ~/.cache) /nmt."""
    if os.environ.get("NMT_DATA_DIR"):
        return Path(os.environ["NMT_DATA_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nmt"


def checksums() -> dict[str, str]:
    """file name -> sha256, from the list shipped inside the package (works when installed)."""
    text = resources.files("nmt").joinpath("multi30k.sha256").read_text(encoding="utf-8")
    return {name: digest for digest, name in (line.split() for line in text.splitlines() if line)}


def split_files(split: str, langs: tuple[str, ...]) -> list[str]:
    """The file names of `split` in `langs`, or an NMTError naming what Multi30k has."""
    for lang in langs:
        if lang not in LANGS:
            raise NMTError(f"multi30k has no language {lang!r}; use one of {', '.join(LANGS)}")
    if split not in SPLITS:
        raise NMTError(f"multi30k has no split {split!r}; use one of {', '.join(SPLITS)}")
    sums = checksums()
    for lang in langs:
        if f"{split}.{lang}.gz" not in sums:
            have = [x for x in LANGS if f"{split}.{x}.gz" in sums]
            raise NMTError(f"multi30k's {split} has no {lang!r} side (it has "
                           f"{', '.join(have)}); choose another test split or language")
    return [f"{split}.{lang}.gz" for lang in langs]


def multi30k_dir(root: Path | None = None, files: tuple[str, ...] | list[str] = CORE) -> Path:
    """The directory holding `files` (default: the original release), downloading and checking
    whichever of them are missing; other files are neither fetched nor needed. Files already
    there are checked against the shipped sha256 list too (the digest is remembered, so an
    unchanged file is hashed once: nmt/identity.py)."""
    d = Path(root or data_root()) / "multi30k"
    sums = checksums()
    missing = [name for name in files if not (d / name).is_file()]
    for name in files:
        if name not in missing and name in sums and file_sha256(d / name) != sums[name]:
            raise NMTError(f"{d / name}: not the Multi30k file it is named after (its sha256 "
                           f"differs from the one nmt ships); it was modified or is corrupt: "
                           f"delete it (it is downloaded again) or restore the original")
    if missing:
        base = os.environ.get("NMT_MULTI30K_URL") or URL
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise NMTError(f"{d}: cannot create the Multi30k directory ({e}); "
                           f"set NMT_DATA_DIR to a writable place") from None
        console = Console(stderr=True)
        console.print(f"Multi30k: downloading {len(missing)} file(s) from {base} into {d}",
                      markup=False)
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), console=console) as progress:
            for name in missing:
                _download(f"{base.rstrip('/')}/{name}", d / name, sums[name], progress)
    return d


def _download(url: str, dest: Path, sha256: str, progress: Progress) -> None:
    """Fetch url into a temporary file beside dest, check its hash, then rename it into place,
    so an interrupted or corrupt download never leaves a file that looks complete."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            size = int(resp.headers.get("Content-Length") or 0) or None
            task = progress.add_task(dest.name, total=size)
            while chunk := resp.read(1 << 16):
                digest.update(chunk)
                out.write(chunk)
                progress.advance(task, len(chunk))
        if digest.hexdigest() != sha256:
            raise NMTError(f"{dest.name} from {url}: sha256 {digest.hexdigest()} does not match "
                           f"the expected {sha256}; the download is corrupt or the file changed "
                           f"upstream; retry, or set NMT_MULTI30K_URL to a good mirror")
        os.replace(tmp, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:  # incl. HTTPError
        raise NMTError(f"{dest.name}: download from {url} failed ({e}); check the network or "
                       f"set NMT_MULTI30K_URL to a mirror, or NMT_DATA_DIR to a directory "
                       f"that already has multi30k/") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
