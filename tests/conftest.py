import os
from pathlib import Path

import pytest
import torch
from helpers_ckpt import make_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory) -> Path:
    """The encoded-corpus and file-hash cache (NMT_CACHE_DIR) of this test session, inherited
    by the CLI runs the tests start: never the user's own."""
    d = tmp_path_factory.mktemp("nmt-cache")
    os.environ["NMT_CACHE_DIR"] = str(d)
    return d


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Where Multi30k lives: $NMT_DATA_DIR (CI sets it), else ../shared/data beside the repo."""
    d = Path(os.environ.get("NMT_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (d / "multi30k" / "train.de.gz").is_file():
        pytest.fail(f"Multi30k not found under {d}; set NMT_DATA_DIR")
    return d


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core box OpenMP threads spinning
    against other processes make them crawl (7x slower under load). Modules that build only tiny
    models use it: pytestmark = pytest.mark.usefixtures("one_thread")."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory, data_dir):
    """One small tokenizer (300 joint pieces from 300 Multi30k de-en pairs) shared by the
    in-process training runs, as `nmt compare` shares one."""
    from nmt.config import DataConfig, TokenizerConfig
    from nmt.data import load_split
    from nmt.tokenizer import Tokenizer

    mp = pytest.MonkeyPatch()
    mp.setenv("NMT_DATA_DIR", str(data_dir))
    try:
        c = load_split(DataConfig(), "train", limit=300)
    finally:
        mp.undo()
    d = tmp_path_factory.mktemp("tok")
    Tokenizer.train(c.src, c.tgt, d, TokenizerConfig(vocab_size=300))
    return d


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, data_dir):
    """A tiny Transformer run directory (best.pt and its tokenizer; 60 updates on 300 Multi30k
    pairs, max_positions 64), trained once and shared read-only by the modules that decode,
    translate or load a trained checkpoint."""
    d = tmp_path_factory.mktemp("trained")
    make_checkpoint(d, data_dir, "transformer", max_positions=64, train_steps=60)
    return d


@pytest.fixture(scope="session")
def trained_rnn_run(tmp_path_factory, data_dir):
    """A tiny RNN with Bahdanau attention (20 updates, otherwise as trained_run), shared
    read-only by the API, server and browser tests."""
    d = tmp_path_factory.mktemp("trained-rnn")
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # built before any module's one_thread applies (session scope)
    try:
        make_checkpoint(d, data_dir, "rnn", train_steps=20)
    finally:
        torch.set_num_threads(n)
    return d
