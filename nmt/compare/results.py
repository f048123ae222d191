"""A comparison's results as plain data: everything the report shows, in results.json (and the
attention heatmaps' weights in attention.json).

Per finished system: its scores on every test set (BLEU, chrF, TER), BLEU by source length, the
learning curve (a band over seeds) and where its attention goes; per test set the significance
tests against the baseline; the report's example lines with every system's translation. All of
it is computed here from the run directories (hypothesis files, metrics, checkpoints), so that
report.py only formats and draws. The test sets are scored afresh from the hypothesis files on
every run: a change of eval.tokenize re-scores them without decoding again. With N seeds a
system's numbers are means over its runs, with standard deviations, and its significance test
resamples both sentences and seeds (evaluation.seed_bootstrap).
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from nmt import layout, plots
from nmt.checkpoint import load_for_inference
from nmt.compare.recipe import Comparison, SeedRun, seed_runs
from nmt.compare.stale import decode_key, fresh_hyp, stale_system
from nmt.data import Corpus, read_lines
from nmt.evaluation import (bleu_interval, length_unit, paired_bootstrap, score, scoring,
                            seed_bootstrap, seed_interval, sentence_length)
from nmt.focus import attention_focus
from nmt.registry import design as model_design

console = Console(stderr=True)
# training summary fields given as the mean over a system's seeds (the others are its first run's)
MEAN_OVER_SEEDS = ("best_bleu", "steps", "epochs", "time", "train_time", "tokens_per_s")
FOCUS_PAIRS = 500  # test pairs the attention numbers are computed on (~1 s per system)
def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / layout.METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def quantile_edges(src: list[str], bins: int, unit: str = "words") -> list[int]:
    """Source-length edges (in `unit`: evaluation.length_unit) that split `src` into `bins`
    buckets of about equal size.

    Multi30k captions are short: fixed edges leave a handful of sentences in the top buckets,
    whose BLEU then swings by many points. Equal-count buckets hold ~len/bins sentences each
    (ties at an edge make them somewhat uneven); an edge that would repeat is dropped."""
    lengths = sorted(sentence_length(s, unit) for s in src)
    edges: list[int] = []
    for k in range(1, bins):
        e = lengths[round(k * len(lengths) / bins)] if lengths else 0
        if e > (edges[-1] if edges else lengths[0]):
            edges.append(e)
    return edges


def length_buckets(src: list[str], edges: list[int],
                   unit: str = "words") -> list[tuple[str, list[int]]]:
    """Group sentence indices by source length in `unit` (evaluation.length_unit): [<e0,
    e0-e1, ..., >=eN]."""
    bounds = [0, *edges, math.inf]
    out = []
    for lo, hi in zip(bounds, bounds[1:]):
        label = f"<{hi}" if lo == 0 else f"{lo}+" if hi == math.inf else \
            f"{lo}" if hi == lo + 1 else f"{lo}-{hi - 1}"
        idx = [i for i, s in enumerate(src) if lo <= sentence_length(s, unit) < hi]
        if idx:
            out.append((label, idx))
    return out


def design(r) -> str:
    """What a system's decoder does with the source: the part that differs *because it is the
    method* (the report prints it beside the parameter counts); its family's or attention
    kind's line in registry.py."""
    return model_design(r.model)


def collect(cmp: Comparison, out: Path, tests: dict[str, Corpus]) -> dict:
    """Everything the report shows, as plain data (results.json). With one seed a system's
    entry is its run's; with several, the same keys hold the aggregate over the seeds (means,
    *_sd the sample standard deviations, the learning curve with its band) and `seeds` lists
    each run's own numbers. `examples` and `attention` are the first test set's picked lines
    with every system's translation (its first run's), and where each attention goes; the
    weights of the heatmaps the report draws are written to layout.ATTENTION_MAPS (_attention)."""
    first = next(iter(cmp.recipes.values()))
    tokenize, lowercase = scoring(first)  # shared by every system (SHARED)
    unit = length_unit(first.data.src_lang)
    # how every BLEU and chrF below was scored; the signatures say it too
    ev = {"tokenize": tokenize, "lowercase": lowercase, "length_unit": unit}
    results: dict = {"name": cmp.name, "baseline": cmp.baseline, "seeds": cmp.seeds,
                     "eval": ev, "systems": {}, "tests": {}, "left_out": {}}
    hyps: dict[str, dict[str, list[list[str]]]] = {}  # split -> system -> hypotheses per seed
    for name in cmp.recipes:
        runs = [_run_result(sr, out, tests, results["left_out"], ev) for sr in seed_runs(cmp, name)]
        finished = [x for x in runs if x is not None]
        if len(finished) < len(runs):  # a system is scored once every seed of it is
            if finished:
                results["left_out"][name] = f"{len(finished)} of {len(runs)} seeds finished"
            continue
        splits = [split for split in tests if all(split in x["hyps"] for x in runs)]
        for split in splits:
            hyps.setdefault(split, {})[name] = [x["hyps"][split] for x in runs]
        edges = {split: cmp.length_buckets or quantile_edges(tests[split].src, cmp.length_bins,
                                                             unit) for split in splits}
        if len(runs) == 1:
            sys = runs[0]["result"]
            for split in splits:
                sys["tests"][split]["by_length"] = _by_length(
                    [runs[0]["hyps"][split]], tests[split], edges[split], ev)
        else:
            sys = _aggregate([x["result"] for x in runs], splits)
            for split in splits:
                runs_hyps = [x["hyps"][split] for x in runs]
                interval = seed_interval(runs_hyps, tests[split].tgt, tokenize, lowercase)
                sys["tests"][split]["ci"] = interval["ci"]
                sys["tests"][split]["by_length"] = _by_length(runs_hyps, tests[split],
                                                              edges[split], ev)
        results["systems"][name] = sys
    for split, by_sys in hyps.items():
        info: dict = {"n": len(tests[split].src)}
        if cmp.baseline in by_sys and len(by_sys) > 1:
            others = {n: h for n, h in by_sys.items() if n != cmp.baseline}
            refs = [tests[split].tgt]
            if cmp.seeds == 1:
                info["bootstrap"] = paired_bootstrap(by_sys[cmp.baseline][0],
                                                     {n: h[0] for n, h in others.items()},
                                                     refs, baseline_name=cmp.baseline,
                                                     tokenize=tokenize, lowercase=lowercase)
            else:
                info["bootstrap"] = seed_bootstrap(by_sys[cmp.baseline], others, refs,
                                                   baseline_name=cmp.baseline,
                                                   tokenize=tokenize, lowercase=lowercase)
            info["test"] = "paired bootstrap" if cmp.seeds == 1 else \
                "paired bootstrap over sentences and seeds"
        results["tests"][split] = info
    if results["systems"]:  # the examples and attention the report shows, on the first test set
        split = next(iter(tests))
        lines = example_lines(tests[split].src, max(cmp.examples, cmp.heatmaps))
        results["examples"] = {"split": split, "lines": lines, "translations": {
            name: [seeds[0][i] for i in lines] for name, seeds in hyps.get(split, {}).items()}}
        results["attention"], maps = _attention(results["systems"], out, split, tests[split],
                                                lines[:cmp.heatmaps])
        layout.ComparisonDir(out).attention_maps.write_text(
            json.dumps(maps, ensure_ascii=False), encoding="utf-8")
    return results


def _run_result(sr: SeedRun, out: Path, tests: dict, left_out: dict,
                ev: dict) -> dict | None:
    """One finished run's numbers: {"result": its results.json entry (no BLEU by length yet),
    "hyps": {split: hypotheses}}; None while it is not finished, or when it was trained for
    another recipe (then noted in left_out, as is a test set decoded for other settings). The
    test sets are scored now, with the scoring `ev` (collect's) asks for, from the hypothesis
    files: a change of eval.tokenize re-scores them without decoding again."""
    r, run_dir = sr.recipe, layout.ComparisonDir(out).system(sr.dir)
    done = run_dir / layout.DONE
    if not done.is_file():
        return None
    why = stale_system(run_dir, r, layout.ComparisonDir(out).tokenizer)
    if why:  # trained for another recipe (possible with --only): never scored as this one
        left_out[sr.dir] = why
        console.print(f"[yellow]warning:[/] system {sr.dir} left out of the report: it was "
                      f"trained for another recipe ({escape(why)}); run it (--only "
                      f"{sr.system}, with --retrain) to include it")
        return None
    summary = json.loads(done.read_text())
    valid = [m for m in _metrics(run_dir) if m.get("kind") == "valid"]
    best = max(valid, key=lambda m: m.get("val_bleu", -1), default={})
    result = {"arch": r.model.arch, "attention": r.model.attention if r.model.arch == "rnn"
              else "multi-head self + cross", "design": design(r), "summary": summary,
              "val_ppl": best.get("val_ppl"), "val_bleu": best.get("val_bleu"),
              "val_chrf": best.get("val_chrf"), "val_signature": best.get("bleu_signature"),
              "curve": [{k: m.get(k) for k in ("step", "wall", "val_bleu", "val_chrf",
                                                "val_ppl")}
                        for m in valid], "tests": {}}
    hyps = {}
    for split, corpus in tests.items():
        hyp_path = layout.hypotheses(run_dir, split)
        if not fresh_hyp(hyp_path, decode_key(r, corpus.src)):
            if hyp_path.is_file():
                left_out[f"{sr.dir}/{split}"] = "decoded for other settings"
                console.print(f"[yellow]warning:[/] system {sr.dir}: {escape(hyp_path.name)} was "
                              f"decoded from other source lines or with other decoding "
                              f"settings; left out of {split}'s scores; run --only {sr.system} "
                              f"to decode it again")
            continue
        hyps[split] = read_lines(hyp_path)
        result["tests"][split] = score(hyps[split], [corpus.tgt], ev["tokenize"],
                                       ev["lowercase"])
        result["tests"][split]["decode"] = json.loads(
            layout.decoding_record(hyp_path).read_text())
    return {"result": result, "hyps": hyps}


def _by_length(runs: list[list[str]], corpus, edges: list[int], ev: dict) -> list[dict]:
    """BLEU per source-length bucket with its 95% bootstrap interval (of the mean over seeds,
    and the seeds' standard deviation, when there are several), scored and measured as `ev`
    (collect's) says: the buckets by source length in ev["length_unit"], BLEU with
    ev["tokenize"] (and chrF, with one seed)."""
    rows = []
    for label, idx in length_buckets(corpus.src, edges, ev["length_unit"]):
        refs = [corpus.tgt[i] for i in idx]
        bucket = [[hyps[i] for i in idx] for hyps in runs]
        row = {"bucket": label, "n": len(idx)}
        if len(runs) == 1:
            row.update(bleu_interval(bucket[0], refs, ev["tokenize"], ev["lowercase"]))
        else:
            row.update(seed_interval(bucket, refs, ev["tokenize"], ev["lowercase"]))
            row["sd"] = statistics.stdev(row["seeds"])
        rows.append(row)
    return rows


def _aggregate(runs: list[dict], splits: list[str]) -> dict:
    """A system's entry from its seeds' entries: the seeds' means under the same keys, with
    KEY_sd (sample standard deviation, n - 1 in the denominator) for the test scores and best
    validation BLEU, the learning curves merged (curve_band), and each run under `seeds`."""
    first = runs[0]
    summary = {k: v for k, v in first["summary"].items() if k not in ("run_dir", "seed")}
    for key in MEAN_OVER_SEEDS:
        if key in summary:
            summary[key] = statistics.fmean(x["summary"].get(key) or 0 for x in runs)
    agg = {k: first[k] for k in ("arch", "attention", "design")}
    agg.update(summary=summary, val_ppl=_mean_sd(runs, "val_ppl")[0],
               curve=curve_band([x["curve"] for x in runs]), tests={})
    agg["val_bleu"], agg["val_bleu_sd"] = _mean_sd(runs, "val_bleu")
    agg["val_chrf"] = _mean_sd(runs, "val_chrf")[0]
    for split in splits:
        per_seed = [x["tests"][split] for x in runs]
        t = agg["tests"][split] = {"signatures": per_seed[0]["signatures"]}
        for metric in ("bleu", "chrf", "ter"):
            t[metric], t[f"{metric}_sd"] = _mean_sd(per_seed, metric)
        t["decode"] = dict(per_seed[0]["decode"],
                           sent_per_s=statistics.fmean(p["decode"]["sent_per_s"]
                                                       for p in per_seed))
    agg["seeds"] = runs
    return agg


def _mean_sd(rows: list[dict], key: str) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of rows[*][key] (None when a row lacks it)."""
    values = [r.get(key) for r in rows]
    if any(v is None for v in values):
        return None, None
    return statistics.fmean(values), statistics.stdev(values)


def curve_band(curves: list[list[dict]]) -> list[dict]:
    """Learning curves of several seeds as one: at every step where any seed validated, the
    mean of val_bleu, val_ppl and wall time over the seeds that did (`seeds`: how many), and
    val_bleu_min / val_bleu_max, the band the figure shades."""
    by_step: dict[int, list[dict]] = {}
    for curve in curves:
        for p in curve:
            if p.get("val_bleu") is not None:
                by_step.setdefault(p["step"], []).append(p)
    band = []
    for step, pts in sorted(by_step.items()):
        bleu = [p["val_bleu"] for p in pts]
        ppl = [p["val_ppl"] for p in pts if p.get("val_ppl") is not None]
        band.append({"step": step, "wall": statistics.fmean(p["wall"] for p in pts),
                     "val_bleu": statistics.fmean(bleu), "val_ppl":
                     statistics.fmean(ppl) if ppl else None, "val_bleu_min": min(bleu),
                     "val_bleu_max": max(bleu), "seeds": len(pts)})
    return band


def example_lines(src: list[str], n: int) -> list[int]:
    """n test lines for the report's examples and heatmaps, spread over the length range so
    that short and long sentences both show up."""
    order = sorted(range(len(src)), key=lambda i: (len(src[i].split()), i))
    if n <= 0 or not order:
        return []
    step = max(1, len(order) // n)
    return sorted({order[min(len(order) - 1, step // 2 + k * step)] for k in range(n)})


def _attention(systems: dict, out: Path, split: str, corpus: Corpus,
               lines: list[int]) -> tuple[dict, dict]:
    """Where each system's attention goes (focus.py, teacher-forced on the first FOCUS_PAIRS
    pairs of `split`; only models with one attention map have numbers) and the attention of
    each of `lines`, greedy-translated (plots.sentence_attention), from the first run's best.pt.

    Returns results.json's `attention` and attention.json (layout.ATTENTION_MAPS): every system,
    per line its source and output pieces and its maps ({name: (T, S) weights, rows the
    output}; none for a model without attention), the float32 weights kept exactly."""
    focus, sentences = {}, {}
    for name in systems:
        model, stok, _ = load_for_inference(layout.ComparisonDir(out).system(name), "cpu")
        pairs = list(zip(stok.encode_src(corpus.src[:FOCUS_PAIRS]),
                         stok.encode_tgt(corpus.tgt[:FOCUS_PAIRS])))
        f = attention_focus(model, pairs, 4096, "cpu")
        if f is not None:
            focus[name] = f
        sentences[name] = []
        for i in lines:
            src_p, out_p, maps, _ = plots.sentence_attention(model, stok, corpus.src[i])
            sentences[name].append({"line": i, "source": src_p, "output": out_p, "maps": {
                k: m[:len(out_p), :len(src_p)].float().tolist() for k, m in maps.items()}})
    summary = {"split": split, "pairs": min(len(corpus.src), FOCUS_PAIRS), "focus": focus,
               "maps": layout.ATTENTION_MAPS}
    return summary, {"split": split, "systems": sentences}
