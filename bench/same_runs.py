"""Whether two `nmt compare` output directories hold the same runs: for every system in both,
its hypothesis files byte for byte, its best.pt weights tensor for tensor, and its logged
training and validation figures (timings left out). For a restructuring that must not change
behaviour: run the same comparison at the old and the new commit (same --jobs, so the same
threads per run), then

  python bench/same_runs.py OLD_OUT NEW_OUT [--write]

--write also writes the table as a log (bench/log/DATE-same-runs.md). Metrics differ, legitimately,
in a resumed run's first train record (it averages only the updates since the resume); the
table names the records that differ."""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch

from tables import write_results

KEEP = ("kind", "step", "epoch", "loss", "lr", "val_loss", "bleu", "chrf", "ppl")


def metrics(run: Path) -> list[dict]:
    rows = (json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip())
    return [{k: r[k] for k in KEEP if k in r} for r in rows]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = (torch.load(p / "best.pt", map_location="cpu", weights_only=False)["model"]
              for p in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def compare(old: Path, new: Path) -> list[list[str]]:
    rows = []
    for run in sorted(p for p in (old / "systems").iterdir() if p.is_dir()):
        other = new / "systems" / run.name
        hyps = sorted(run.glob("*.hyp"))
        if not hyps or not (other / "done.json").is_file() or not list(other.glob("*.hyp")):
            rows.append([run.name, "not finished in both", "", "", ""])
            continue
        verdicts = []
        for h in hyps:
            same = (other / h.name).is_file() and (other / h.name).read_bytes() == h.read_bytes()
            digest = hashlib.sha256(h.read_bytes()).hexdigest()[:12]
            verdicts.append(f"{h.stem}: {'identical' if same else 'DIFFERENT'} ({digest})")
        ma, mb = metrics(run), metrics(other)
        off = [f"{x['kind']} step {x['step']}" for x, y in zip(ma, mb) if x != y]
        logged = ("identical" if not off and len(ma) == len(mb) else
                  f"{len(ma) - len(off)} of {len(ma)} identical; differ: {', '.join(off)}")
        rows.append([run.name, "; ".join(verdicts),
                     "identical" if same_weights(run, other) else "DIFFERENT", logged])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--write", action="store_true", help="also write bench/log/DATE-same-runs.md")
    ap.add_argument("--note", default="", help="a paragraph for the log (commits, command)")
    a = ap.parse_args()
    rows = compare(a.old, a.new)
    table = ["| system | hypotheses | best.pt weights | logged figures |", "|---|---|---|---|"]
    table += ["| " + " | ".join(r[:4]) + " |" for r in rows]
    print("\n".join(table))
    if a.write:
        head = f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: the same runs before " \
               f"and after (bench/same_runs.py)"
        print(write_results([head, "", a.note, "", *table], "same-runs"))


if __name__ == "__main__":
    main()
