import gzip
import importlib.util
import json
import sys

import pytest
from typer.testing import CliRunner

from cli import app
from nmt.config import DataConfig, TokenizerConfig
from nmt.data import Corpus, encode_pairs, filter_pairs, load_split, read_lines, split_stats
from nmt.errors import NMTError
from nmt.tokenizer import Tokenizer

DE = ["Ein Hund läuft.", "Zwei Männer spielen Fußball.", "Eine Frau liest ein Buch."]
EN = ["A dog runs.", "Two men play football.", "A woman reads a book."]


@pytest.fixture(autouse=True)
def shared_multi30k(data_dir, monkeypatch):
    monkeypatch.setenv("NMT_DATA_DIR", str(data_dir))
    monkeypatch.setenv("NMT_MULTI30K_URL", "http://127.0.0.1:9")  # never downloads here


@pytest.fixture(scope="module")
def tok(data_dir, tmp_path_factory):
    d = data_dir / "multi30k"
    src, tgt = read_lines(d / "train.de.gz")[:1500], read_lines(d / "train.en.gz")[:1500]
    return Tokenizer.train(src, tgt, tmp_path_factory.mktemp("tok"),
                           TokenizerConfig(vocab_size=400))


def write(path, lines, gz=False, raw=None):
    data = raw if raw is not None else ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def files_cfg(path, **kw):
    return DataConfig(source="files", path=str(path), **kw)


# ----------------------------------------------------------------------------- multi30k

def test_multi30k_splits_are_aligned_and_clean():
    sizes = {"train": 29000, "val": 1014, "test_2016_flickr": 1000}
    for split, n in sizes.items():
        c = load_split(DataConfig(), split)
        assert len(c.src) == len(c.tgt) == n and c.name == f"multi30k:{split}"
        assert all(s == s.strip() and "\n" not in s for s in c.src[:500] + c.tgt[:500])
    fr = load_split(DataConfig(src_lang="fr", tgt_lang="cs"), "val", limit=10)
    assert len(fr.src) == 10 and fr.src != load_split(DataConfig(), "val", limit=10).src


def test_multi30k_rejects_unknown_language_and_split():
    with pytest.raises(NMTError, match="language 'ja'"):
        load_split(DataConfig(tgt_lang="ja"), "train")
    with pytest.raises(NMTError, match="no split 'dev'.*test_2016_flickr"):
        load_split(DataConfig(), "dev")


# ----------------------------------------------------------------------------- files

def test_files_plain_and_gzip_with_limit(tmp_path):
    write(tmp_path / "val.de", DE)  # a folder with train alone gets held-out splits instead
    write(tmp_path / "train.de", DE)
    write(tmp_path / "train.en.gz", EN, gz=True)
    c = load_split(files_cfg(tmp_path), "train")
    assert (c.src, c.tgt) == (DE, EN) and "train" in c.name
    assert load_split(files_cfg(tmp_path), "train", limit=2).tgt == EN[:2]


def test_files_whitespace_crlf_and_unicode_separators(tmp_path):
    raw = "  Ein Hund.  \r\nA\u2028B\x85C\t\r\n\r\n".encode("utf-8")
    write(tmp_path / "val.de", DE)
    write(tmp_path / "train.de", [], raw=raw)
    write(tmp_path / "train.en", ["x", "y", ""])
    c = load_split(files_cfg(tmp_path), "train")
    assert c.src == ["Ein Hund.", "A\u2028B\x85C", ""]  # only \n ends a line


def test_line_count_mismatch_names_both_files_and_counts(tmp_path):
    write(tmp_path / "train.de", DE)
    write(tmp_path / "train.en", EN[:2])
    with pytest.raises(NMTError) as e:
        load_split(files_cfg(tmp_path), "train")
    msg = str(e.value)
    assert str(tmp_path / "train.de") in msg and str(tmp_path / "train.en") in msg
    assert "3 lines" in msg and "has 2" in msg


@pytest.mark.parametrize("gz", [False, True])
def test_invalid_utf8_names_file_and_line(tmp_path, gz):
    raw = "Ein Hund.\nZwei Männer.\n".encode("utf-8") + b"kaputt \xff\xfe\n"
    write(tmp_path / ("train.de.gz" if gz else "train.de"), [], gz=gz, raw=raw)
    write(tmp_path / "train.en", EN)
    with pytest.raises(NMTError, match=r"train\.de(\.gz)?: line 3 is not valid UTF-8"):
        load_split(files_cfg(tmp_path), "train")


def test_missing_file(tmp_path):
    write(tmp_path / "train.de", DE)
    with pytest.raises(NMTError, match=r"train\.en: file not found \(nor train\.en\.gz\)"):
        load_split(files_cfg(tmp_path), "train")
    with pytest.raises(NMTError, match="file not found"):
        read_lines(tmp_path / "nope.txt")


def test_corrupt_and_truncated_gzip(tmp_path):
    write(tmp_path / "train.en", EN)
    (tmp_path / "train.de.gz").write_bytes(b"this is not gzip at all")
    with pytest.raises(NMTError, match=r"train\.de\.gz: not a readable gzip"):
        load_split(files_cfg(tmp_path), "train")
    whole = gzip.compress(("\n".join(DE * 50)).encode())
    (tmp_path / "train.de.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(NMTError, match=r"train\.de\.gz: not a readable gzip"):
        load_split(files_cfg(tmp_path), "train")


# ----------------------------------------------------------------------------- tsv / jsonl

def test_tsv_named_and_default_fields(tmp_path):
    rows = ["id\tgerman\tenglish"] + [f"{i}\t{d}\t{e}" for i, (d, e) in enumerate(zip(DE, EN))]
    write(tmp_path / "train.tsv", rows + [""])  # a blank last line is no row
    write(tmp_path / "test.tsv", rows)
    c = load_split(DataConfig(source="tsv", path=str(tmp_path), src_field="german",
                              tgt_field="english"), "train")
    assert (c.src, c.tgt) == (DE, EN)
    write(tmp_path / "val.tsv", ["en\tde", "A dog.\t", "\tEin Hund."])  # default: lang codes
    c = load_split(DataConfig(source="tsv", path=str(tmp_path)), "val")
    assert (c.src, c.tgt) == (["", "Ein Hund."], ["A dog.", ""])


def test_tsv_errors(tmp_path):
    write(tmp_path / "train.tsv", ["de\ten", "Ein Hund.\tA dog.", "kaputt"])
    with pytest.raises(NMTError, match="line 3 has 1 tab-separated fields"):
        load_split(DataConfig(source="tsv", path=str(tmp_path)), "train")
    with pytest.raises(NMTError, match="no column 'src'.*de, en"):
        load_split(DataConfig(source="tsv", path=str(tmp_path), src_field="src",
                              tgt_field="en"), "train")


def test_jsonl_fields_and_errors(tmp_path):
    rows = [json.dumps({"source": d, "target": e, "id": i}, ensure_ascii=False)
            for i, (d, e) in enumerate(zip(DE, EN))]
    write(tmp_path / "train.jsonl.gz", rows, gz=True)
    write(tmp_path / "val.jsonl", rows)
    cfg = DataConfig(source="jsonl", path=str(tmp_path), src_field="source", tgt_field="target")
    c = load_split(cfg, "train")
    assert (c.src, c.tgt) == (DE, EN)
    write(tmp_path / "val.jsonl", [rows[0], "{broken"])
    with pytest.raises(NMTError, match="val.jsonl: line 2 is not valid JSON"):
        load_split(cfg, "val")
    write(tmp_path / "val.jsonl", [rows[0], json.dumps({"source": "x"})])
    with pytest.raises(NMTError, match="line 2: expected an object with fields"):
        load_split(cfg, "val")
    write(tmp_path / "val.jsonl", [json.dumps({"source": 3, "target": "x"})])
    with pytest.raises(NMTError, match="line 1: field 'source' is int"):
        load_split(cfg, "val")


# ----------------------------------------------------------------------------- hugging face

# `datasets` is imported only by the hf source, so an install without it (a GPU image's own
# environment) runs everything else; these tests then skip and say why
needs_datasets = pytest.mark.skipif(importlib.util.find_spec("datasets") is None,
                                    reason="the hf source needs `datasets`, not installed")


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """DatasetDicts saved to disk in the shapes of wmt14 (a `translation` column of
    {lang: text}) and bentrevett/multi30k (one column per language)."""
    import datasets

    root = tmp_path_factory.mktemp("hf")
    splits = {"train": (DE, EN), "validation": (DE[:2], EN[:2]), "test": (DE[:1], EN[:1])}
    datasets.DatasetDict({
        k: datasets.Dataset.from_dict({"translation": [{"de": d, "en": e} for d, e in zip(*v)]})
        for k, v in splits.items()}).save_to_disk(root / "wmt14")
    datasets.DatasetDict({
        k: datasets.Dataset.from_dict({"en": v[1], "de": v[0]})
        for k, v in splits.items()}).save_to_disk(root / "bentrevett")
    return root


@needs_datasets
def test_hf_translation_column(hf_dirs):
    cfg = DataConfig(source="hf", path=str(hf_dirs / "wmt14"))
    c = load_split(cfg, "train")
    assert (c.src, c.tgt) == (DE, EN) and c.name.startswith("hf:")
    assert load_split(cfg, "validation").tgt == EN[:2]
    assert load_split(cfg, "train", limit=2).src == DE[:2]
    rev = load_split(DataConfig(source="hf", path=str(hf_dirs / "wmt14"), src_lang="en",
                                tgt_lang="de"), "test")
    assert (rev.src, rev.tgt) == (EN[:1], DE[:1])


@needs_datasets
def test_hf_two_columns(hf_dirs):
    cfg = DataConfig(source="hf", path=str(hf_dirs / "bentrevett"), src_field="de",
                     tgt_field="en")
    c = load_split(cfg, "train")
    assert (c.src, c.tgt) == (DE, EN)


@needs_datasets
def test_hf_errors(hf_dirs):
    wmt = str(hf_dirs / "wmt14")
    with pytest.raises(NMTError, match="no split 'val'; it has train, validation, test"):
        load_split(DataConfig(source="hf", path=wmt), "val")
    with pytest.raises(NMTError, match="translation has de, en, not 'fr'"):
        load_split(DataConfig(source="hf", path=wmt, src_lang="fr"), "train")
    with pytest.raises(NMTError, match="no `translation` column.*set data.src_field"):
        load_split(DataConfig(source="hf", path=str(hf_dirs / "bentrevett"), src_lang="fr"),
                   "train")
    # without fields, columns named by the languages are read
    c = load_split(DataConfig(source="hf", path=str(hf_dirs / "bentrevett")), "train")
    assert (c.src, c.tgt) == (DE, EN)
    with pytest.raises(NMTError, match="no column 'german'"):
        load_split(DataConfig(source="hf", path=wmt, src_field="german", tgt_field="en"),
                   "train")


@needs_datasets
def test_hf_load_dataset_path(tmp_path, monkeypatch):
    """Not a save_to_disk directory: goes through datasets.load_dataset (here a local folder of
    JSON-lines files, as a cloned hub dataset would be)."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    folder = tmp_path / "repo"
    folder.mkdir()
    for split, n in (("train", 3), ("validation", 2)):
        write(folder / f"{split}.jsonl", [json.dumps({"translation": {"de": d, "en": e}})
                                          for d, e in zip(DE[:n], EN[:n])])
    c = load_split(DataConfig(source="hf", path=str(folder)), "validation")
    assert (c.src, c.tgt) == (DE[:2], EN[:2])
    with pytest.raises(NMTError, match="load_dataset failed"):
        load_split(DataConfig(source="hf", path=str(tmp_path / "no-such-dataset")), "train")


def test_hf_without_datasets_installed_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now raises ImportError
    with pytest.raises(NMTError, match=r"data.source hf needs the `datasets` package.*"
                                       r"pip install datasets"):
        load_split(DataConfig(source="hf", path=str(tmp_path)), "train")


# ----------------------------------------------------------------------------- encoding

def test_encode_pairs_filters_training_pairs_and_counts_why(tok):
    long = " ".join(["Hund"] * 60)
    src = DE + ["", "Ein Hund.", "", long, "Hund", "Ein Hund läuft schnell über die grüne Wiese."]
    tgt = EN + ["A dog.", "", "", long, "A big brown dog runs fast over the green field today.",
                "Dog"]
    corpus = Corpus(src, tgt, "test")
    cfg = DataConfig(max_len=40, max_ratio=3.0)
    pairs, report = encode_pairs(corpus, tok, cfg, train=True)
    assert report.total == len(src) and report.empty == 3 and report.too_long == 1
    assert report.bad_ratio == 2 and report.kept == len(pairs) == len(DE)
    assert report.empty + report.too_long + report.bad_ratio + report.kept == report.total
    for s, t in pairs:
        assert s and t and len(s) <= cfg.max_len and len(t) <= cfg.max_len
        assert max(len(s), len(t)) / min(len(s), len(t)) <= cfg.max_ratio
    assert tok.decode_tgt([t for _, t in pairs]) == EN


def test_encode_pairs_keeps_every_line_for_valid_and_test(tok):
    src, tgt = ["", *DE, " ".join(["Hund"] * 300)], ["A dog.", *EN, "dog"]
    pairs, report = encode_pairs(Corpus(src, tgt, "val"), tok, DataConfig(max_len=10), False)
    assert len(pairs) == len(src) and report.kept == report.total == len(src)
    assert pairs[0][0] == [] and len(pairs[-1][0]) >= 300  # empty stays, nothing truncated
    assert tok.decode_tgt([t for _, t in pairs]) == tgt


def test_filter_boundaries_are_inclusive():
    cfg = DataConfig(max_len=10, max_ratio=2.0)
    keep, r = filter_pairs([10, 11, 4, 4, 0], [5, 5, 8, 9, 3], cfg)
    assert keep == [0, 2] and (r.too_long, r.bad_ratio, r.empty) == (1, 1, 1)


def test_split_stats_properties(tok):
    c = load_split(DataConfig(), "val")
    plain = split_stats(c, DataConfig())
    sub = split_stats(c, DataConfig(), tok, max_tokens=1024)
    assert plain.pairs == sub.pairs == 1014 and plain.padding is None
    for stats in (plain, sub):
        for p in (stats.src_chars, stats.tgt_chars, stats.src_tokens, stats.tgt_tokens):
            assert p == sorted(p) and p[0] > 0
    # every whitespace word is at least one piece, so piece counts dominate word counts
    assert all(p >= w for p, w in zip(sub.src_tokens + sub.tgt_tokens,
                                      plain.src_tokens + plain.tgt_tokens))
    assert 0 <= sub.padding < 0.5
    assert sub.src_chars[-1] == max(map(len, c.src))


# ----------------------------------------------------------------------------- cli

def test_cli_data_stats_on_files(tmp_path, tok):
    for split in ("train", "val", "test"):
        write(tmp_path / f"{split}.de", DE + [""])
        write(tmp_path / f"{split}.en", EN + ["A dog."])
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    (tok_dir / "spm.model").write_bytes(tok.to_state()["src"])
    args = ["data", "stats", "--set", "data.source=files", "--set", f"data.path={tmp_path}",
            "--set", "data.test=[test]"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "whitespace words" in r.output and "pad %" not in r.output
    for split in ("train", "val", "test"):
        assert split in r.output
    r = CliRunner().invoke(app, args + ["--tokenizer", str(tok_dir)])
    assert r.exit_code == 0, r.output
    assert "subword tokens" in r.output and "pad %" in r.output


def test_cli_data_stats_errors_are_one_line(tmp_path):
    write(tmp_path / "train.de", DE)
    write(tmp_path / "train.en", EN[:1])
    runner = CliRunner()
    for args in (["data", "stats", "--set", "data.source=files", "--set",
                  f"data.path={tmp_path}"],
                 ["data", "stats", str(tmp_path / "missing.yaml")],
                 ["data", "stats", "--set", "data.sorce=files"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert "error:" in r.output and "Traceback" not in r.output
