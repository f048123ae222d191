"""`nmt compare --seeds N`: one run per seed, numbers over the seeds, the significance test that
resamples sentences and seeds, and what a re-run reuses.

One tiny two-system comparison is trained with two seeds once per module; each test that changes
a comparison directory works on its own copy."""
import json
import random
import shutil
import statistics

import pytest
from matplotlib.axes import Axes
from test_compare import compare, mtimes, tiny_comparison

from nmt import plots
from nmt.compare import curve_band, load_comparison
from nmt.compare.results import _aggregate
from nmt.config import load_recipe
from nmt.errors import NMTError
from nmt.evaluation import bleu_interval, paired_bootstrap, seed_bootstrap, seed_interval

NAMES = ("no-attention", "bahdanau")
SPLIT = "test_2016_flickr"


@pytest.fixture(autouse=True)
def _data(data_dir, monkeypatch):
    monkeypatch.setenv("NMT_DATA_DIR", str(data_dir))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, data_dir):
    """The tiny comparison with --seeds 2, run once: (recipe, output directory, results)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NMT_DATA_DIR", str(data_dir))
    tmp = tmp_path_factory.mktemp("seeds")
    recipe, out = tiny_comparison(tmp, "heatmaps: 1\n"), tmp / "out"
    res = compare(recipe, out, "--seeds", 2)
    mp.undo()
    assert res.exit_code == 0, res.output
    return recipe, out, json.loads((out / "results.json").read_text())


def run_dirs(name):
    return [name, f"{name}-seed1"]


def test_every_system_is_trained_once_per_seed(seeded):
    recipe, out, results = seeded
    assert results["seeds"] == 2
    for name in NAMES:
        first = load_comparison(recipe).recipes[name].train.seed
        seeds = [load_recipe(out / "systems" / d / "recipe.yaml").train.seed
                 for d in run_dirs(name)]
        assert seeds == [first, first + 1]
        assert [s["summary"]["seed"] for s in results["systems"][name]["seeds"]] == seeds
        hyps = [(out / "systems" / d / f"{SPLIT}.hyp").read_text() for d in run_dirs(name)]
        assert len(hyps[0].splitlines()) == len(hyps[1].splitlines()) == 30
    # the seeds give different models (the same recipe otherwise)
    assert len({(out / "systems" / d / f"{SPLIT}.hyp").read_text()
                for d in run_dirs("bahdanau")}) == 2


def test_aggregates_are_the_means_and_sds_of_the_seeds(seeded):
    results = seeded[2]
    for s in results["systems"].values():
        t = s["tests"][SPLIT]
        for metric in ("bleu", "chrf", "ter"):
            per_seed = [x["tests"][SPLIT][metric] for x in s["seeds"]]
            assert t[metric] == pytest.approx(statistics.fmean(per_seed))
            assert t[f"{metric}_sd"] == pytest.approx(statistics.stdev(per_seed))
            assert (t[f"{metric}_sd"] == 0) == (len(set(per_seed)) == 1)
        assert t["ci"] >= 0
        for row in t["by_length"]:
            assert row["bleu"] == pytest.approx(statistics.fmean(row["seeds"]))
        for p in s["curve"]:
            assert p["val_bleu_min"] <= p["val_bleu"] <= p["val_bleu_max"]
    assert results["systems"]["bahdanau"]["tests"][SPLIT]["chrf_sd"] > 0  # different runs


def test_identical_runs_have_no_spread(seeded):
    run = seeded[2]["systems"]["bahdanau"]["seeds"][0]
    agg = _aggregate([run, run], [SPLIT])
    for metric in ("bleu", "chrf", "ter"):
        assert agg["tests"][SPLIT][metric] == pytest.approx(run["tests"][SPLIT][metric])
        assert agg["tests"][SPLIT][f"{metric}_sd"] == 0
    assert all(p["val_bleu_min"] == p["val_bleu_max"] for p in agg["curve"])


def test_report_gives_mean_and_sd_beside_the_interval_and_a_band(seeded, tmp_path, monkeypatch):
    out, results = seeded[1], seeded[2]
    report = (out / "report.md").read_text()
    assert f"BLEU {SPLIT} (mean ± sd) | BLEU {SPLIT} 95% CI | chrF {SPLIT} (mean ± sd)" in report
    for name, s in results["systems"].items():
        t = s["tests"][SPLIT]
        row = next(x for x in report.splitlines() if x.startswith(f"| {name} | "))
        assert f"| {t['bleu']:.1f} ± {t['bleu_sd']:.1f} | ± {t['ci']:.1f} | " in row
    assert "paired bootstrap over sentences and seeds" in report and "shaded band" in report
    bs = results["tests"][SPLIT]["bootstrap"]
    assert bs["bahdanau"]["score"] == pytest.approx(results["systems"]["bahdanau"]["tests"][SPLIT]
                                                    ["bleu"])
    assert (out / "learning_curves.png").stat().st_size > 1000
    bands = []
    monkeypatch.setattr(Axes, "fill_between", lambda self, *a, **k: bands.append(a))
    plots.learning_curves(results["systems"], tmp_path / "curves.png")
    assert len(bands) == 2 * len(NAMES)  # one band per system in each of the two panels


def test_one_seed_keeps_the_one_run_layout(seeded, tmp_path):
    recipe, out = seeded[0], tmp_path / "out"
    shutil.copytree(seeded[1], out)
    stamp = mtimes(out, [*run_dirs("no-attention"), *run_dirs("bahdanau")])
    res = compare(recipe, out, "--seeds", 1)
    assert res.exit_code == 0, res.output
    assert stamp == mtimes(out, [*run_dirs("no-attention"), *run_dirs("bahdanau")])
    results = json.loads((out / "results.json").read_text())
    for name in NAMES:
        s = results["systems"][name]
        assert "seeds" not in s and "bleu_sd" not in s["tests"][SPLIT]
        assert s["tests"][SPLIT]["bleu"] == seeded[2]["systems"][name]["seeds"][0]["tests"][
            SPLIT]["bleu"]  # seed 0 is the system's own run, in its usual directory
    report = (out / "report.md").read_text()
    assert f"| BLEU {SPLIT} | chrF {SPLIT} |" in report and "± sd" not in report
    assert f"## Significance on {SPLIT} (paired bootstrap vs" in report


def test_a_killed_multi_seed_comparison_trains_only_the_missing_runs(seeded, tmp_path):
    recipe, out = seeded[0], tmp_path / "out"
    shutil.copytree(seeded[1], out)
    done = ["no-attention", "bahdanau"]
    stamp = mtimes(out, done), mtimes(out, done, f"{SPLIT}.hyp")
    # killed before its first checkpoint: trained afresh
    fresh = out / "systems" / "no-attention-seed1"
    for f in [*fresh.glob("*.pt"), *fresh.glob("*.hyp"), fresh / "done.json"]:
        f.unlink()
    # killed after its last checkpoint: resumed from last.pt, nothing trained again
    resumed = out / "systems" / "bahdanau-seed1"
    best = (resumed / "best.pt").stat().st_mtime_ns
    (resumed / "done.json").unlink()
    res = compare(recipe, out, "--seeds", 2)
    assert res.exit_code == 0, res.output
    assert stamp == (mtimes(out, done), mtimes(out, done, f"{SPLIT}.hyp"))
    assert (fresh / "done.json").is_file() and (fresh / f"{SPLIT}.hyp").is_file()
    assert (resumed / "done.json").is_file() and (resumed / "best.pt").stat().st_mtime_ns == best
    text = " ".join(res.output.split())
    assert "bahdanau-seed1: resuming" in text and "no-attention-seed1: training" in text
    results = json.loads((out / "results.json").read_text())
    assert all(len(s["seeds"]) == 2 for s in results["systems"].values())


@pytest.mark.parametrize("extra, message", [
    ("seeds: two\n", "seeds must be an integer"),
    ("seeds: 0\n", "seeds must be >= 1"),
])
def test_a_bad_seeds_field_fails_before_any_training(tmp_path, extra, message):
    recipe, out = tiny_comparison(tmp_path, extra), tmp_path / "out"
    res = compare(recipe, out)
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output
    assert not out.exists()


def test_a_system_may_not_take_the_directory_of_another_ones_seed(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("baseline: a\nseeds: 3\nsystems:\n  a: {}\n  a-seed2: {}\n")
    with pytest.raises(NMTError, match="'a-seed2' has the directory of 'a''s seed 2"):
        load_comparison(p)
    assert load_comparison(p, seeds=2).seeds == 2  # with two seeds there is no a-seed2 run


# ----------------------------------------------------------------------------- the statistics

WORDS = "a man dog rides red bike two play in the snow woman cooks is on".split()


def lines(n=120, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(n)]


def noisy(refs, p, seed):
    """refs with a share p of their words replaced at random: a system of known quality."""
    rng = random.Random(seed)
    return [" ".join(w if rng.random() > p else rng.choice(WORDS) for w in r.split())
            for r in refs]


def test_with_one_seed_the_tests_are_the_single_run_ones():
    refs = lines()
    base, sys = noisy(refs, 0.5, 1), noisy(refs, 0.4, 2)
    one = seed_bootstrap([base], {"x": [sys]}, [refs], baseline_name="b")["x"]
    koehn = paired_bootstrap(base, {"x": sys}, [refs], baseline_name="b")["x"]
    assert one["p_value"] == pytest.approx(koehn["p_value"])
    assert one["score"] == pytest.approx(koehn["score"])
    assert one["ci"] == pytest.approx(koehn["ci"], rel=1e-4)
    assert seed_interval([sys], refs)["ci"] == pytest.approx(bleu_interval(sys, refs)["ci"],
                                                             rel=1e-4)


def test_seed_to_seed_variation_widens_the_interval_and_weakens_the_test():
    refs = lines()
    base = [noisy(refs, 0.5, 1), noisy(refs, 0.5, 2)]
    steady = [noisy(refs, 0.35, 3), noisy(refs, 0.35, 4)]
    erratic = [noisy(refs, 0.05, 5), noisy(refs, 0.65, 6)]  # about the same mean BLEU
    rows = seed_bootstrap(base, {"steady": steady, "erratic": erratic, "same": base}, [refs],
                          baseline_name="b")
    assert rows["erratic"]["ci"] > 2 * rows["steady"]["ci"]
    assert rows["erratic"]["p_value"] > rows["steady"]["p_value"]
    assert rows["same"]["p_value"] == 1.0 and rows["b"]["p_value"] is None
    same = seed_interval([steady[0], steady[0]], refs)
    assert same["ci"] == pytest.approx(bleu_interval(steady[0], refs)["ci"], rel=1e-4)


def test_curve_band_merges_the_seeds_by_step():
    a = [{"step": 2, "wall": 1.0, "val_bleu": 1.0, "val_ppl": 9.0},
         {"step": 4, "wall": 2.0, "val_bleu": 3.0, "val_ppl": 7.0}]
    b = [{"step": 2, "wall": 3.0, "val_bleu": 2.0, "val_ppl": 8.0}]  # stopped early
    band = curve_band([a, b])
    assert band[0] == {"step": 2, "wall": 2.0, "val_bleu": 1.5, "val_ppl": 8.5,
                       "val_bleu_min": 1.0, "val_bleu_max": 2.0, "seeds": 2}
    assert band[1]["seeds"] == 1 and band[1]["val_bleu"] == band[1]["val_bleu_max"] == 3.0
