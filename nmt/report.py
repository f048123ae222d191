"""The comparison report: `report.md` with one table, significance, figures and examples, each
section written by its own function (with several seeds: means ± sd and bands over the seeds).

It only formats and draws: every number and example it shows comes from the results stage
(compare.collect: results.json, and attention.json for the heatmaps' weights), so a report can be
written again from those files without any checkpoint."""
from __future__ import annotations

import json
import typing
from pathlib import Path

import torch

from nmt import layout, plots, report_html
from nmt.data import Corpus
from nmt.evaluation import BOOTSTRAP_SAMPLES

if typing.TYPE_CHECKING:  # a type only: the compare package imports this module
    from nmt.compare.recipe import Comparison


def _fmt(x, digits=1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _pm(mean, sd, digits=1) -> str:
    """mean ± sd, or the mean alone when there is no spread to give."""
    return _fmt(mean, digits) if sd is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def write(cmp: Comparison, out: Path, results: dict, tests: dict[str, Corpus]) -> None:
    """report.md (and its figures, and report.html) in `out`: the systems' table, significance
    against the baseline per test set, learning curves, BLEU by length, attention and examples,
    from `results` (compare.collect's) and the attention maps it wrote beside it; `tests` gives
    the examples' source and reference lines."""
    systems = results["systems"]
    lines = [f"# {cmp.name}", ""]
    if not systems:
        lines.append("No system has finished training yet.")
    else:
        splits = list(tests)
        lines += _table(systems, splits, results.get("seeds", 1))
        lines += _notes(systems, results)
        for split in splits:
            lines += _significance(results, split, cmp.baseline)
        lines += _figures(systems, splits, out, results.get("seeds", 1),
                          results.get("eval", {}).get("length_unit", "words"))
        examples, attention = results["examples"], results["attention"]
        split, corpus = examples["split"], tests[examples["split"]]
        picks = examples["lines"]
        # system -> line -> its translation, for the systems that have the split's scores
        hyps = {name: dict(zip(picks, texts)) for name, texts in examples["translations"].items()}
        maps = json.loads((out / attention["maps"]).read_text(encoding="utf-8"))["systems"]
        views: dict = {}  # (system, line) -> the attention drawn, for report.html
        lines += _attention(systems, split, attention, maps, out, views)
        lines += _translations(systems, split, corpus, picks[:cmp.examples], hyps)
        report_html.write(layout.ComparisonDir(out).report_html, cmp.name, split, corpus, picks,
                          hyps, views)
        lines += ["", "The same examples with every system's attention to hover over: "
                      f"[{layout.REPORT_HTML}]({layout.REPORT_HTML})."]
    layout.ComparisonDir(out).report.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _table(systems: dict, splits: list[str], seeds: int) -> list[str]:
    """One row per system: size, scores per test set, validation perplexity, speed, device.
    With several seeds a score is the mean ± standard deviation over the seeds, and the 95%
    bootstrap interval of the mean stands beside the BLEU."""
    if seeds == 1:
        scores = [f"{m} {s}" for s in splits for m in ("BLEU", "chrF")]
    else:
        scores = [h for s in splits for h in (f"BLEU {s} (mean ± sd)", f"BLEU {s} 95% CI",
                                              f"chrF {s} (mean ± sd)")]
    head = ["system", "params"] + scores + \
        ["val ppl", "train time", "train tok/s", "decode sent/s", "device"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in systems.items():
        sm = s["summary"]
        row = [name, f"{sm.get('params', 0) / 1e6:.1f}M"]
        for split in splits:
            t = s["tests"].get(split, {})
            if seeds == 1:
                row += [_fmt(t.get("bleu")), _fmt(t.get("chrf"))]
            else:
                row += [_pm(t.get("bleu"), t.get("bleu_sd")),
                        "–" if t.get("ci") is None else f"± {t['ci']:.1f}",
                        _pm(t.get("chrf"), t.get("chrf_sd"))]
        dec = next(iter(s["tests"].values()), {}).get("decode", {})
        row += [_fmt(s.get("val_ppl"), 2), f"{sm.get('train_time', 0) / 60:.1f} min",
                f"{sm.get('tokens_per_s', 0):,.0f}", _fmt(dec.get("sent_per_s")),
                str(sm.get("device", dec.get("device", "?")))]
        lines.append("| " + " | ".join(row) + " |")
    if seeds > 1:
        lines += ["", f"Every system trained {seeds} times, with train.seed + k (k = 0..{seeds - 1}"
                      f"); times and speeds are means over the runs. mean ± sd: over the "
                      f"{seeds} runs, sd the sample standard deviation (n - 1). 95% CI: the "
                      f"half-width of the bootstrap interval of the mean, with sentences and "
                      f"seeds resampled."]
    return lines


def _notes(systems: dict, results: dict) -> list[str]:
    """What each decoder does, what was left out and why, the sacreBLEU signatures."""
    lines = ["", "What each decoder does with the source (the differences that *are* the method; "
             "everything else is shared as far as the recipes allow):", ""]
    lines += [f"- **{name}** ({s['summary'].get('params', 0) / 1e6:.2f}M parameters): "
              f"{s.get('design', '')}" for name, s in systems.items()]
    for what, why in results.get("left_out", {}).items():
        lines += ["", f"Left out: `{what}` ({why}); run `nmt compare` with `--only` on it (and "
                      f"`--retrain` for a changed recipe) to include it."]
    ev = results.get("eval")
    if ev:
        lines += ["", f"Scored with sacreBLEU's `{ev['tokenize']}` tokenizer for BLEU "
                      f"(eval.tokenize{', lower-cased' if ev['lowercase'] else ', cased'}: "
                      f"validation, test scores, significance and BLEU by length alike); "
                      f"BLEU by length buckets the source by its length in {ev['length_unit']}."]
    sig = next((t["signatures"] for s in systems.values() for t in s["tests"].values()), None)
    if sig:
        lines += ["", "sacreBLEU signatures: " + "; ".join(f"`{v}`" for v in sig.values())]
    val = next((s["val_signature"] for s in systems.values() if s.get("val_signature")), None)
    if val:
        lines += ["", f"Validation BLEU signature: `{val}`"]
    return lines


def _significance(results: dict, split: str, baseline: str) -> list[str]:
    """Every system against the baseline on one test set: difference, p-value and which way."""
    info = results["tests"].get(split, {})
    bs = info.get("bootstrap")
    if not bs:
        return []
    test = info.get("test", "paired bootstrap")
    lines = ["", f"## Significance on {split} ({test} vs `{baseline}`)", ""]
    if results.get("seeds", 1) > 1:
        lines += [f"Each of {BOOTSTRAP_SAMPLES:,} replicates draws the test sentences and, for "
                  f"every system, its seeds, with replacement, and takes delta_r = mean "
                  f"BLEU(system seeds drawn) - mean BLEU(baseline seeds drawn) on the drawn "
                  f"sentences; p = (1 + #{{r : |delta_r| - mean |delta_r| > |delta|}}) / "
                  f"{BOOTSTRAP_SAMPLES + 1}, delta the observed difference of the means. "
                  f"Test-set sampling and seed-to-seed variation both count.", ""]
    chrf = all("chrf" in row for row in bs.values())  # the one-seed test has chrF's too
    lines += ["| system | BLEU (mean ± 95% CI) | vs baseline | p-value | "
              + ("chrF (mean ± 95% CI) | chrF p-value | " if chrf else "")
              + "BLEU verdict at 0.05 |",
              "|---|---|---|---|---|" + ("---|---|" if chrf else "")]
    base = bs[baseline]["score"]
    for name, row in bs.items():
        p = row.get("p_value")
        delta = "baseline" if p is None else f"{row['score'] - base:+.2f} BLEU"
        c = row.get("chrf", {})
        lines.append(f"| {name} | {row['mean']:.1f} ± {row['ci']:.1f} | {delta} | "
                     f"{_fmt(p, 4)} | " +
                     (f"{c['mean']:.1f} ± {c['ci']:.1f} | {_fmt(c['p_value'], 4)} | "
                      if chrf else "") + f"{verdict(row['score'] - base, p)} |")
    return lines


def _figures(systems: dict, splits: list[str], out: Path, seeds: int,
             unit: str = "words") -> list[str]:
    """Learning curves (with their band over seeds) and BLEU by source length (in `unit`) per
    test set."""
    plots.learning_curves(systems, out / layout.LEARNING_CURVES)
    lines = ["", "## Learning curves", ""]
    if seeds > 1:
        lines += [f"Lines: the mean validation BLEU over the {seeds} seeds; shaded band: their "
                  f"lowest to highest.", ""]
    lines.append(f"![learning curves]({layout.LEARNING_CURVES})")
    for split in splits:
        name = layout.length_figure(split)
        plots.bleu_by_length(systems, split, out / name, unit)
        lines += ["", f"## BLEU by source length: {split}", ""] + \
            _length_table(systems, split, unit) + \
            ["", f"![BLEU by length]({name})"]
    return lines


def _attention(systems: dict, split: str, attention: dict, maps: dict, out: Path,
               views: dict | None = None) -> list[str]:
    """Where each RNN's attention goes (results' `attention`, focus.py: a collapse shows at a
    glance), then heatmaps of the picked test sentences (`maps`: the results stage's
    attention.json) for every system with attention (its first run). `views` receives (system,
    line) -> (source pieces, output pieces, maps) of each picked sentence."""
    figures, focus = [], []
    for name in systems:
        f = attention["focus"].get(name)
        if f is not None:
            focus.append(f"| {name} | {f['sharpness']:.2f} | {f['on_eos']:.0%} | "
                         f"{f['on_first']:.0%} | {f['entropy']:.2f} |")
        for k, sentence in enumerate(maps.get(name, [])):
            i, src_p, out_p = sentence["line"], sentence["source"], sentence["output"]
            weights = {m: torch.tensor(w, dtype=torch.float32)  # (T, S), as computed
                       for m, w in sentence["maps"].items()}
            if views is not None:
                views[(name, i)] = (src_p, out_p, weights)
            if not weights:
                continue
            fig = layout.attention_figure(name, k + 1)
            plots.heatmaps(weights, src_p, out_p, out / fig,
                           title=f"{name}: {split} line {i + 1}")
            figures.append(f"![{name} attention, {split} line {i + 1}]({fig})")
    if focus:
        focus = [f"Where each RNN's attention goes, teacher-forced on the first "
                 f"{attention['pairs']:,} references of {split}: sharpness is the mean largest "
                 f"weight (1/S uniform, 1 one-hot), on EOS and on first word the share of target "
                 f"tokens whose largest weight is there, entropy normalised by log S (1 uniform, "
                 f"0 one-hot). A collapsed attention, which reads one fixed position like an "
                 f"attention-free model, shows sharpness near 1 with on EOS or on first word "
                 f"near 100%.", "", "| system | sharpness | on EOS | on first word | entropy |",
                 "|---|---|---|---|---|", *focus, ""]
    return ["", "## Attention", "", *focus] + (
        figures or ["No attention system in this comparison."])


def _translations(systems: dict, split: str, corpus: Corpus, picks: list[int],
                  hyps: dict[str, dict[int, str]]) -> list[str]:
    """The picked test sentences: source, reference, and every system's output (its first
    run's; `hyps`: system -> line -> translation)."""
    lines = ["", f"## Example translations ({split})", ""]
    for i in picks:
        lines += [f"**source (line {i + 1})**: {corpus.src[i]}  ",
                  f"**reference**: {corpus.tgt[i]}  "]
        for name in systems:
            if name in hyps:  # else left out: decoded for other settings
                lines.append(f"**{name}**: {hyps[name][i]}  ")
        lines.append("")
    return lines


def _length_table(systems: dict, split: str, unit: str = "words") -> list[str]:
    """BLEU ± 95% bootstrap interval per source-length bucket, with each bucket's size."""
    first = next((s["tests"][split]["by_length"] for s in systems.values()
                  if s["tests"].get(split, {}).get("by_length")), [])
    if not first:
        return []
    head = ["system"] + [f"{r['bucket']} {unit} (n={r['n']})" for r in first]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in systems.items():
        rows = s["tests"].get(split, {}).get("by_length", [])
        lines.append("| " + " | ".join([name] + [f"{r['bleu']:.1f} ± {r.get('ci', 0):.1f}"
                                                 for r in rows]) + " |")
    return lines


def verdict(delta: float, p: float | None, level: float = 0.05) -> str:
    """The significance column: which way a system differs from the baseline, if it does."""
    if p is None:
        return "–"
    if p >= level:
        return "no significant difference"
    return "significantly better" if delta > 0 else "significantly worse"
