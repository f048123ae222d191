"""Time to quality: wall minutes of training (validation included, as a user waits for it) until
each system's validation BLEU first reaches fixed levels, read from a comparison's results.json.

    .venv/bin/python bench/time_to_quality.py runs/time-cpu/results.json [--levels NAME=a,b,c]
    .venv/bin/python bench/time_to_quality.py runs/lever-*/results.json   # levers side by side

Levels per kind of system (override with --levels NAME=a,b,c): the Transformer 30/35/38/40, an
attention RNN 25/30/35, the attention-free RNN 15/20. A level never reached says so; the best
validation BLEU is beside it. Also per system: its updates, the share of its wall time spent
validating (greedy decoding of the validation set), the validation BLEU of the mean of its last
K periodic checkpoints (train.average_last, if the run averaged) beside its best, and its test
BLEU. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

LEVELS = {"transformer": [30, 35, 38, 40], "attention": [25, 30, 35], "none": [15, 20]}


def minutes_to(curve: list[dict], level: float) -> float | None:
    """Wall minutes at the first validation whose BLEU reaches `level` (None if none does)."""
    for point in curve:
        if point.get("val_bleu") is not None and point["val_bleu"] >= level:
            return point["wall"] / 60
    return None


def levels_for(system: dict) -> list[float]:
    if system["arch"] == "transformer":
        return LEVELS["transformer"]
    return LEVELS["none"] if system["attention"] == "none" else LEVELS["attention"]


def averaged(run_dir: Path) -> dict | None:
    """The run's `average` record in metrics.jsonl (train.average_last), if it has one."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return None
    recs = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    return next((r for r in reversed(recs) if r.get("kind") == "average"), None)


HEADER = ["| system | minutes to validation BLEU level | best val BLEU | averaged val BLEU "
          "| updates | train min | validating | test BLEU |",
          "|---|---|---|---|---|---|---|---|"]


def table(results: dict, custom: dict[str, list[float]], out: Path | None = None,
          label: str = "") -> str:
    """The rows of one comparison's systems (named `label`/system when a label is given)."""
    rows = []
    for name, s in results["systems"].items():
        curve = s["curve"]
        best = max((p["val_bleu"] for p in curve if p.get("val_bleu") is not None), default=0)
        cells = []
        for level in custom.get(name, levels_for(s)):
            t = minutes_to(curve, level)
            cells.append(f"{level:g}: {t:.1f}" if t is not None else f"{level:g}: not reached")
        tests = ", ".join(f"{t['bleu']:.1f}" for t in s["tests"].values())
        sm = s["summary"]
        wall, train_time = sm.get("time", 0), sm.get("train_time", 0)
        validating = f"{1 - train_time / wall:.0%}" if wall and train_time else "n/a"
        avg = averaged(out / "systems" / name) if out else None
        avg_cell = (f"{avg['val_bleu']:.1f} (last {len(avg['averaged_steps'])})"
                    if avg and avg.get("val_bleu") is not None else "n/a")
        who = f"{label}/{name}" if label else name
        rows.append(f"| {who} | {'; '.join(cells)} | {best:.1f} | {avg_cell} | "
                    f"{sm.get('steps', 0):,} | {wall / 60:.1f} | {validating} | {tests} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, nargs="+",
                    help="results.json of one comparison, or of several (levers) in one table")
    ap.add_argument("--levels", action="append", default=[], help="NAME=a,b,c")
    a = ap.parse_args()
    custom = {k: [float(x) for x in v.split(",")] for k, v in
              (item.split("=", 1) for item in a.levels)}
    several = len(a.results) > 1  # then each row names its comparison's directory
    print("\n".join(HEADER + [table(json.loads(r.read_text()), custom, r.parent,
                                    r.parent.name if several else "") for r in a.results]))


if __name__ == "__main__":
    main()
