"""What a run was made from: the content identity of its data (nmt/identity.py), the encoded-corpus
cache keyed by it, and the places that must notice changed or moved data: `nmt compare`'s reuse
of trained systems, `--resume`, and Multi30k files modified in NMT_DATA_DIR."""
import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from cli import app
from nmt import identity
from nmt.batching import collate, token_batches
from nmt.config import DataConfig, TokenizerConfig
from nmt.data import (Corpus, cached_train, encode_pairs, encode_train,
                      load_split, pair_lengths, read_lines, store_train)
from nmt.errors import NMTError
from nmt.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["tokenizer.vocab_size=300", "train.max_epochs=0", "train.max_steps=2",
        "train.valid_every=2", "train.batch_tokens=600", "train.threads=1",
        "decode.max_len_a=0", "decode.max_len_b=8", "data.source=files", "data.src_lang=de",
        "data.tgt_lang=en"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def sets(items):
    return [x for s in items for x in ("--set", s)]


def old(path: Path, seconds: float = 60) -> None:
    """Date a file back, as data written well before a run is (its digest is then
    remembered)."""
    t = path.stat().st_mtime - seconds
    os.utime(path, (t, t))


@pytest.fixture(scope="module")
def multi30k(data_dir):
    d = data_dir / "multi30k"
    return {f"{split}.{lang}": read_lines(d / f"{split}.{lang}.gz")[:n]
            for split, n in (("train", 300), ("val", 20), ("test_2016_flickr", 20))
            for lang in ("de", "en")}


def write_corpus(d: Path, lines: dict) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in lines.items():
        (d / name).write_text("\n".join(text) + "\n")
    return d


@pytest.fixture(scope="module")
def tok(multi30k, tmp_path_factory):
    return Tokenizer.train(multi30k["train.de"], multi30k["train.en"],
                           tmp_path_factory.mktemp("tok"), TokenizerConfig(vocab_size=300))


# ----------------------------------------------------------------------------- identity

def test_identity_is_the_content_not_the_place_and_sees_same_size_edits(tmp_path):
    a = write_corpus(tmp_path / "a", {"train.en": ["a dog", "two cats"]})
    b = write_corpus(tmp_path / "b", {"train.en": ["a dog", "two cats"]})
    ida, idb = identity.of_files([a / "train.en"]), identity.of_files([b / "train.en"])
    assert identity.same(ida, idb) and identity.changed(ida, idb) == ""
    (b / "train.en").write_text("two cats\na dog\n")  # reordered: the same size
    idb = identity.of_files([b / "train.en"])
    assert not identity.same(ida, idb) and identity.changed(ida, idb) == "train.en"


def test_a_digest_is_remembered_by_path_size_and_mtime(tmp_path, monkeypatch):
    f = write_corpus(tmp_path, {"x.en": ["a"] * 1000}) / "x.en"
    old(f)
    first = identity.file_sha256(f)
    memo = json.loads((identity.cache_root() / identity.HASHES).read_text())
    assert memo[str(f)][2] == first
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: reads.append(a[0]) or real_open(*a, **k))
    assert identity.file_sha256(f) == first and str(f) not in map(str, reads)  # not read again


def test_a_modified_multi30k_file_is_an_error_naming_it(tmp_path, data_dir, monkeypatch):
    d = tmp_path / "multi30k"
    d.mkdir()
    for lang in ("de", "en"):
        shutil.copy(data_dir / "multi30k" / f"val.{lang}.gz", d)
    monkeypatch.setenv("NMT_DATA_DIR", str(tmp_path))
    assert len(load_split(DataConfig(), "val").files) == 2
    lines = read_lines(d / "val.en.gz")
    (d / "val.en.gz").write_bytes(gzip.compress("\n".join(lines[::-1]).encode() + b"\n"))
    with pytest.raises(NMTError, match=r"val\.en\.gz: not the Multi30k file.*delete it"):
        load_split(DataConfig(), "val")


# ----------------------------------------------------------------------------- the cache

def test_encoded_arrays_are_the_pairs_the_lists_were(multi30k, tok):
    corpus = Corpus(multi30k["train.de"] + ["", "x " * 200],
                    multi30k["train.en"] + ["empty source", "long"], "train")
    cfg = DataConfig(max_len=50)
    want, report = encode_pairs(corpus, tok, cfg, train=True)
    got, report2 = encode_train(corpus, tok, cfg)
    assert report2 == report and report.empty == 1 and report.kept == len(got) == len(want)
    assert list(got) == want and got.src.dtype == np.uint16
    assert [x.tolist() for x in pair_lengths(got)] == [x.tolist() for x in pair_lengths(want)]
    # the same batches, so training sees the same steps
    for epoch in (1, 2):
        assert token_batches(*pair_lengths(got), 500, 1, epoch) == \
            token_batches([len(s) for s, _ in want], [len(t) for _, t in want], 500, 1, epoch)
    b1, b2 = collate(want, [3, 1, 4]), collate(got, [3, 1, 4])
    assert all(torch.equal(getattr(b1, k), getattr(b2, k)) for k in ("src", "tgt_in", "tgt_out"))


def test_the_cache_gives_back_what_was_stored_keyed_by_data_tokenizer_and_settings(
        multi30k, tok, tmp_path):
    corpus = Corpus(multi30k["train.de"], multi30k["train.en"], "train")
    cfg = DataConfig()
    data_id = identity.of_corpus(corpus)
    assert cached_train(data_id, tok, cfg) is None
    pairs, report = encode_train(corpus, tok, cfg)
    assert store_train(pairs, report, "train", data_id, tok, cfg) is None
    assert store_train(pairs, report, "train", data_id, tok, cfg) is None  # stored already
    hit, report2, name = cached_train(data_id, tok, cfg)
    assert isinstance(hit.src, np.memmap) and list(hit) == list(pairs)
    assert (report2, name) == (report, "train")
    assert cached_train(data_id, tok, DataConfig(max_len=20)) is None  # other filtering
    other = identity.of_corpus(Corpus(corpus.src[1:], corpus.tgt[1:], "train"))
    assert cached_train(other, tok, cfg) is None


def test_a_few_updates_on_cached_arrays_equal_those_on_lists(multi30k, tok):
    from nmt.config import ModelConfig, TrainConfig
    from nmt.model import build_model
    from nmt.training import Trainer

    corpus = Corpus(multi30k["train.de"], multi30k["train.en"], "train")
    lists, _ = encode_pairs(corpus, tok, DataConfig(), train=True)
    arrays, _ = encode_train(corpus, tok, DataConfig())
    cfg = TrainConfig(batch_tokens=400, warmup=1)
    losses = []
    for pairs in (lists, arrays):
        torch.manual_seed(0)
        model = build_model(ModelConfig(arch="rnn", attention="luong-dot", emb_dim=16,
                                        hidden_size=16, enc_layers=1, dec_layers=1, readout=16),
                            tok.src_vocab_size, tok.tgt_vocab_size, joint=True)
        t = Trainer(model, cfg, pairs)
        batches = t.epoch_batches(1)
        losses.append([t.update([b]).loss for b in batches[:2]])
    assert losses[0] == losses[1]


# ----------------------------------------------------------------------------- compare

def tiny_comparison(tmp_path: Path) -> Path:
    p = tmp_path / "cmp.yaml"
    system = ROOT / "recipes" / "smoke" / "no-attention.yaml"
    p.write_text(f"baseline: no-attention\nexamples: 1\nheatmaps: 0\nsystems:\n"
                 f"  no-attention: {{recipe: {system}}}\n")
    return p


def test_compare_notices_changed_training_and_validation_data(multi30k, tmp_path):
    data = write_corpus(tmp_path / "data", multi30k)
    for f in data.iterdir():
        old(f)
    recipe, out = tiny_comparison(tmp_path), tmp_path / "out"
    args = ["compare", recipe, "--out", out, "--quiet", *sets(TINY + [f"data.path={data}"])]
    assert invoke(*args).exit_code == 0
    model = out / "systems" / "no-attention" / "last.pt"
    stamp = model.stat().st_mtime_ns
    # the same lines in another order: the same size, so only the content tells
    (data / "train.en").write_text("\n".join(multi30k["train.en"][::-1]) + "\n")
    res = invoke(*args)
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "data changed: train.en" in text and "--retrain" in text
    assert model.stat().st_mtime_ns == stamp
    res = invoke(*args, "--retrain")
    assert res.exit_code == 0, res.output
    assert "data changed: train.en" in " ".join(res.output.split())
    assert model.stat().st_mtime_ns != stamp
    stamp = model.stat().st_mtime_ns
    assert "trained already" in invoke(*args).output
    # validation data changes what training chose (best.pt, early stopping): retrained too,
    # the tokenizer (built on the training split) is kept
    (data / "val.de").write_text("\n".join(multi30k["val.de"][:-1]) + "\n")
    (data / "val.en").write_text("\n".join(multi30k["val.en"][:-1]) + "\n")
    res = invoke(*args)
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "data changed: val.de, val.en" in text
    assert "tokenizer" not in text and model.stat().st_mtime_ns == stamp


# ----------------------------------------------------------------------------- resume

def test_resume_accepts_moved_data_with_the_same_content_and_names_changed_data(
        multi30k, tmp_path, monkeypatch):
    data = write_corpus(tmp_path / "work" / "data", multi30k)
    monkeypatch.chdir(tmp_path / "work")
    out = tmp_path / "run"
    res = invoke("train", ROOT / "recipes" / "smoke" / "no-attention.yaml", "--out", out,
                 "--quiet", *sets(TINY + ["data.path=data"]))
    assert res.exit_code == 0, res.output
    recorded = yaml.safe_load((out / "recipe.yaml").read_text())["data"]["path"]
    assert recorded == str(data.absolute())  # absolute: resumable from anywhere
    # a second run on the same data and settings reads neither tokenizer nor pairs anew
    res = invoke("train", ROOT / "recipes" / "smoke" / "no-attention.yaml", "--out",
                 tmp_path / "again", "--quiet",
                 *sets(TINY + ["data.path=data", "train.max_steps=1"]))
    log = " ".join((tmp_path / "again" / "train.log").read_text().split())
    assert res.exit_code == 0 and "tokenizer: trained on this data with these settings" in log
    assert "training pairs: encoded already" in log
    assert (tmp_path / "again" / "tokenizer" / "spm.model").read_bytes() == \
        (out / "tokenizer" / "spm.model").read_bytes()
    moved = tmp_path / "moved"
    shutil.move(data, moved)
    monkeypatch.chdir(tmp_path)
    more = ["--set", "train.max_steps=3"]
    res = invoke("train", "--resume", "--out", out, "--quiet", *more)
    assert res.exit_code != 0 and "file not found" in " ".join(res.output.split())
    res = invoke("train", "--resume", "--out", out, "--quiet", *more, "--set",
                 f"data.path={moved}")
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((out / "recipe.yaml").read_text())["data"]["path"] == str(moved)
    # other content at the new place is refused, naming what differs
    (moved / "train.de").write_text("\n".join(multi30k["train.de"][::-1]) + "\n")
    res = invoke("train", "--resume", "--out", out, "--quiet", "--set", "train.max_steps=4",
                 "--set", f"data.path={moved}")
    text = " ".join(res.output.split())
    assert res.exit_code != 0 and "train: train.de" in text and "other data" in text
