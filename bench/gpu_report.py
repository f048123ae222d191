"""The measured part of a GPU benchmark log (bench/log/, summarised in bench/RESULTS.md), from
what bench/gpu_check.sh (and, for the whole comparison, bench/parallel_compare.sh) left in their
output directories, so that no figure is copied by hand:

    python bench/gpu_report.py OUT_DIR [--compare ROOT] [--write]

OUT_DIR: gpu_check's (versions.log, steps.log, train.json, graphs.json, decode.json,
rnn-bf16.log, ddp.log, tests.log, cmp/). ROOT: parallel_compare's (one folder per comparison
recipe, TIMES). Prints the section; --write also writes it as bench/log/YYYY-MM-DD-gpu.md.
What the run shows is written under it by hand.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tables import LOG, fmt, write_results  # noqa: E402

CPU_RUN = Path(__file__).resolve().parents[1] / "recipes" / "multi30k-de-en" / "cpu-run"


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.is_file() else []


def machine(out: Path, train: dict | None) -> list[str]:
    """versions.log: nvidia-smi's line, the packages' versions, nproc, what is not installed."""
    v = _lines(out / "versions.log")
    lines = [f"- Machine: {v[0] if v else 'versions.log missing'}"
             + (f"; {v[2]} CPU cores" if len(v) > 2 else "") + (f"; {v[1]}" if len(v) > 1 else "")
             + (f"; {v[3]}" if len(v) > 3 else "") + "."]
    if train and train.get("peak_tflops"):
        p = train["peak_tflops"]
        lines.append(f"- Measured matrix rate (8192^3 torch.mm, random data): bf16 "
                     f"{p['bf16']:.0f} TFLOP/s, TF32 {p['tf32']:.0f} TFLOP/s.")
    steps = [s.split("\t") for s in _lines(out / "steps.log")]
    if steps:
        lines.append("- Steps of bench/gpu_check.sh: " + "; ".join(
            f"{name} {status} ({secs} s)" for name, status, secs in steps) + ".")
    return lines


def train_table(train: dict) -> list[str]:
    out = ["| model | batch tokens | precision | target tok/s | ms/update | Multi30k epoch | MFU "
           "| peak GiB | loss first -> last |", "|---|---|---|---|---|---|---|---|---|"]
    for r in train["train"]:
        prec = "bf16" if r["bf16"] else "float32 (TF32)"
        if "error" in r:
            out.append(f"| {r['model']} | | {prec} | failed: {r['error'][:120]} | | | | | |")
            continue
        epoch = "" if r.get("epoch_s") is None else \
            f"{r['epoch_s']:.1f} s" + (" (cut, extrapolated)" if r["cut"] else "")
        out.append(f"| {r['model']} | {r['batch_tokens']:,} | {prec} | {r['tok_s']:,.0f} | "
                   f"{r['ms_update']:.1f} | {epoch} | {100 * r['mfu']:.2f}% | "
                   f"{r['peak_gib']:.2f} | {r['loss_first']:.3f} -> {r['loss_last']:.3f} |")
    return out


def graphs_table(graphs: dict) -> list[str]:
    """graphs.json: each model and precision with train.cuda_graphs off and on: tokens/s, MFU,
    the speed-up of on over off, the graphs captured (and the seconds their warm-up and capture
    took) and the positions the bucket shapes add."""
    off = {(r["model"], r["bf16"]): r for r in graphs["train"]
           if "tok_s" in r and not r.get("graphs")}
    out = ["| model | batch tokens | precision | CUDA graphs | target tok/s | ms/update | MFU | "
           "speed-up | graphs (capture s) | padding added | loss first -> last |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in graphs["train"]:
        prec = "bf16" if r["bf16"] else "float32 (TF32)"
        on = "on" if r.get("graphs") else "off"
        if "error" in r:
            out.append(f"| {r['model']} | | {prec} | {on} | failed: {r['error'][:120]} "
                       f"| | | | | | |")
            continue
        base = off.get((r["model"], r["bf16"]))
        speed = f"{r['tok_s'] / base['tok_s']:.2f}x" if r.get("graphs") and base else ""
        captured = f"{r['graphs_captured']} ({r['capture_s']:.1f} s)" if r.get("graphs") else ""
        padding = f"+{100 * r['padding_extra']:.0f}%" if r.get("graphs") else ""
        out.append(f"| {r['model']} | {r['batch_tokens']:,} | {prec} | {on} | {r['tok_s']:,.0f} "
                   f"| {r['ms_update']:.1f} | {100 * r['mfu']:.2f}% | {speed} | {captured} | "
                   f"{padding} | {r['loss_first']:.3f} -> {r['loss_last']:.3f} |")
    return out


def decode_table(decode: dict) -> list[str]:
    """One row per model and search, one column per precision and batch size: seconds (BLEU)."""
    cols = sorted({(r["amp"] or "float32", r["batch_tokens"]) for r in decode["decode"]},
                  key=lambda c: (c[0] != "bf16", c[1]))
    cells: dict[tuple, dict] = {}
    for r in decode["decode"]:
        key = (Path(r["run"]).name, "greedy" if r["beam"] == 1 else f"beam {r['beam']}")
        cells.setdefault(key, {})[(r["amp"] or "float32", r["batch_tokens"])] = r
    out = ["| model | search | " + " | ".join(f"{a}, {b:,}" for a, b in cols) + " |",
           "|---|---|" + "---|" * len(cols)]
    for (model, search), row in cells.items():
        out.append(f"| {model} | {search} | " + " | ".join(
            f"{row[c]['seconds']:.2f} s ({row[c]['bleu']:.2f})" if c in row else ""
            for c in cols) + " |")
    return out


def systems_table(cmp: Path, reference: dict | None) -> list[str]:
    """Each trained system of a comparison run: wall time, validation and test BLEU, beside the
    same system's in `reference` (a results.json) when given."""
    results = _json(cmp / "results.json") or {}
    out = ["| system | trained on | epochs | train + validation time | best val BLEU | test BLEU"
           + (" | test BLEU, CPU run |" if reference else " |"),
           "|---|---|---|---|---|---|" + ("---|" if reference else "")]
    for done in sorted((cmp / "systems").glob("*/done.json")):
        name, d = done.parent.name, json.loads(done.read_text())
        test = results.get("systems", {}).get(name, {}).get("tests", {}).get(
            "test_2016_flickr", {}).get("bleu")
        row = (f"| {name} | {d.get('device', '')} | {d['epochs']:.1f} | {d['time']:.0f} s | "
               f"{d['best_bleu']:.2f} | {fmt(test, '.2f')} |")
        if reference:
            ref = reference.get("systems", {}).get(name, {}).get("tests", {}).get(
                "test_2016_flickr", {}).get("bleu")
            row += f" {fmt(ref, '.2f')} |"
        out.append(row)
    return out


def tests_summary(out: Path) -> list[str]:
    log = _lines(out / "tests.log")
    if not log:
        return ["- Tests: no tests.log."]
    # pytest's closing line of each run ("== 9 passed, 1 skipped in 20.1s ==")
    ends = [re.sub(r"^=+ | =+$", "", s) for s in log if re.match(r"^=+ .*\d+ (passed|failed)", s)]
    # each failure once, named by the short summary or by -v's progress lines (all a cut log
    # has), which read "[gw0] [ 45%] FAILED tests/..." under xdist, "tests/... FAILED" without
    bad: dict[str, None] = {}
    for s in log:
        for m in re.finditer(r"\b(FAILED|ERROR) (tests/\S+)|(tests/\S+) (FAILED|ERROR)\b", s):
            bad[f"{m[1] or m[4]} {m[2] or m[3]}"] = None
    lines = ["- Tests with CUDA visible (the GPU-only tests first, then the rest): "
             + ("; ".join(ends) if ends else "no summary line (cut by its time limit?)") + "."]
    lines += [f"  - {b}" for b in list(bad)[:20]]
    return lines


def ddp_line(out: Path) -> list[str]:
    """ddp.log: the Transformer recipe's tokens/s (as its done: lines give them) on one GPU
    accumulating 2 batches and on 2 GPUs; or why it did not run."""
    log = _lines(out / "ddp.log")
    rates = [float(m[1].replace(",", "")) for s in log
             if (m := re.search(r"done: .*?([\d,.]+) target tok/s", s))]
    if len(rates) == 2:
        return [f"- DDP (the Transformer recipe, 60 updates of 2 x 4,096 tokens): one GPU "
                f"accumulating 2 batches {rates[0]:,.0f} target tok/s, 2 GPUs {rates[1]:,.0f} "
                f"({rates[1] / rates[0]:.2f}x)."]
    return [f"- DDP: {log[-1].strip()}"] if log else []


def compare_section(root: Path) -> list[str]:
    """parallel_compare.sh's ROOT: the wall time of all systems at once, and each system."""
    times = _lines(root / "TIMES")
    out = []
    if len(times) >= 2:
        out.append(f"- All systems at once (bench/parallel_compare.sh): "
                   f"{(int(times[1]) - int(times[0])) / 60:.1f} min wall, reports included.")
    for cmp in sorted(p for p in root.iterdir() if (p / "systems").is_dir()):
        out += ["", f"{cmp.name}:", ""] + systems_table(cmp, None)
    return out


def section(out: Path, compare: Path | None) -> list[str]:
    train, decode = _json(out / "train.json"), _json(out / "decode.json")
    device = (train or decode or {}).get("device", "a CUDA GPU")
    stamp = datetime.fromtimestamp((out / "versions.log").stat().st_mtime, timezone.utc) \
        if (out / "versions.log").is_file() else datetime.now(timezone.utc)
    sec = [f"## {stamp:%Y-%m-%d %H:%M} UTC: GPU, {device} (bench/gpu_check.sh; "
           f"tables by bench/gpu_report.py)", ""] + machine(out, train)
    rnn = [s for s in _lines(out / "rnn-bf16.log") if s.startswith("worst gradient cosine")]
    sec.append(f"- bench/gpu_rnn_check.py: {rnn[-1] if rnn else 'no result'}.")
    sec += ddp_line(out)
    sec += tests_summary(out)
    if train:
        sec += ["", "### Training speed (bench/gpu_bench.py train)", ""] + train_table(train)
    graphs = _json(out / "graphs.json")
    if graphs:
        sec += ["", "### CUDA graphs (train.cuda_graphs) off and on, and a Transformer-base on "
                    "synthetic long batches (bench/gpu_bench.py train --plan)", ""] + \
            graphs_table(graphs)
    if (out / "cmp" / "systems").is_dir():
        sec += ["", "### compare-cpu.yaml's systems trained on the GPU (`nmt compare --device "
                    "cuda`)", ""] + systems_table(out / "cmp", _json(CPU_RUN / "results.json"))
    if decode:
        sec += ["", "### Decoding test_2016_flickr, seconds (BLEU) by precision and source "
                    "tokens per batch (bench/gpu_bench.py decode)", ""] + decode_table(decode)
    if compare is not None:
        sec += ["", "### The whole comparison on the GPU", ""] + compare_section(compare)
    return sec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="bench/gpu_check.sh's output directory")
    p.add_argument("--compare", type=Path, help="bench/parallel_compare.sh's OUT_ROOT")
    p.add_argument("--write", action="store_true", help="write it as a log in bench/log/")
    a = p.parse_args()
    sec = section(a.out, a.compare)
    print("\n".join(sec))
    if a.write:
        print(f"\nwritten to {write_results(sec, 'gpu', LOG)}")


if __name__ == "__main__":
    main()
