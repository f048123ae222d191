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
FILES = list(multi30k.CORE)  # the original release: train, val, test_2016_flickr x 4 languages
# the later official test sets, as published (sha256 of data/task1/raw/NAME upstream)
LATER = {
    "test_2017_flickr.en.gz": "76a444ee25172e72695cddb13ae4a3bda59430617be88e0bb46b60504f054074",
    "test_2017_flickr.de.gz": "a2c89666db00c495cd8513b9d708d5a3acc205d7de312ef2bf5fb7ebc1540aee",
    "test_2017_flickr.fr.gz": "3ba671ceb2299f3304ffafefea7a833d08632fbaf0ba18546f8a2ec2391af496",
    "test_2017_mscoco.en.gz": "aab300bfb4427697987e02cd0aacd44bfe8aa50456231b6474c08038bbed2b58",
    "test_2017_mscoco.de.gz": "799e4854c25d601cb6cb6be29eabe5667734c61ace2f495e03e429031a0bc338",
    "test_2017_mscoco.fr.gz": "754f3072ba9f124569ba5258b32730fc1d214bbf8e0c6dfb2b74401676220db0",
    "test_2018_flickr.en.gz": "ef4f4844037d4c5dea75c9a8ed5fd78905967a26f67c255e230cc9780032654d",
    "test_2018_flickr.de.gz": "ddd0130c7d97482dc5197a02141dae8dd79f20f03586c480d675c09a32daf608",
    "test_2018_flickr.fr.gz": "fb2b83fcceb937a4f7e3e93c1c51c22aba92f1e342391e6b5ba392b16a920501",
    "test_2018_flickr.cs.gz": "7d0a9db904f94c554a8c58049a9f3a5357c27f46cc3d710d70cb0b4a2585b8c2",
}
PAIRS = [("de", "en"), ("en", "de"), ("fr", "en"), ("en", "fr"), ("cs", "en"), ("en", "cs")]


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
    assert sorted(sums) == sorted(FILES + list(LATER))  # 3 splits x 4 languages + later tests
    assert {name: sums[name] for name in LATER} == LATER
    for name in FILES:
        assert sha(data_dir / "multi30k" / name) == sums[name]


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


def link_cache(tmp_path, data_dir, names) -> Path:
    cache = tmp_path / "cache" / "multi30k"
    cache.mkdir(parents=True)
    for name in names:
        (cache / name).symlink_to(data_dir / "multi30k" / name)
    return cache


@pytest.mark.parametrize("src, tgt", PAIRS)
def test_each_pair_needs_only_its_own_two_languages(serve, data_dir, tmp_path, src, tgt):
    """No network (the server serves nothing) and only this pair's files in the cache."""
    link_cache(tmp_path, data_dir, [f"{s}.{lang}.gz" for s in ("train", "val", "test_2016_flickr")
                                    for lang in (src, tgt)])
    from nmt.config import load_recipe
    r = load_recipe(ROOT / "recipes" / "multi30k-de-en" / "transformer.yaml",
                    [f"data.src_lang={src}", f"data.tgt_lang={tgt}"])  # the README's override
    for split in ("train", "val", *r.data.test):
        c = load_split(r.data, split, limit=5)
        assert len(c.src) == len(c.tgt) == 5 and c.src != c.tgt


def test_later_test_sets_are_downloaded_and_checked(serve, tmp_path, monkeypatch):
    """The real files are not available offline: the server holds stand-ins, and the checksum
    list is pointed at their digests; the published digests are checked above."""
    import gzip

    fake = {}
    for lang, text in (("de", "Ein Hund rennt.\nZwei Katzen.\n"),
                       ("en", "A dog runs.\nTwo cats.\n")):
        name = f"test_2018_flickr.{lang}.gz"
        (serve / name).write_bytes(gzip.compress(text.encode()))
        fake[name] = sha(serve / name)
    (serve / "test_2018_flickr.fr.gz").write_bytes(b"never asked for")
    real = multi30k.checksums()
    monkeypatch.setattr(multi30k, "checksums", lambda: {**real, **fake})
    c = load_split(DataConfig(), "test_2018_flickr")
    assert c.src == ["Ein Hund rennt.", "Zwei Katzen."] and c.tgt == ["A dog runs.", "Two cats."]
    cache = tmp_path / "cache" / "multi30k"
    assert sorted(p.name for p in cache.iterdir()) == sorted(fake)  # nothing else fetched
    with pytest.raises(NMTError, match="test_2017_mscoco has no 'cs' side"):
        load_split(DataConfig(src_lang="cs"), "test_2017_mscoco")

