"""Multi30k task 1 (Elliott et al. 2016): 29,000 / 1,014 / 1,000 image descriptions in en, de, fr,
cs. Fetched once from the official repository into a local cache and checked against the sha256
list shipped with the package (`nmt/multi30k.sha256`; data/README.md says where it comes from).
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

SPLITS = ("train", "val", "test_2016_flickr")
LANGS = ("en", "de", "fr", "cs")
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


def multi30k_dir(root: Path | None = None) -> Path:
    """The directory holding every {split}.{lang}.gz, downloading whichever are missing."""
    d = Path(root or data_root()) / "multi30k"
    sums = checksums()
    missing = [name for name in sums if not (d / name).is_file()]
    if missing:
        base = os.environ.get("NMT_MULTI30K_URL") or URL
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise NMTError(f"{d}: cannot create the Multi30k directory ({e}); "
                           f"set NMT_DATA_DIR to a writable place") from None
        console = Console(stderr=True)
        console.print(f"Multi30k: downloading {len(missing)} file(s) from {base} into {d}")
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
