"""The smoke comparison end to end: every system type trains, decodes, scores and is reported."""
import json

import pytest

from typer.testing import CliRunner

from cli import app
from nmt.compare import length_buckets, load_comparison

# Shrunk further than recipes/smoke.yaml itself so the suite stays fast; the stages are the same.
FAST = ["train.max_epochs=1", "data.max_train_pairs=600", "data.max_valid_pairs=40",
        "data.max_test_pairs=60", "tokenizer.vocab_size=300"]


def test_smoke_comparison_writes_full_report(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("NMT_DATA_DIR", str(data_dir))
    out = tmp_path / "smoke"
    args = ["compare", "recipes/smoke.yaml", "--out", str(out), "--quiet"]
    for s in FAST:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    systems = list(load_comparison("recipes/smoke.yaml").recipes)
    results = json.loads((out / "results.json").read_text())
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

    # A re-run after everything finished trains nothing again and keeps the same results.
    stamp = {n: (out / "systems" / n / "best.pt").stat().st_mtime_ns for n in systems}
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert stamp == {n: (out / "systems" / n / "best.pt").stat().st_mtime_ns for n in systems}
    assert json.loads((out / "results.json").read_text())["systems"].keys() == \
        results["systems"].keys()

    # A system killed before its first checkpoint (a log, no last.pt) is trained afresh; the
    # others are still skipped.
    killed = out / "systems" / "no-attention"
    for f in [*killed.glob("*.pt"), *killed.glob("*.hyp"), killed / "done.json"]:
        f.unlink()
    assert (killed / "train.log").is_file()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (killed / "done.json").is_file() and (killed / "test_2016_flickr.hyp").is_file()
    assert all(stamp[n] == (out / "systems" / n / "best.pt").stat().st_mtime_ns
               for n in systems if n != "no-attention")

    # `nmt attention` draws one sentence from a finished run.
    png = tmp_path / "a.png"
    res = CliRunner().invoke(app, ["attention", "--checkpoint", str(out / "systems" / "bahdanau"),
                                   "--text", "Ein Mann fährt Fahrrad.", "-o", str(png)])
    assert res.exit_code == 0, res.output
    assert png.stat().st_size > 1000
    res = CliRunner().invoke(app, ["attention", "--checkpoint",
                                   str(out / "systems" / "no-attention"), "--text", "Ein Mann."])
    assert res.exit_code == 2 and "no attention" in res.output


def test_systems_must_share_data_and_tokenizer(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("systems:\n  a: {set: {model: {arch: rnn, attention: none}}}\n"
                 "  b: {set: {tokenizer: {vocab_size: 500}}}\nbaseline: a\n")
    import pytest

    from nmt.errors import NMTError
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
    import random

    from nmt.compare import quantile_edges

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
    from nmt.evaluation import bleu_interval, score

    hyps = ["a man rides a red bike .", "two dogs play in the snow .", "a woman is cooking ."]
    refs = ["a man is riding a red bike .", "two dogs are playing in snow .", "a woman cooks ."]
    small, large = bleu_interval(hyps * 10, refs * 10), bleu_interval(hyps * 100, refs * 100)
    assert small["bleu"] == pytest.approx(score(hyps, [refs])["bleu"], abs=1e-6)
    assert 0 < large["ci"] < small["ci"]
