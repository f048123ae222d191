"""Your own corpus: --data and friends, the formats people have, held-out splits for a corpus
without valid/test, and a comparison's data winning over its systems' recipes. Every corpus is
written by the tests (Multi30k de-en sentences in other layouts) and trains a few updates."""
import csv
import gzip
import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import nmt.training as training
from cli import app
from nmt.compare import load_comparison
from nmt.config import DataConfig, load_recipe, recipe_from_dict
from nmt.data import cli_data, data_overrides, held_out, holdout, load_split, read_lines
from nmt.errors import NMTError
from nmt.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
needs_datasets = pytest.mark.skipif(importlib.util.find_spec("datasets") is None,
                                    reason="the hf source needs `datasets`, not installed")
pytestmark = pytest.mark.usefixtures("one_thread")
# a few updates of a tiny Transformer on the shared 300-piece de-en tokenizer
TINY = {"model": {"arch": "transformer", "d_model": 32, "heads": 2, "ff_dim": 64,
                  "enc_layers": 1, "dec_layers": 1, "max_positions": 128},
        "train": {"max_epochs": 0, "max_steps": 2, "valid_every": 2, "batch_tokens": 600,
                  "threads": 1, "log_every": 1},
        "decode": {"beam": 1, "max_len_a": 0, "max_len_b": 8}}


@pytest.fixture(scope="module")
def pairs(data_dir):
    """200 Multi30k de-en pairs, plus one exact duplicate of an earlier pair."""
    d = data_dir / "multi30k"
    de, en = read_lines(d / "train.de.gz")[:200], read_lines(d / "train.en.gz")[:200]
    return de + [de[5]], en + [en[5]]


def cfg_of(values: dict) -> DataConfig:
    return recipe_from_dict({"data": values}, where="test").data


def write_tsv(path, de, en, header=None, gz=False, extra=True):
    rows = (["\t".join(header)] if header else []) + [
        "\t".join([d, e] + ([f"CC-BY 2.0 (France) #{i}"] if extra else []))
        for i, (d, e) in enumerate(zip(de, en))]
    data = ("\r\n".join(rows) + "\r\n").encode("utf-8-sig")  # CRLF and a BOM, as Excel writes
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# ----------------------------------------------------------------------------- formats

def test_tatoeba_layout_reads_as_is_and_header_by_name_or_number(tmp_path, pairs):
    de, en = pairs
    tsv = write_tsv(tmp_path / "corpus.tsv.gz", de, en, gz=True)  # de<TAB>en<TAB>attribution
    whole = cfg_of({"source": "tsv", "path": str(tsv), "src_lang": "de", "tgt_lang": "en"})
    parts = holdout(whole).parts
    assert sum(len(c.src) for c in parts.values()) <= len(de)
    assert set(parts["train"].src) | set(parts["val"].src) | set(parts["test_2016_flickr"].src) \
        == set(de)
    # reversed by column number: the target is column 1
    rev = cfg_of({"source": "tsv", "path": str(tsv), "src_lang": "en", "tgt_lang": "de",
                  "src_field": 2, "tgt_field": 1})
    assert holdout(rev).parts["train"].src == parts["train"].tgt
    # a header names the columns; auto finds it by the names asked for, extra columns ignored
    named = write_tsv(tmp_path / "named.tsv", de, en, header=["german", "english", "credit"])
    c = holdout(cfg_of({"source": "tsv", "path": str(named), "src_field": "german",
                        "tgt_field": "english"})).parts
    assert c["train"].src == parts["train"].src and c["val"].tgt == parts["val"].tgt
    # header: false reads the first row as data; names then have nothing to name
    with pytest.raises(NMTError, match="no column 'german': data.header is false"):
        load_split(cfg_of({"source": "tsv", "path": str(named), "src_field": "german",
                           "tgt_field": "english", "header": False}), "train")


def test_csv_quoting_and_a_tab_inside_a_tsv_sentence(tmp_path, pairs):
    de, en = pairs
    path = tmp_path / "corpus.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["en", "de"])
        w.writerows([[e, d] for d, e in zip(de, en)])
        w.writerow(['He said "yes, twice"', "Er sagte\n„ja, zweimal“"])  # quotes, comma, newline
    c = holdout(cfg_of({"source": "csv", "path": str(path)}))
    everything = {s: t for part in c.parts.values() for s, t in zip(part.src, part.tgt)}
    assert everything["Er sagte „ja, zweimal“"] == 'He said "yes, twice"'
    bad = write_tsv(tmp_path / "bad.tsv", de[:3], en[:3], extra=False)
    bad.write_text(bad.read_text(encoding="utf-8-sig") + "Ein\tHund.\tA dog.\n")
    with pytest.raises(NMTError, match=r"bad\.tsv: line 4 has 3 tab-separated fields, line 1 "
                                       r"has 2 \(a tab inside a sentence\?\)"):
        load_split(DataConfig(source="tsv", path=str(tmp_path), train="bad"), "val")


def test_two_plain_files_with_any_names_and_the_formats_detected(tmp_path, pairs):
    de, en = pairs
    (tmp_path / "europarl.deu").write_text("\n".join(de) + "\n", encoding="utf-8")
    (tmp_path / "europarl.eng").write_text("\n".join(en[:-1]) + "\n", encoding="utf-8")
    values = cli_data(src="de", tgt="en", src_file=str(tmp_path / "europarl.deu"),
                      tgt_file=str(tmp_path / "europarl.eng"))
    cfg = cfg_of(values)
    with pytest.raises(NMTError, match=r"europarl\.deu has 201 lines but .*europarl\.eng has "
                                       r"200"):
        load_split(cfg, "train")
    (tmp_path / "europarl.eng").write_text("\n".join(en) + "\n", encoding="utf-8")
    assert set(held_out(cfg)) == {"valid", "test"} and cfg.train == "train"
    assert len(load_split(cfg, "valid").src) == 10  # 5% of 201
    for name, source in (("a.tsv", "tsv"), ("a.csv.gz", "csv"), ("a.jsonl", "jsonl"),
                         ("a.parquet", "hf")):
        (tmp_path / name).write_text("x")
        assert cli_data(str(tmp_path / name), "de", "en")["source"] == source
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "train.de").write_text("x")
    assert cli_data(str(tmp_path / "folder"), "de", "en")["source"] == "files"
    for args, message in (((str(tmp_path / "a.tsv"),), "give the languages too"),
                          ((str(tmp_path / "europarl.deu"), "de", "en"), "cannot tell its "
                                                                          "format"),
                          ((str(tmp_path / "nope.tsv"), "de", "en"), "not found"),
                          ((str(tmp_path / "a.tsv"), "de", "en", "xml"), "--format xml")):
        with pytest.raises(NMTError, match=message):
            cli_data(*args)
    # the items keep their types and may hold any path (JSON is YAML)
    odd = {"path": "/tmp/a: b #c.tsv", "test": ["test"], "header": "auto"}
    d = recipe_from_dict({}, overrides=data_overrides(odd)).data
    assert (d.path, d.test, d.header) == (odd["path"], odd["test"], odd["header"])


def test_a_folder_with_train_alone_gets_held_out_splits_one_with_more_does_not(tmp_path, pairs):
    de, en = pairs
    for lang, lines in (("de", de), ("en", en)):
        (tmp_path / f"train.{lang}.gz").write_bytes(gzip.compress("\n".join(lines).encode()))
    cfg = DataConfig(source="files", path=str(tmp_path))
    assert held_out(cfg) == ["val", "test_2016_flickr"]
    assert len(load_split(cfg, "val").src) == 10
    (tmp_path / "dev.de").write_text(de[0])
    (tmp_path / "dev.en").write_text(en[0])
    assert held_out(cfg) == []  # a split it has but the recipe does not name: a typo, no holdout
    with pytest.raises(NMTError, match=r"val\.de: file not found"):
        load_split(cfg, "val")


# ----------------------------------------------------------------------------- held-out splits

def test_held_out_splits_are_seeded_disjoint_and_never_seen_in_training(tmp_path, data_dir):
    d = data_dir / "multi30k"
    de, en = read_lines(d / "train.de.gz")[:400], read_lines(d / "train.en.gz")[:400]
    de, en = de + de[:60], en + en[:60]                     # 60 exact duplicate pairs
    de, en = de + de[60:100], en + [e + " !" for e in en[60:100]]  # 40 sources, other targets
    write_tsv(tmp_path / "c.tsv", de, en)
    cfg = DataConfig(source="tsv", path=str(tmp_path / "c.tsv"), valid="valid", test=["test"],
                     holdout=40)
    h = holdout(cfg, tmp_path / "heldout")
    train, valid, test = (h.parts[s] for s in ("train", "valid", "test"))
    assert h.per_split == 25 and h.total == 500  # min(holdout, 5% of 500)
    assert 0 < len(valid.src) <= 25 and 0 < len(test.src) <= 25
    assert h.duplicates + h.in_train > 0                   # this corpus repeats, so some go
    held = list(zip(valid.src + test.src, valid.tgt + test.tgt))
    assert len(set(held)) == len(held)                     # no pair twice
    assert not set(valid.src + test.src) & set(train.src)  # nothing scored was trained on
    # every pair is in training or held out or counted as a dropped duplicate
    assert len(train.src) + len(held) + h.duplicates == h.total
    again = holdout(DataConfig(**{**vars(cfg)}))
    assert again.parts["test"].src == test.src             # the same seed, the same split
    other = holdout(DataConfig(**{**vars(cfg), "holdout_seed": 7}))
    assert other.parts["test"].src != test.src
    # written as plain files with what was done; load_split reads the same pairs
    assert read_lines(tmp_path / "heldout" / "test.de") == test.src
    info = json.loads((tmp_path / "heldout" / "holdout.json").read_text())
    assert info["splits"] == {"train": len(train.src), "valid": len(valid.src),
                              "test": len(test.src)}
    assert info["removed_duplicates"] == h.duplicates
    assert load_split(cfg, "valid", heldout=tmp_path / "heldout").tgt == valid.tgt
    with pytest.raises(NMTError, match="no split 'dev'"):
        load_split(cfg, "dev")


def test_too_small_a_corpus_to_hold_out_says_so(tmp_path, pairs):
    write_tsv(tmp_path / "c.tsv", pairs[0][:10], pairs[1][:10])
    with pytest.raises(NMTError, match="10 pairs are too few to hold out val"):
        load_split(DataConfig(source="tsv", path=str(tmp_path / "c.tsv")), "train")


# ----------------------------------------------------------------------------- hugging face

@needs_datasets
def test_hf_saved_to_disk_with_train_alone_parquet_and_script_datasets(tmp_path, pairs,
                                                                       monkeypatch):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    de, en = pairs
    rows = {"translation": [{"de": d, "en": e} for d, e in zip(de, en)]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(
        tmp_path / "saved")
    saved = cfg_of(cli_data(str(tmp_path / "saved"), "de", "en"))
    assert saved.source == "hf" and held_out(saved) == ["valid", "test"]
    assert len(load_split(saved, "test").src) == 10
    # Parquet: one file is one corpus; a folder's files are split by their names
    pq.write_table(pa.table({"de": de, "en": en}), tmp_path / "corpus.parquet")
    one = cfg_of(cli_data(str(tmp_path / "corpus.parquet"), "de", "en"))  # columns de, en
    c = load_split(one, "train")
    assert len(c.src) + 20 <= len(de) and c.files == (str(tmp_path / "corpus.parquet"),)
    (tmp_path / "pq" / "data").mkdir(parents=True)
    for split, n in (("train", 150), ("validation", 30), ("test", 20)):
        pq.write_table(pa.table({"translation": rows["translation"][:n]}),
                       tmp_path / "pq" / "data" / f"{split}-00000-of-00001.parquet")
    folder = cfg_of(cli_data(str(tmp_path / "pq"), "de", "en") | {"valid": "validation"})
    assert held_out(folder) == []
    assert load_split(folder, "validation").src == de[:30]
    # a hub dataset that is a loading script: what to do instead
    (tmp_path / "scripted").mkdir()
    (tmp_path / "scripted" / "scripted.py").write_text("import datasets\n")
    with pytest.raises(NMTError, match="loading script, which datasets .* no longer runs; use "
                                       "its Parquet files"):
        load_split(cfg_of(cli_data(str(tmp_path / "scripted"), "de", "en", "hf")), "train")


# ----------------------------------------------------------------------------- small items

def test_data_0_or_an_empty_list_is_no_section(tmp_path):
    for value in ("0", "[]"):
        (tmp_path / "r.yaml").write_text(f"data: {value}\n")
        with pytest.raises(NMTError, match=r"r\.yaml: data must be a mapping of fields, got"):
            load_recipe(tmp_path / "r.yaml")


def test_a_copy_task_is_refused_unless_two_columns_are_named():
    with pytest.raises(NMTError, match=r"data.tgt_lang: is data.src_lang \('en'\).*learn to "
                                       r"copy"):
        recipe_from_dict({"data": {"src_lang": "en", "tgt_lang": "en"}})
    with pytest.raises(NMTError, match="data.tgt_field: is data.src_field"):
        recipe_from_dict({"data": {"source": "tsv", "path": "x", "src_field": 1,
                                   "tgt_field": 1}})
    # the same language in two named columns is meant (e.g. simplification)
    recipe_from_dict({"data": {"source": "tsv", "path": "x", "src_lang": "en", "tgt_lang": "en",
                               "src_field": "complex", "tgt_field": "simple"}})


def test_an_unquoted_no_says_how_to_quote_it():
    with pytest.raises(NMTError, match=r"must be a string, got False; YAML reads an unquoted "
                                       r"no.*data.src_lang=\"no\""):
        recipe_from_dict({}, overrides=["data.src_lang=no"])
    assert recipe_from_dict({}, overrides=['data.src_lang="no"']).data.src_lang == "no"


def test_a_symlink_loop_is_named_so(tmp_path):
    (tmp_path / "train.de").symlink_to(tmp_path / "train.de")
    (tmp_path / "train.en").write_text("x\n")
    (tmp_path / "val.de").write_text("x\n")
    with pytest.raises(NMTError, match=r"train\.de: is a symbolic link loop"):
        load_split(DataConfig(source="files", path=str(tmp_path)), "train")


def test_a_file_and_its_gz_both_present_is_an_error(tmp_path):
    for name in ("train.de", "train.en", "val.de"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / "train.de.gz").write_bytes(gzip.compress(b"y\n"))
    with pytest.raises(NMTError, match=r"train\.de and .*train\.de\.gz both exist"):
        load_split(DataConfig(source="files", path=str(tmp_path)), "train")


# ----------------------------------------------------------------------------- comparisons

def test_a_comparison_s_data_wins_over_its_systems_or_is_refused(tmp_path):
    tsv = tmp_path / "corpus.tsv"
    tsv.write_text("x\ty\n")
    given = data_overrides(cli_data(str(tsv), "en", "fr"))
    for path in sorted((ROOT / "recipes").rglob("compare*.yaml")) + [
            ROOT / "recipes" / n for n in ("smoke.yaml", "multi30k-de-en/scores.yaml",
                                           "multi30k-de-en/time-cpu.yaml")]:
        cmp = load_comparison(path, given)
        for r in cmp.recipes.values():  # every system reads the corpus, with its languages
            assert (r.data.source, r.data.path, r.data.src_lang, r.data.tgt_lang) == \
                ("tsv", str(tsv), "en", "fr") and r.data.test == ["test"]
    system = tmp_path / "sys.yaml"
    system.write_text("data: {source: multi30k, src_lang: de, tgt_lang: en}\n"
                      "model: {arch: rnn, attention: none}\n")
    p = tmp_path / "c.yaml"
    # base: used to go under the system's recipe and silently train on Multi30k
    p.write_text(f"base: {{data: {{source: tsv, path: {tsv}, src_lang: en, tgt_lang: fr}}}}\n"
                 "systems: {no-attention: {recipe: sys.yaml}}\n")
    assert load_comparison(p).recipes["no-attention"].data.source == "tsv"
    p.write_text(f"data: {{source: tsv, path: {tsv}, src_lang: en, tgt_lang: fr}}\n"
                 "systems: {no-attention: {recipe: sys.yaml}}\n")
    assert load_comparison(p).recipes["no-attention"].data.path == str(tsv)
    p.write_text(f"data: {{source: tsv, path: {tsv}, src_lang: en, tgt_lang: fr}}\n"
                 "systems: {no-attention: {recipe: sys.yaml, set: {data: {src_lang: de}}}}\n")
    with pytest.raises(NMTError, match=r"systems.no-attention: set: data.src_lang is 'de', but "
                                       r"the comparison's data: gives data.src_lang 'en'"):
        load_comparison(p)
    p.write_text("systems: {no-attention: {recipe: sys.yaml, set: {data: {tgt_lang: fr}}}}\n")
    with pytest.raises(NMTError, match=r"set: data.tgt_lang is 'fr', but the comparison's "
                                       r"--set/--data gives data.tgt_lang 'en'"):
        load_comparison(p, ["data.tgt_lang=en"])


def test_each_format_trains_and_a_tsv_compares(tmp_path, pairs, tok_dir):
    """One tiny run per format, each on its own layout of the same pairs, and one comparison
    of two systems from a TSV, its held-out splits written once for both."""
    pytest.importorskip("datasets")
    import pyarrow as pa
    import pyarrow.parquet as pq

    de, en = pairs
    write_tsv(tmp_path / "c.tsv", de, en)
    with open(tmp_path / "c.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["de", "en"]] + [[d, e] for d, e in zip(de, en)])
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"de": d, "en": e}) + "\n"
                                              for d, e in zip(de, en)))
    (tmp_path / "c.de").write_text("\n".join(de))
    (tmp_path / "c.en").write_text("\n".join(en))
    pq.write_table(pa.table({"translation": [{"de": d, "en": e} for d, e in zip(de, en)]}),
                   tmp_path / "c.parquet")
    for name in ("c.tsv", "c.csv", "c.jsonl", "c.parquet", "files"):
        values = cli_data(src="de", tgt="en", src_file=str(tmp_path / "c.de"),
                          tgt_file=str(tmp_path / "c.en")) if name == "files" else \
            cli_data(str(tmp_path / name), "de", "en")
        r = recipe_from_dict(TINY | {"data": values}, where="test")
        out = tmp_path / f"run-{name}"
        s = training.train(r, out, quiet=True, tokenizer=Tokenizer.load(tok_dir))
        assert s["steps"] == 2 and (out / "best.pt").is_file(), name
        assert read_lines(out / "heldout" / "valid.de") == load_split(r.data, "valid").src
        assert "held out of" in (out / "train.log").read_text()
    cmp = tmp_path / "cmp.yaml"
    cmp.write_text("systems:\n  no-attention: {set: {model: {arch: rnn, attention: none, "
                   "emb_dim: 16, hidden_size: 32, enc_layers: 1, dec_layers: 1}}}\n"
                   "  transformer: {set: {model: {d_model: 32, heads: 2, ff_dim: 64, "
                   "enc_layers: 1, dec_layers: 1}}}\n"
                   "examples: 1\nheatmaps: 0\n")
    sets = ["tokenizer.vocab_size=200", "train.max_epochs=0", "train.max_steps=2",
            "train.valid_every=2", "train.batch_tokens=600", "train.threads=1",
            "decode.beam=1", "decode.max_len_a=0", "decode.max_len_b=8"]
    res = CliRunner().invoke(app, ["compare", str(cmp), "--data", str(tmp_path / "c.tsv"),
                                   "--src", "de", "--tgt", "en", "--out", str(tmp_path / "cmp"),
                                   "--quiet"] + [x for s in sets for x in ("--set", s)])
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert set(results["systems"]) == {"no-attention", "transformer"}
    assert read_lines(tmp_path / "cmp" / "heldout" / "test.en") == \
        load_split(cfg_of(cli_data(str(tmp_path / "c.tsv"), "de", "en")), "test").tgt
    assert not (tmp_path / "cmp" / "systems" / "transformer" / "heldout").exists()


def test_a_tokenizer_built_before_the_new_data_fields_is_still_reused(tmp_path):
    from nmt.compare.stale import stale_tokenizer, tokenizer_key
    from nmt.config import Recipe

    (tmp_path / "spm.model").write_bytes(b"x")
    old = {k: v for k, v in tokenizer_key(Recipe()).items()
           if k not in ("data.src_file", "data.tgt_file", "data.header") and
           not k.startswith("data.holdout")}
    (tmp_path / "settings.json").write_text(json.dumps(old))
    assert stale_tokenizer(tmp_path, Recipe()) is None
    r = recipe_from_dict({"data": {"holdout_seed": 7}})  # another training part
    assert "data.holdout_seed 1234 -> 7" in stale_tokenizer(tmp_path, r)


def test_train_without_a_recipe_needs_data_and_names_the_run_after_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["train", "--src", "en", "--tgt", "fr", "--set",
                                   "train.max_steps=-1"])
    # the default recipe, with its checks (a crash would be exit code 1)
    assert res.exit_code == 2 and "train.max_steps" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["train"])
    assert res.exit_code == 2 and "--data PATH --src LANG --tgt LANG" in " ".join(
        res.output.split())


def test_another_held_out_test_split_makes_a_trained_system_stale(tmp_path):
    from nmt.compare.stale import stale_system

    (tmp_path / "c.tsv").write_text("".join(f"s{i}\tt{i}\n" for i in range(100)))
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"")
    (run / "recipe.yaml").write_text(f"data: {{source: tsv, path: {tmp_path / 'c.tsv'}, "
                                     f"src_lang: en, tgt_lang: fr, test: [test]}}\n")
    same = recipe_from_dict({"data": {"source": "tsv", "path": str(tmp_path / "c.tsv"),
                                      "src_lang": "en", "tgt_lang": "fr", "test": ["test"]}})
    assert stale_system(run, same, tmp_path / "no-tokenizer") is None
    more = recipe_from_dict({"data": {**vars(same.data), "test": ["test", "test2"]}})
    assert "held out of its corpus changed (val, test -> val, test, test2)" in \
        stale_system(run, more, tmp_path / "no-tokenizer")
