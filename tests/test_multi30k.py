import hashlib
import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from nmt import multi30k
from nmt.config import DataConfig
from nmt.data import load_split
from nmt.errors import NMTError

ROOT = Path(__file__).resolve().parents[1]
FILES = [f"{s}.{lang}.gz" for s in multi30k.SPLITS for lang in multi30k.LANGS]


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve(tmp_path, monkeypatch):
    """A real HTTP server on 127.0.0.1 serving a directory; NMT_MULTI30K_URL points at it and
    NMT_DATA_DIR at an empty cache."""
    served = tmp_path / "served"
    served.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(served)))
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    monkeypatch.setenv("NMT_MULTI30K_URL", f"http://127.0.0.1:{server.server_address[1]}/")
    monkeypatch.setenv("NMT_DATA_DIR", str(tmp_path / "cache"))
    yield served
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_checksum_list_is_shipped_and_matches_the_data(data_dir):
    sums = multi30k.checksums()
    assert sorted(sums) == sorted(FILES)  # 3 splits x 4 languages
    for name, digest in sums.items():
        assert sha(data_dir / "multi30k" / name) == digest


def test_present_files_need_no_network(data_dir, monkeypatch):
    monkeypatch.setenv("NMT_MULTI30K_URL", "http://127.0.0.1:9")  # nothing listens there
    assert multi30k.multi30k_dir(data_dir) == data_dir / "multi30k"
    monkeypatch.setenv("NMT_DATA_DIR", str(data_dir))
    assert multi30k.multi30k_dir() == data_dir / "multi30k"


def test_default_root_is_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("NMT_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert multi30k.data_root() == tmp_path / "nmt"


def test_downloads_every_file_atomically_and_verified(serve, data_dir, tmp_path):
    for name in FILES:
        shutil.copy(data_dir / "multi30k" / name, serve / name)
    d = multi30k.multi30k_dir()
    assert d == tmp_path / "cache" / "multi30k"
    assert sorted(p.name for p in d.iterdir()) == sorted(FILES)  # no temporary files left
    assert all(sha(d / name) == multi30k.checksums()[name] for name in FILES)
    assert len(load_split(DataConfig(), "val").src) == 1014  # and the loader reads from there


def test_downloads_only_missing_files(serve, data_dir, tmp_path):
    cache = tmp_path / "cache" / "multi30k"
    cache.mkdir(parents=True)
    for name in FILES:
        if name != "val.de.gz":
            (cache / name).symlink_to(data_dir / "multi30k" / name)
    shutil.copy(data_dir / "multi30k" / "val.de.gz", serve / "val.de.gz")  # all it serves
    multi30k.multi30k_dir()
    assert sha(cache / "val.de.gz") == multi30k.checksums()["val.de.gz"]


def test_corrupt_download_is_rejected_and_leaves_nothing(serve, data_dir, tmp_path):
    for name in FILES:
        shutil.copy(data_dir / "multi30k" / name, serve / name)
    good = (serve / "train.en.gz").read_bytes()
    (serve / "train.en.gz").write_bytes(good[:-10] + b"0123456789")
    with pytest.raises(NMTError) as e:
        multi30k.multi30k_dir()
    msg = str(e.value)
    assert "train.en.gz" in msg and "sha256" in msg and "127.0.0.1" in msg
    cache = tmp_path / "cache" / "multi30k"
    assert not (cache / "train.en.gz").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no partial file


def test_http_error_names_file_and_url(serve, tmp_path):
    with pytest.raises(NMTError) as e:  # the server has none of the files: 404
        multi30k.multi30k_dir()
    msg = str(e.value)
    assert "train.en.gz" in msg and "/train.en.gz" in msg and "404" in msg
    assert list((tmp_path / "cache" / "multi30k").iterdir()) == []
