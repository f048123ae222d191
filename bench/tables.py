"""The tables of a benchmark log (bench/log/, summarised in bench/RESULTS.md): training
throughput, the levers against it, decoding speed, each row beside JoeyNMT's figures and the
targets; and how a run's log is written."""
from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from machine import hardware
from measure import BENCH, CACHE

RESULTS = BENCH / "RESULTS.md"   # the summary: the newest figure of each measure, by hand
LOG = BENCH / "log"               # one file per run: YYYY-MM-DD-topic.md

# JoeyNMT 2.3.0 as first measured (before vs_joeynmt.py existed) on a 2-core AMD EPYC, fp32,
# 2 threads, ~1,730 real target tokens/update. bench/vs_joeynmt.py measures its training on this
# machine; train_table prefers that (JOEY_HERE) when its CPU is this one.
JOEY = {"train": {"T": 589, "R": 593}, "s_update": 2.9, "mem_gb": 2.8,
        "decode": {("T", 1): 10.5, ("T", 5): 9.5, ("R", 1): 110, ("R", 5): 42}}
JOEY_HERE = CACHE / "joeynmt" / "measured.json"
TARGET_TRAIN = 1200                        # tok/s at ~1,730 real target tokens, T and R
TARGET_BEAM5_S = {"T": 20.0, "R": 12.0}    # seconds for the 1,000 test sentences, beam 5


def fmt(x, spec=",.0f", none="n/a"):
    return none if x is None else format(x, spec)


def disturbed(m: dict) -> float:
    """Cores other processes used while `m` was being timed (worst window); 0 if not timed."""
    if "beams" in m:
        return max(b["other_cpu"] for b in m["beams"].values())
    return m.get("other_cpu", 0.0)


def tries(m: dict) -> str:
    return f" (try {m['tries']})" if m.get("tries", 1) > 1 else ""


def others(m: dict) -> str:
    return f"{disturbed(m):.2f}{tries(m)}"


def joey_train() -> dict[str, dict]:
    """JoeyNMT's training figures per config: measured on this CPU by bench/vs_joeynmt.py if it
    has run here, else the first measurement's (JOEY)."""
    figures = {k: {"tok_s": v, "s_update": JOEY["s_update"], "peak_gb": JOEY["mem_gb"],
                   "where": "first measurement, AMD EPYC"} for k, v in JOEY["train"].items()}
    if JOEY_HERE.is_file():
        here = json.loads(JOEY_HERE.read_text())
        if here["cpu"] == hardware()["cpu"]:
            figures.update({k: {**v, "where": f"this CPU, {here['date']}"}
                            for k, v in here["train"].items()})
    return figures


def train_table(rows: list[dict]) -> list[str]:
    out = ["| model | params | real tgt tok/update: asked / epoch mean / timed mean | budget "
           "(padded) | padding | **tok/s** | s/update | peak RSS | MFU | loss first -> last "
           "| other CPU | JoeyNMT |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    joeys = joey_train()
    for r in rows:
        m = r["m"]
        if "error" in m:
            out.append(f"| {r['config']} | | {r['tokens']} | | | failed: {m['error']} "
                       "| | | | | | |")
            continue
        j = joeys[r["config"]]
        joey = (f"{j['tok_s']:,.0f} tok/s, {j['s_update']:.2f} s, {j['peak_gb']:.1f} GB "
                f"({j['where']})") if r["tokens"] == 1730 else ""
        out.append(
            f"| {r['config']} | {m['params'] / 1e6:.2f}M | {r['tokens']:,} / "
            f"{m['epoch_mean']:,.0f} / {m['timed_mean_tokens']:,.0f} | {fmt(m['budget'])} | "
            f"{m['padding']:.1%} | **{m['tok_s']:,.0f}** | {m['s_update']:.2f} | "
            f"{m['peak_gb']:.2f} GB | {m['mfu']:.1%} | {m['loss_first']:.3f} -> "
            f"{m['loss_last']:.3f} | {others(m)} | {joey} |")
    return out


def lever_table(rows: list[dict], base: dict) -> list[str]:
    out = ["| model | lever | tok/s | vs baseline | s/update | peak RSS | loss first -> last "
           "| other CPU | note |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m, b = r["m"], base.get(r["config"], {})
        if "error" in m:
            out.append(f"| {r['config']} | {r['lever']} | failed | | | | | | {m['error']} |")
            continue
        gain = f"{m['tok_s'] / b['tok_s']:.2f}x" if "tok_s" in b else ""
        out.append(f"| {r['config']} | {r['lever']} | {m['tok_s']:,.0f} | {gain} | "
                   f"{m['s_update']:.2f} | {m['peak_gb']:.2f} GB | {m['loss_first']:.3f} -> "
                   f"{m['loss_last']:.3f} | {others(m)} | {r.get('note', '')} |")
    return out


def decode_table(rows: list[dict]) -> list[str]:
    out = ["| model | model from | lever | search | seconds (1,000 sent.) | **sent/s** | BLEU | "
           "BLEU `nmt compare` recorded | hyp/ref words | other CPU | JoeyNMT sent/s | target |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["m"]
        if "error" in m:
            out.append(f"| {r['config']} | {r['source']} | {r.get('lever', '')} | | "
                       f"failed: {m['error']} | | | | | | | |")
            continue
        for beam, b in m["beams"].items():
            joey, target = JOEY["decode"].get((r["config"], beam), ""), ""
            if beam == 5 and r["config"] in TARGET_BEAM5_S:
                lim = TARGET_BEAM5_S[r["config"]]
                target = f"< {lim:.0f} s: {'met' if b['seconds'] < lim else 'NOT met'}"
            # the comparison decoded its test sets with the recipe's beam (5)
            recorded = r.get("recorded") if beam == 5 else None
            same = "" if recorded is None else \
                f"{recorded:.2f} ({'same' if abs(recorded - b['bleu']) < 0.005 else 'DIFFERS'})"
            out.append(f"| {r['config']} | {r['source']} | {r['lever'] or 'none'} | "
                       f"{'greedy' if beam == 1 else f'beam {beam}'} | {b['seconds']:.1f} | "
                       f"**{b['sent_s']:.1f}** | {b['bleu']:.2f} | {same} | {b['len_ratio']:.2f} | "
                       f"{b['other_cpu']:.2f}{tries(m)} | {joey} | "
                       f"{target} |")
    return out


def write_results(section: list[str], topic: str, log_dir: Path = LOG) -> Path:
    """One run's section as its own log file, `log_dir/YYYY-MM-DD-topic.md` (the date from the
    section's heading; -2, -3, ... when that day already has one): logs are never edited
    afterwards, and RESULTS.md's tables are updated from them by hand."""
    head = section[0].removeprefix("## ")
    date = head[:10] if head[:4].isdigit() else __import__("time").strftime("%Y-%m-%d")
    log_dir.mkdir(parents=True, exist_ok=True)
    path, k = log_dir / f"{date}-{topic}.md", 1
    while path.exists():
        k += 1
        path = log_dir / f"{date}-{topic}-{k}.md"
    body = [f"# {head}"] + [("#" + x[2:] if x.startswith("### ") else x) for x in section[1:]]
    path.write_text("\n".join(body).rstrip("\n") + "\n", encoding="utf-8")
    return path


def section(a, hw: dict, threads: int, started: str, quiet: bool, load0: float,
            sizes: list[int], train_rows: list[dict], lever_rows: list[dict], baseline: dict,
            decode_rows: list[dict]) -> list[str]:
    """The dated log section of one bench/run.py run (`a`: its arguments)."""
    load1 = os.getloadavg()
    main_mode = ", ".join(x for x in ["bf16 autocast" if a.bf16 else "fp32",
                                      "torch.compile" if a.compile else "",
                                      "no bucketing" if a.no_bucketing else "bucketing"] if x)
    sec = [f"## {started}: CPU, {threads} thread{'s' * (threads > 1)}", "",
           f"- Machine: {hw['cpu']}, {hw['cores']} cores, {hw['mem_gib']:.1f} GiB; torch "
           f"{hw['torch']} ({hw['isa']}), Python {hw['python']}; {threads} torch threads.",
           f"- Load average (1 min) at start {load0:.2f} "
           f"({'quiet' if quiet else f'NOT quiet: still above {a.max_load} after waiting'}), at "
           f"end {load1[0]:.2f}. \"other CPU\" = cores other processes used during each timed "
           f"window (/proc/stat minus our own CPU time); each measurement waited up to "
           f"{a.settle:.0f} s for them to use < {a.max_other} cores.",
           f"- Command: `{shlex.join(['bench/run.py', *sys.argv[1:]])}`" +
           f"; {a.warmup} warm-up + {a.steps} timed updates; main table: {main_mode}."]
    if a.note:
        sec.append(f"- Note: {a.note}")
    peaks = [r["m"]["peak_gflops"] for r in train_rows if "peak_gflops" in r["m"]]
    if peaks:
        sec.append(f"- fp32 matmul peak (2048x2048 torch.mm, best of 6, measured in each run): "
                   f"{min(peaks):.0f}-{max(peaks):.0f} GFLOP/s; MFU = 6 x matmul params x tok/s / "
                   f"that run's peak.")
    sec += ["", "### Training throughput", ""] + train_table(train_rows)
    ok = [r for r in train_rows if r["tokens"] == 1730 and "tok_s" in r["m"]]
    if ok:
        sec += ["", "Target >= 1,200 tok/s at ~1,730 real target tokens/update: " + "; ".join(
            f"{r['config']} {r['m']['tok_s']:,.0f} "
            f"({'met' if r['m']['tok_s'] >= TARGET_TRAIN else 'NOT met'})" for r in ok) + "."]
    if lever_rows:
        sec += ["", f"### Levers, one at a time ({sizes[0]:,} real target tokens/update; "
                    f"baseline = the training table's row)", ""] + \
            lever_table(lever_rows, baseline)
    if decode_rows:
        per = next((r["m"]["sent_per_batch"] for r in decode_rows if "sent_per_batch" in r["m"]),
                   None)
        sec += ["", f"### Decoding test_2016_flickr (1,000 sentences; batches of "
                    f"{a.decode_batch_tokens:,} source tokens = about {fmt(per, '.0f')} "
                    f"sentences; JoeyNMT: 64)", ""] + decode_table(decode_rows)
    elif not a.no_decode:
        sec += ["", "Decoding skipped: no checkpoints and --train-updates 0 (an untrained model "
                    "decodes to the length limit, so its speed would mean nothing)."]
    return sec
