"""The comparison report: `report.md` with one table, significance, figures and examples."""
from __future__ import annotations

from pathlib import Path

from nmt import plots
from nmt.checkpoint import load_for_inference
from nmt.data import read_lines


def _fmt(x, digits=1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def write(cmp, out: Path, results: dict, tests: dict, tok) -> None:
    systems = results["systems"]
    splits = list(tests)
    lines = [f"# {cmp.name}", ""]
    if not systems:
        lines.append("No system has finished training yet.")
        (out / "report.md").write_text("\n".join(lines) + "\n")
        return

    # --- the table
    head = ["system", "params"] + [f"{m} {s}" for s in splits for m in ("BLEU", "chrF")] + \
        ["val ppl", "train time", "train tok/s", "decode sent/s", "device"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in systems.items():
        sm = s["summary"]
        row = [name, f"{sm.get('params', 0) / 1e6:.1f}M"]
        for split in splits:
            t = s["tests"].get(split, {})
            row += [_fmt(t.get("bleu")), _fmt(t.get("chrf"))]
        dec = next(iter(s["tests"].values()), {}).get("decode", {})
        row += [_fmt(s.get("val_ppl"), 2), f"{sm.get('train_time', 0) / 60:.1f} min",
                f"{sm.get('tokens_per_s', 0):,.0f}", _fmt(dec.get("sent_per_s")),
                str(sm.get("device", dec.get("device", "?")))]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "What each decoder does with the source (the differences that *are* the method; "
              "everything else is shared as far as the recipes allow):", ""]
    lines += [f"- **{name}** ({s['summary'].get('params', 0) / 1e6:.2f}M parameters): "
              f"{s.get('design', '')}" for name, s in systems.items()]
    for what, why in results.get("left_out", {}).items():
        lines += ["", f"Left out: `{what}` ({why}); run `nmt compare` with `--only` on it (and "
                      f"`--retrain` for a changed recipe) to include it."]
    sig = next((t["signatures"] for s in systems.values() for t in s["tests"].values()), None)
    if sig:
        lines += ["", "sacreBLEU signatures: " + "; ".join(f"`{v}`" for v in sig.values())]

    # --- significance against the no-attention baseline
    for split in splits:
        bs = results["tests"].get(split, {}).get("bootstrap")
        if not bs:
            continue
        lines += ["", f"## Significance on {split} (paired bootstrap vs `{cmp.baseline}`)", "",
                  "| system | BLEU (mean ± 95% CI) | vs baseline | p-value | verdict at 0.05 |",
                  "|---|---|---|---|---|"]
        base = bs[cmp.baseline]["score"]
        for name, row in bs.items():
            p = row.get("p_value")
            delta = "baseline" if p is None else f"{row['score'] - base:+.2f} BLEU"
            lines.append(f"| {name} | {row['mean']:.1f} ± {row['ci']:.1f} | {delta} | "
                         f"{_fmt(p, 4)} | {verdict(row['score'] - base, p)} |")

    # --- figures
    plots.learning_curves(systems, out / "learning_curves.png")
    lines += ["", "## Learning curves", "", "![learning curves](learning_curves.png)"]
    for split in splits:
        name = f"bleu_by_length_{split}.png"
        plots.bleu_by_length(systems, split, out / name)
        lines += ["", f"## BLEU by source length: {split}", ""] + _length_table(systems, split) + \
            ["", f"![BLEU by length]({name})"]

    # --- attention pictures and examples from the first test set
    split = splits[0]
    corpus = tests[split]
    picks = _examples(corpus.src, max(cmp.examples, cmp.heatmaps))
    lines += ["", "## Attention", ""]
    drew = False
    for name in systems:
        run_dir = out / "systems" / name
        model, stok, _ = load_for_inference(run_dir, "cpu")
        for k, i in enumerate(picks[:cmp.heatmaps]):
            src_p, out_p, maps, _ = plots.sentence_attention(model, stok, corpus.src[i])
            if not maps:
                continue
            fig = f"attention_{name}_{k + 1}.png"
            plots.heatmaps(maps, src_p, out_p, out / fig, title=f"{name}: {split} line {i + 1}")
            lines.append(f"![{name} attention, {split} line {i + 1}]({fig})")
            drew = True
    if not drew:
        lines.append("No attention system in this comparison.")

    lines += ["", f"## Example translations ({split})", ""]
    for i in picks[:cmp.examples]:
        lines += [f"**source (line {i + 1})**: {corpus.src[i]}  ",
                  f"**reference**: {corpus.tgt[i]}  "]
        for name in systems:
            if split in systems[name]["tests"]:  # else left out: decoded for other settings
                hyp = read_lines(out / "systems" / name / f"{split}.hyp")
                lines.append(f"**{name}**: {hyp[i]}  ")
        lines.append("")
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _length_table(systems: dict, split: str) -> list[str]:
    """BLEU ± 95% bootstrap interval per source-length bucket, with each bucket's size."""
    first = next((s["tests"][split]["by_length"] for s in systems.values()
                  if s["tests"].get(split, {}).get("by_length")), [])
    if not first:
        return []
    head = ["system"] + [f"{r['bucket']} words (n={r['n']})" for r in first]
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


def _examples(src: list[str], n: int) -> list[int]:
    """Spread picks over the length range so short and long sentences both show up."""
    order = sorted(range(len(src)), key=lambda i: (len(src[i].split()), i))
    if n <= 0 or not order:
        return []
    step = max(1, len(order) // n)
    return sorted({order[min(len(order) - 1, step // 2 + k * step)] for k in range(n)})
