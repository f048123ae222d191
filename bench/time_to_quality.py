"""Time to quality: wall minutes of training (validation included, as a user waits for it) until
each system's validation BLEU first reaches fixed levels, read from a comparison's results.json.

    .venv/bin/python bench/time_to_quality.py runs/compare-cpu/results.json [--levels ...]

Levels per kind of system (override with --levels NAME=a,b,c): the Transformer 30/35/38/40, an
attention RNN 25/30/35, the attention-free RNN 15/20. A level never reached shows the best
validation BLEU instead ("best 33.1"). Prints a markdown table with each system's test BLEU.
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


def table(results: dict, custom: dict[str, list[float]]) -> str:
    rows = ["| system | time to validation BLEU level (min) | best val BLEU | epochs | "
            "train min | test BLEU |", "|---|---|---|---|---|---|"]
    for name, s in results["systems"].items():
        curve = s["curve"]
        best = max((p["val_bleu"] for p in curve if p.get("val_bleu") is not None), default=0)
        cells = []
        for level in custom.get(name, levels_for(s)):
            t = minutes_to(curve, level)
            cells.append(f"{level:g}: {t:.1f}" if t is not None else f"{level:g}: not reached")
        tests = ", ".join(f"{t['bleu']:.1f}" for t in s["tests"].values())
        sm = s["summary"]
        rows.append(f"| {name} | {'; '.join(cells)} | {best:.1f} | {sm.get('epochs', 0):.1f} | "
                    f"{sm.get('time', 0) / 60:.1f} | {tests} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--levels", action="append", default=[], help="NAME=a,b,c")
    a = ap.parse_args()
    custom = {k: [float(x) for x in v.split(",")] for k, v in
              (item.split("=", 1) for item in a.levels)}
    print(table(json.loads(a.results.read_text()), custom))


if __name__ == "__main__":
    main()
