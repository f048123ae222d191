"""`nmt compare`: the smoke comparison end to end, and what a re-run may and may not reuse.

The full smoke comparison runs once per module (a shared fixture); each test that changes a
comparison directory works on its own copy or its own tiny two-system comparison."""
import copy
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from nmt import report
from nmt.compare import (Comparison, Job, SeedRun, length_buckets, load_comparison,
                         quantile_edges, run, seed_runs)
from nmt.config import Recipe
from nmt.data import load_split, read_lines
from nmt.distributed import cpu_count
from nmt.errors import NMTError
from nmt.evaluation import bleu_interval, score
from nmt.report import verdict

ROOT = Path(__file__).resolve().parents[1]
# Shrunk further than recipes/smoke.yaml itself so the suite stays fast; the stages are the same.
FAST = ["train.max_epochs=1", "data.max_train_pairs=600", "data.max_valid_pairs=40",
        "data.max_test_pairs=60", "tokenizer.vocab_size=300"]
# two tiny systems, a few updates each: for the tests of what a re-run reuses
TINY = ["data.max_train_pairs=300", "data.max_valid_pairs=20", "data.max_test_pairs=30",
        "tokenizer.vocab_size=300", "train.max_epochs=0", "train.max_steps=2",
        "train.valid_every=2", "train.batch_tokens=600", "train.threads=1",
        "decode.max_len_a=0", "decode.max_len_b=8"]  # 2-update models rarely stop by themselves


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def sets(items):
    return [x for s in items for x in ("--set", s)]


@pytest.fixture(autouse=True)
def _data(data_dir, monkeypatch):
    monkeypatch.setenv("NMT_DATA_DIR", str(data_dir))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, data_dir):
    """The smoke comparison, run once: (output directory, its first results.json)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NMT_DATA_DIR", str(data_dir))
    out = tmp_path_factory.mktemp("smoke") / "smoke"
    res = invoke("compare", "recipes/smoke.yaml", "--out", out, "--quiet", *sets(FAST))
    mp.undo()
    assert res.exit_code == 0, res.output
    return out, json.loads((out / "results.json").read_text())


def smoke_args(out):
    return ["compare", "recipes/smoke.yaml", "--out", out, "--quiet", *sets(FAST)]


def mtimes(out, names, file="best.pt"):
    return {n: (out / "systems" / n / file).stat().st_mtime_ns for n in names}


def test_smoke_comparison_writes_full_report(smoke):
    out, results = smoke
    systems = list(load_comparison("recipes/smoke.yaml").recipes)
    assert sorted(results["systems"]) == sorted(systems)
    report = (out / "report.md").read_text()
    for name in systems:
        assert f"| {name} |" in report
        hyp = (out / "systems" / name / "test_2016_flickr.hyp").read_text().splitlines()
        assert len(hyp) == 60  # one output line per test line
    assert set(results["tests"]["test_2016_flickr"]["bootstrap"]) == set(systems)
    pngs = ["learning_curves.png", "bleu_by_length_test_2016_flickr.png"] + \
        [f"attention_{n}_1.png" for n in systems if n != "no-attention"]
    for png in pngs:
        assert (out / png).stat().st_size > 1000, png
        assert f"({png})" in report


def test_smoke_report_says_where_each_rnn_attention_goes(smoke):
    out, results = smoke
    report = (out / "report.md").read_text()
    lines = report.splitlines()
    head = lines.index("| system | sharpness | on EOS | on first word | entropy |")
    table = lines[head + 2:lines.index("", head)]  # below the header and its rule
    rows = {line.split(" | ")[0].strip("| "): line for line in table}
    rnns = {n for n, s in results["systems"].items()
            if s["arch"] == "rnn" and s["attention"] != "none"}
    assert set(rows) == rnns  # one row per attention RNN; neither no-attention nor Transformer
    for line in rows.values():
        sharpness, on_eos, on_first, entropy = line.strip("| ").split(" | ")[1:]
        assert 0 < float(sharpness) <= 1 and 0 <= float(entropy) <= 1
        assert 0 <= int(on_eos.rstrip("%")) <= 100 and 0 <= int(on_first.rstrip("%")) <= 100


def test_smoke_report_says_which_way_each_system_differs(smoke):
    out, results = smoke
    bs = results["tests"]["test_2016_flickr"]["bootstrap"]
    base = bs["no-attention"]["score"]
    report = (out / "report.md").read_text()
    for name, row in bs.items():
        if name == "no-attention":
            continue
        want = verdict(row["score"] - base, row["p_value"])
        line = next(x for x in report.splitlines() if x.startswith(f"| {name} | ") and "±" in x)
        assert line.endswith(f"| {want} |") and f"{row['score'] - base:+.2f} BLEU" in line


def test_results_hold_the_attention_and_examples_the_report_shows(smoke):
    out, results = smoke
    att, ex = results["attention"], results["examples"]
    assert att["split"] == ex["split"] == "test_2016_flickr" and att["pairs"] == 60
    rnns = {n for n, s in results["systems"].items()
            if s["arch"] == "rnn" and s["attention"] != "none"}
    assert set(att["focus"]) == rnns  # the numbers of report.md's attention table
    report_md = (out / "report.md").read_text()
    for name, f in att["focus"].items():
        assert f"| {name} | {f['sharpness']:.2f} | {f['on_eos']:.0%} |" in report_md
    # the picked lines' translations: each system's hypothesis file's lines
    assert len(ex["lines"]) == 3 and set(ex["translations"]) == set(results["systems"])
    for name, texts in ex["translations"].items():
        hyps = read_lines(out / "systems" / name / "test_2016_flickr.hyp")
        assert texts == [hyps[i] for i in ex["lines"]]
    # the heatmaps' weights beside results.json: one (T, S) map per drawn map, T output pieces
    maps = json.loads((out / att["maps"]).read_text(encoding="utf-8"))["systems"]
    assert set(maps) == set(results["systems"])
    for name, sentences in maps.items():
        assert [s["line"] for s in sentences] == ex["lines"][:1]  # heatmaps: 1
        for s in sentences:
            assert bool(s["maps"]) == (name != "no-attention")
            for weights in s["maps"].values():
                assert len(weights) == len(s["output"])
                assert all(len(row) == len(s["source"]) and all(0 <= w <= 1 for w in row)
                           for row in weights)


def test_the_report_is_written_from_the_results_alone(smoke, tmp_path):
    """report.write reads no checkpoint: with every .pt gone, results.json and attention.json
    give the same report, figures and report.html."""
    out = tmp_path / "smoke"
    shutil.copytree(smoke[0], out)
    for pt in out.rglob("*.pt"):
        pt.unlink()
    written = {p.name: p.read_bytes() for p in out.glob("report.*")}
    figures = {p.name: p.stat().st_size for p in out.glob("*.png")}
    for p in [*out.glob("report.*"), *out.glob("*.png")]:
        p.unlink()
    cmp = load_comparison("recipes/smoke.yaml", FAST)
    data = cmp.recipes[cmp.baseline].data
    tests = {s: load_split(data, s, limit=data.max_test_pairs, heldout=out / "heldout")
             for s in data.test}
    report.write(cmp, out, json.loads((out / "results.json").read_text()), tests)
    assert not list(out.rglob("*.pt"))
    assert {p.name: p.read_bytes() for p in out.glob("report.*")} == written
    assert set(figures) == {p.name for p in out.glob("*.png")}
    assert all((out / name).stat().st_size > 1000 for name in figures)


def test_verdict_has_a_direction():
    assert verdict(-12.0, 0.001) == "significantly worse"
    assert verdict(3.0, 0.01) == "significantly better"
    assert verdict(3.0, 0.2) == "no significant difference"


def test_a_finished_comparison_rerun_trains_nothing(smoke, tmp_path):
    out = tmp_path / "smoke"
    shutil.copytree(smoke[0], out)
    names = list(smoke[1]["systems"])
    stamp = mtimes(out, names)
    res = invoke(*smoke_args(out))
    assert res.exit_code == 0, res.output
    assert stamp == mtimes(out, names)
    assert json.loads((out / "results.json").read_text())["systems"].keys() == \
        smoke[1]["systems"].keys()


def test_a_system_killed_before_its_first_checkpoint_is_trained_afresh(smoke, tmp_path):
    out = tmp_path / "smoke"
    shutil.copytree(smoke[0], out)
    names = list(smoke[1]["systems"])
    stamp = mtimes(out, names)
    killed = out / "systems" / "no-attention"
    for f in [*killed.glob("*.pt"), *killed.glob("*.hyp"), killed / "done.json"]:
        f.unlink()
    assert (killed / "train.log").is_file()
    res = invoke(*smoke_args(out))
    assert res.exit_code == 0, res.output
    assert (killed / "done.json").is_file() and (killed / "test_2016_flickr.hyp").is_file()
    assert all(stamp[n] == mtimes(out, [n])[n] for n in names if n != "no-attention")


def test_attention_draws_one_sentence_of_a_finished_run(smoke, tmp_path):
    out = smoke[0]
    png = tmp_path / "a.png"
    res = invoke("attention", "--checkpoint", out / "systems" / "bahdanau",
                 "--text", "Ein Mann fährt Fahrrad.", "-o", png)
    assert res.exit_code == 0, res.output
    assert png.stat().st_size > 1000
    res = invoke("attention", "--checkpoint", out / "systems" / "no-attention",
                 "--text", "Ein Mann.")
    assert res.exit_code == 2 and "no attention" in res.output


def test_systems_must_share_data_and_tokenizer(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("systems:\n  a: {set: {model: {arch: rnn, attention: none}}}\n"
                 "  b: {set: {tokenizer: {vocab_size: 500}}}\nbaseline: a\n")
    with pytest.raises(NMTError, match="share data and tokenizer"):
        load_comparison(p)
    p.write_text("systems:\n  a: {}\nbaselne: a\n")
    with pytest.raises(NMTError, match="did you mean 'baseline'"):
        load_comparison(p)


def test_length_buckets_cover_every_sentence_once():
    src = ["a " * n for n in (1, 9, 10, 14, 15, 30)]
    buckets = length_buckets(src, [10, 15, 20, 25])
    seen = sorted(i for _, idx in buckets for i in idx)
    assert seen == list(range(len(src)))
    assert [label for label, _ in buckets] == ["<10", "10-14", "15-19", "25+"]


def test_quantile_buckets_hold_about_equal_shares():
    rng = random.Random(0)
    # caption-like lengths: many short sentences, a thin tail of long ones
    src = ["w " * max(1, int(rng.gauss(12, 4))) for _ in range(1000)] + ["w " * 40] * 3
    edges = quantile_edges(src, 5)
    buckets = length_buckets(src, edges)
    sizes = [len(idx) for _, idx in buckets]
    assert sum(sizes) == len(src) and len(buckets) == 5
    assert min(sizes) >= 0.5 * len(src) / 5            # no bucket of a handful of sentences
    assert edges == sorted(set(edges))
    assert quantile_edges(["a b"] * 10, 5) == []        # one length: one bucket


def test_bleu_interval_shrinks_with_more_sentences():
    hyps = ["a man rides a red bike .", "two dogs play in the snow .", "a woman is cooking ."]
    refs = ["a man is riding a red bike .", "two dogs are playing in snow .", "a woman cooks ."]
    small, large = bleu_interval(hyps * 10, refs * 10), bleu_interval(hyps * 100, refs * 100)
    assert small["bleu"] == pytest.approx(score(hyps, [refs])["bleu"], abs=1e-6)
    assert 0 < large["ci"] < small["ci"]


# ----------------------------------------------------------------------------- tiny comparisons

def tiny_comparison(tmp_path, extra: str = "", names=("no-attention", "bahdanau")) -> Path:
    p = tmp_path / "cmp.yaml"
    systems = "".join(f"  {n}: {{recipe: {ROOT / 'recipes' / 'smoke' / n}.yaml}}\n"
                      for n in names)
    defaults = "".join(f"{k}: {v}\n" for k, v in (("examples", 2), ("heatmaps", 0))
                       if f"{k}:" not in extra)
    p.write_text(f"baseline: {names[0]}\n{defaults}{extra}systems:\n{systems}")
    return p


def compare(recipe, out, *more):
    return invoke("compare", recipe, "--out", out, "--quiet", *sets(TINY), *more)


def test_reporting_settings_do_not_make_a_trained_system_stale():
    from nmt.compare.stale import training_key

    r = load_comparison("recipes/smoke.yaml").recipes["transformer"]
    quiet = copy.deepcopy(r)
    quiet.train.tensorboard, quiet.train.progress_every = False, 7
    assert training_key(quiet) == training_key(r)
    quiet.train.lr *= 2
    assert training_key(quiet) != training_key(r)


def test_a_jobs_recipe_is_a_copy_with_its_device_and_threads(tmp_path):
    cmp = Comparison(recipes={"a": Recipe(name="a"), "b": Recipe(name="b")}, seeds=2)
    loaded = copy.deepcopy(cmp)
    sr = seed_runs(cmp, "a")[0]
    job = Job(sr, tmp_path, {}, device="cpu", threads=3)
    assert job.recipe.train.device == "cpu" and job.recipe.train.threads == 3
    assert job.recipe.model == sr.recipe.model and job.run_dir == tmp_path / "systems" / "a"
    assert cmp == loaded  # the comparison's recipe is not the job's
    own = copy.deepcopy(sr.recipe)
    own.train.threads = 1  # a recipe's own threads win over a --jobs share
    assert Job(SeedRun("a", 0, "a", own), tmp_path, {}, threads=3).recipe.train.threads == 1
    assert Job(sr, tmp_path, {}).recipe == sr.recipe  # auto: the recipe's own device


def test_a_run_leaves_the_comparison_as_loaded(tmp_path):
    """run() with --device writes nothing into the recipes it was given (which collect and
    every other run read, and a caller may pass again)."""
    recipe, out = tiny_comparison(tmp_path), tmp_path / "out"
    cmp = load_comparison(recipe, TINY)
    loaded = copy.deepcopy(cmp)
    results = run(cmp, out, device="cpu", quiet=True)
    assert cmp == loaded and set(results["systems"]) == {"no-attention", "bahdanau"}
    assert all(r.train.device == "auto" for r in cmp.recipes.values())


def test_a_changed_recipe_is_never_answered_with_old_results(tmp_path):
    recipe, out = tiny_comparison(tmp_path), tmp_path / "out"
    assert compare(recipe, out).exit_code == 0
    stamp = mtimes(out, ["no-attention", "bahdanau"])
    for change in ("train.max_steps=4", "tokenizer.vocab_size=200"):
        res = compare(recipe, out, "--set", change)
        assert res.exit_code == 2, res.output
        text = " ".join(res.output.split())
        assert change.split("=")[0] in text and "--retrain" in text and "Traceback" not in text
        assert stamp == mtimes(out, ["no-attention", "bahdanau"])  # nothing was touched
        assert (out / "tokenizer" / "spm.model").is_file()
    res = compare(recipe, out, "--set", "train.max_steps=4", "--retrain")
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert {s["summary"]["steps"] for s in results["systems"].values()} == {4}
    # a decoding change needs no training, only decoding again, with the new settings
    stamp = mtimes(out, ["no-attention", "bahdanau"])
    res = compare(recipe, out, "--set", "train.max_steps=4", "--set", "decode.beam=2")
    assert res.exit_code == 0, res.output
    assert stamp == mtimes(out, ["no-attention", "bahdanau"])
    info = json.loads((out / "systems" / "bahdanau" / "test_2016_flickr.json").read_text())
    assert info["beam"] == 2 and info["decode"]["beam"] == 2
    # the decoding batch size changes only how fast: the hypotheses stand; the record keeps the
    # size they were decoded at (auto's choice on this device)
    assert info["decode"]["batch_tokens"] == "auto" and info["batch_tokens"] == 4096  # on a CPU
    hyp = out / "systems" / "bahdanau" / "test_2016_flickr.hyp"
    decoded = hyp.stat().st_mtime_ns
    res = compare(recipe, out, "--set", "train.max_steps=4", "--set", "decode.beam=2",
                  "--set", "decode.batch_tokens=64")
    assert res.exit_code == 0, res.output
    assert hyp.stat().st_mtime_ns == decoded and "decoding" not in res.output


def test_a_run_from_before_a_new_recipe_field_is_still_reused(tmp_path):
    # a field added to the recipe since a system was trained is absent from its recipe.yaml;
    # the run trained with that field's default, so it is the same run and is not retrained
    import yaml

    recipe, out = tiny_comparison(tmp_path), tmp_path / "out"
    assert compare(recipe, out).exit_code == 0
    saved = out / "systems" / "bahdanau" / "recipe.yaml"
    values = yaml.safe_load(saved.read_text())
    del values["train"]["batching"]
    saved.write_text(yaml.safe_dump(values))
    # and a decode field absent from how its test set was decoded: the hypotheses stand
    hyp = out / "systems" / "bahdanau" / "test_2016_flickr.hyp"
    how = json.loads(hyp.with_suffix(".json").read_text())
    del how["decode"]["top_p"]
    hyp.with_suffix(".json").write_text(json.dumps(how))
    stamp, decoded = mtimes(out, ["no-attention", "bahdanau"]), hyp.stat().st_mtime_ns
    res = compare(recipe, out)
    assert res.exit_code == 0, res.output
    assert "trained already" in res.output and stamp == mtimes(out, ["no-attention", "bahdanau"])
    assert hyp.stat().st_mtime_ns == decoded
    # unless its default changed since: hypotheses from before decode.amp were searched in
    # float32, not as its default (auto) asks, so they are decoded again (not retrained)
    del how["decode"]["amp"]
    hyp.with_suffix(".json").write_text(json.dumps(how))
    res = compare(recipe, out)
    assert res.exit_code == 0, res.output
    assert "bahdanau: decoding test_2016_flickr" in " ".join(res.output.split())
    assert stamp == mtimes(out, ["no-attention", "bahdanau"]) and hyp.stat().st_mtime_ns != decoded
    # a field the run did set to something else is still a change
    values["train"]["batching"] = "mixed"
    saved.write_text(yaml.safe_dump(values))
    res = compare(recipe, out)
    assert res.exit_code == 2 and "train.batching" in " ".join(res.output.split())


def test_a_changed_tokenizer_retrains_every_system(tmp_path):
    recipe, out = tiny_comparison(tmp_path), tmp_path / "out"
    assert compare(recipe, out).exit_code == 0
    old = (out / "tokenizer" / "spm.model").read_bytes()
    # a comparison made before tokenizer/settings.json existed: its systems' recipes tell
    (out / "tokenizer" / "settings.json").unlink()
    stamp = mtimes(out, ["no-attention", "bahdanau"])
    assert compare(recipe, out).exit_code == 0
    assert stamp == mtimes(out, ["no-attention", "bahdanau"])
    assert (out / "tokenizer" / "settings.json").is_file()
    res = compare(recipe, out, "--set", "tokenizer.vocab_size=200", "--retrain")
    assert res.exit_code == 0, res.output
    new = (out / "tokenizer" / "spm.model").read_bytes()
    assert new != old
    for n in ("no-attention", "bahdanau"):  # each system now carries the new tokenizer
        assert (out / "systems" / n / "tokenizer" / "spm.model").read_bytes() == new


def test_only_never_scores_stale_hypotheses_of_the_others(tmp_path):
    recipe, out = tiny_comparison(tmp_path), tmp_path / "out"
    assert compare(recipe, out).exit_code == 0
    res = compare(recipe, out, "--only", "bahdanau", "--set", "data.max_test_pairs=20")
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["systems"]["bahdanau"]["tests"]["test_2016_flickr"]
    assert "test_2016_flickr" not in results["systems"]["no-attention"]["tests"]
    assert "no-attention/test_2016_flickr" in results["left_out"]
    assert "no-attention" in " ".join(res.output.split())  # the warning names the system


def test_hypotheses_are_read_by_newline_only(tmp_path):
    """U+0085 and U+2028 inside a translation are characters, not line ends."""
    recipe, out = tiny_comparison(tmp_path), tmp_path / "out"
    assert compare(recipe, out).exit_code == 0
    hyp = out / "systems" / "bahdanau" / "test_2016_flickr.hyp"
    lines = hyp.read_text(encoding="utf-8").split("\n")
    lines[0] += " a\x85b\u2028c"
    hyp.write_text("\n".join(lines), encoding="utf-8")
    stamp = hyp.stat().st_mtime_ns
    # a hypothesis file recorded before decoding keys were: reused when beam and size agree
    legacy = out / "systems" / "no-attention" / "test_2016_flickr.json"
    info = json.loads(legacy.read_text())
    legacy.write_text(json.dumps({k: info[k] for k in ("seconds", "sentences", "beam")}))
    legacy_stamp = legacy.with_suffix(".hyp").stat().st_mtime_ns
    res = compare(recipe, out)
    assert res.exit_code == 0, res.output
    assert hyp.stat().st_mtime_ns == stamp  # not decoded again
    assert legacy.with_suffix(".hyp").stat().st_mtime_ns == legacy_stamp
    results = json.loads((out / "results.json").read_text())
    assert results["tests"]["test_2016_flickr"]["n"] == 30
    assert "bahdanau" in results["tests"]["test_2016_flickr"]["bootstrap"]


def test_a_comparison_may_score_several_test_sets(tmp_path):
    recipe, out = tiny_comparison(tmp_path), tmp_path / "out"
    res = compare(recipe, out, "--set", "data.test=[test_2016_flickr, val]")
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    for s in results["systems"].values():
        assert set(s["tests"]) == {"test_2016_flickr", "val"}
    assert set(results["tests"]) == {"test_2016_flickr", "val"}
    report = (out / "report.md").read_text()
    assert "BLEU test_2016_flickr" in report and "BLEU val" in report
    assert "Significance on val" in report


@pytest.mark.parametrize("extra, message", [
    ("examples: two\n", "examples must be an integer"),
    ("heatmaps: -1\n", "heatmaps must be >= 0"),
    ("length_buckets: [10, 5]\n", "length_buckets must be increasing"),
    ("overrides: {train: {lr: fast}}\n", "train.lr must be a number"),
    ("overrides: {data: {test: []}}\n", "data.test lists no test split"),
])
def test_a_bad_comparison_recipe_fails_before_any_training(tmp_path, extra, message):
    recipe, out = tiny_comparison(tmp_path, extra), tmp_path / "out"
    res = compare(recipe, out)
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output
    assert not (out / "systems").exists() and not (out / "tokenizer").exists()


def test_system_names_cannot_escape_the_comparison_directory(tmp_path):
    p = tmp_path / "c.yaml"
    for bad in ("b/../a", "..", ".hidden", "a b"):
        p.write_text(f"baseline: a\nsystems:\n  a: {{}}\n  {json.dumps(bad)}: {{}}\n")
        with pytest.raises(NMTError, match="system name becomes a directory name"):
            load_comparison(p)


def test_parallel_compare_trains_every_system_at_once_then_reports(tmp_path, data_dir):
    """bench/parallel_compare.sh (whole comparisons on one GPU): `nmt compare --jobs` with every
    run at once, each on its share of the cores, then the report; TIMES and DONE for gpu_report."""
    import yaml

    over: dict = {}
    for item in TINY:
        key, value = item.split("=", 1)
        section, name = key.split(".")
        if key != "train.threads":  # the script's to set
            over.setdefault(section, {})[name] = yaml.safe_load(value)
    recipe = tiny_comparison(tmp_path, yaml.safe_dump({"overrides": over}))
    root = tmp_path / "all"
    env = {k: v for k, v in os.environ.items()  # nproc would read these
           if k not in ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT", "THREADS")}
    env.update(NMT_DATA_DIR=str(data_dir), PYTHON=sys.executable,
               NMT=f"{sys.executable} {ROOT / 'cli.py'}")
    done = subprocess.run(["bash", str(ROOT / "bench" / "parallel_compare.sh"), str(root),
                           str(recipe)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    out = root / "cmp"
    assert (out / "report.md").is_file() and (root / "DONE").is_file()
    start, end = map(int, (root / "TIMES").read_text().split())
    assert start <= end
    results = json.loads((out / "results.json").read_text())
    assert set(results["systems"]) == {"no-attention", "bahdanau"}
    share = max(1, cpu_count() // 2)  # the cores shared out between the two
    for name in ("no-attention", "bahdanau"):
        log = (out / "systems" / name / "train.log").read_text()
        assert f"({share} thread{'s' if share > 1 else ''}" in log
        assert results["systems"][name]["tests"]["test_2016_flickr"]["bleu"] >= 0


def test_jobs_train_side_by_side_to_the_same_results(tmp_path):
    """--jobs 2: each system in its own process at the same time; on the CPU training is
    deterministic, so every system ends as trained one after another."""
    recipe = tiny_comparison(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    assert compare(recipe, one).exit_code == 0
    res = compare(recipe, two, "--jobs", "2")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    for name in ("no-attention", "bahdanau"):
        assert f"{name}: started" in text and f"{name}: done" in text
        log = two / "systems" / f"{name}.log"
        assert "training" in log.read_text()  # the run's own output, in its log
        a, b = (d / "systems" / name / "test_2016_flickr.hyp" for d in (one, two))
        assert a.read_text() == b.read_text()
    assert json.loads((two / "results.json").read_text())["tests"]["test_2016_flickr"]["n"] == 30
    if not torch.cuda.is_available():  # a run that fails in its process: one error naming it
        res = compare(recipe, tmp_path / "bad", "--jobs", "2", "--set", "train.device=cuda")
        assert res.exit_code == 2 and "Traceback" not in res.output
        text = " ".join(res.output.split())
        assert "no-attention: " in text and "bahdanau: " in text and "no CUDA GPU" in text
        assert text.count("(all of it in") == 2  # each run's log, named


def test_sigterm_or_ctrl_c_stops_every_side_by_side_run_resumably(tmp_path, data_dir):
    """SIGTERM (or Ctrl-C, which takes the same way) on `compare --jobs`: each running system
    stops as `nmt train` stops (last.pt saved), the command says how to go on, and running it
    again finishes them."""
    recipe, out = tiny_comparison(tmp_path), tmp_path / "out"
    steps = ["--set", "train.max_steps=50", "--set", "train.valid_every=10"]
    args = [sys.executable, str(ROOT / "cli.py"), "compare", str(recipe), "--out", str(out),
            "--quiet", "--jobs", "2", *sets(TINY), *steps]
    env = {**os.environ, "NMT_DATA_DIR": str(data_dir)}
    p = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    logs = [out / "systems" / n / "train.log" for n in ("no-attention", "bahdanau")]
    deadline = time.time() + 120
    while time.time() < deadline and not all(
            f.is_file() and "valid step" in f.read_text() for f in logs):
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)  # as `timeout` or a cluster's scheduler would
    text = " ".join(p.communicate(timeout=120)[0].split())
    assert p.returncode == 2 and "interrupted" in text and "Traceback" not in text, text
    # the slower system at least was still training; a faster one may have finished first
    assert not (out / "systems" / "bahdanau" / "done.json").is_file()
    assert all((out / "systems" / n / "last.pt").is_file() for n in ("no-attention", "bahdanau"))
    again = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    results = json.loads((out / "results.json").read_text())
    assert {s["summary"]["steps"] for s in results["systems"].values()} == {50}
