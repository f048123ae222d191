"""Beam search with the vocabulary shortlist against the full output layer (decode.shortlist).

    PYTHONPATH=. NMT_DATA_DIR=... python bench/shortlist.py \\
        --model R=~/runs/compare-cpu-en-fr/systems/bahdanau \\
        --model T=~/runs/compare-cpu-en-fr/systems/transformer \\
        --src .../test_2016_flickr.en.gz --ref .../test_2016_flickr.fr.gz \\
        --sizes 10,100 30,100 50,200 --rounds 3

Each model's best.pt is copied into --work (the shortlist is built from its recipe's training
data and saved beside the copy, never into the run directory). The decode loop is nmt's own
(prediction._decode: encode, length-sorted token batches, translate_batch under eval_mode and
decoding_precision), copied here so that only the search is timed: not reading, tokenizing or
detokenizing. On a shared machine the speed drifts by tens of percent within minutes, so every
round times the full output layer and each shortlist size one after another (interleaved), and
the table gives per setting the median and minimum seconds and the median of the per-round
ratios to the full output layer of the same round; also the CPU time of the process (with one
thread, what the search itself cost, less sensitive to others' load than the wall time). BLEU
(sacreBLEU, cased 13a) of each setting's output, which is the same in every round, and the mean
size of the allowed vocabulary per batch. Prints a markdown section for a log in bench/log/.

--untrained NAME=bahdanau|transformer adds a model of that architecture at the CPU-budget
comparison's sizes with random weights (seeded), the first --model's tokenizer and shortlist:
a measure of speed only, for when no trained model of the kind is at hand. Its hypotheses run to
the length limit, so its seconds are not those of a trained model; its BLEU means nothing.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from nmt.batching import collate, token_batches
from nmt.checkpoint import load_for_inference, resolve
from nmt.distributed import decode_batch_tokens
from nmt.evaluation import read_text, score
from nmt.model import build_model
from nmt.prediction import decoding_precision, eval_mode, source_cap
from nmt.search import max_output_len, translate_batch
from nmt.shortlist import for_checkpoint


def decode(model, pairs, dcfg, device) -> tuple[list[list[int]], float, float, float]:
    """(best tokens per sentence in input order, seconds of search, CPU seconds of this process
    in it, mean allowed vocabulary per batch): prediction._decode's loop without the text
    around it."""
    lens = [len(x) for x, _ in pairs]
    batches = token_batches(lens, lens, decode_batch_tokens(dcfg.batch_tokens, device), 0, 0,
                            shuffle=False)
    out: list[list[int]] = [[] for _ in pairs]
    sizes = []
    cap = max_output_len(model)
    with eval_mode(model), decoding_precision(device, dcfg.amp):
        t0, c0 = time.perf_counter(), time.process_time()
        for idx in batches:
            b = collate(pairs, idx)
            for j, h in zip(idx, translate_batch(model, b.src, b.src_len, dcfg, cap)):
                out[j] = h[0][0]
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if dcfg.shortlist and model.shortlist is not None:
        for idx in batches:
            b = collate(pairs, idx)
            sizes.append(model.shortlist.vocabulary(b.src, dcfg.shortlist,
                                                    dcfg.shortlist_frequent).numel())
    return out, seconds, cpu, statistics.mean(sizes) if sizes else float(model.out_size)


def machine() -> str:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:10]
    return "\n".join([f"- `uptime` at start: {uptime}", "- `lscpu | head`:", "",
                      "```", *lscpu, "```", ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True, help="NAME=RUN_DIR or .pt")
    ap.add_argument("--src", required=True)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--sizes", nargs="+", default=["10,100", "30,100", "50,200"],
                    help="shortlist settings K,N (candidates per source piece, frequent)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-tokens", type=int, default=0,
                    help="decode.batch_tokens (default: the recipe's)")
    ap.add_argument("--untrained", action="append", default=[],
                    help="NAME=bahdanau|transformer: random weights, speed only")
    ap.add_argument("--untrained-only", action="store_true",
                    help="time only the --untrained models (the --model gives their tokenizer)")
    ap.add_argument("--limit", type=int, default=0, help="the first N sentences only")
    ap.add_argument("--work", default="/tmp/nmt-shortlist-bench")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    src_lines = read_text(args.src, "source")
    refs = [read_text(args.ref, "reference")]
    if args.limit:
        src_lines, refs = src_lines[:args.limit], [refs[0][:args.limit]]
    header = [f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; torch "
              f"{torch.__version__}, {args.threads} threads; beam {args.beam}; batches of "
              f"{args.batch_tokens or 'recipe-default'} source tokens; "
              f"{len(src_lines):,} sentences ({args.src})", machine()]
    settings = [(0, 0)] + [tuple(int(v) for v in s.split(",")) for s in args.sizes]
    rows = []
    jobs = [(spec.split("=", 1)[0], spec.split("=", 1)[1], False) for spec in args.model] + \
        [(spec.split("=", 1)[0], spec.split("=", 1)[1], True) for spec in args.untrained]
    first = None
    for name, what, untrained in jobs:
        if untrained:  # the first model's tokenizer, data and shortlist, other weights
            tok, recipe, shortlist = first
            m = recipe.model
            m = replace(m, attention="bahdanau") if what == "bahdanau" else replace(
                m, arch="transformer", d_model=256, heads=4, ff_dim=1024, enc_layers=3,
                dec_layers=3)
            torch.manual_seed(0)
            model = build_model(m, tok.src_vocab_size, tok.tgt_vocab_size).eval()
            model.shortlist = shortlist
        else:
            ckpt = resolve(Path(what).expanduser())
            work = Path(args.work) / name
            work.mkdir(parents=True, exist_ok=True)
            if not (work / "best.pt").is_file() or \
                    (work / "best.pt").stat().st_mtime < ckpt.stat().st_mtime:
                shutil.copy2(ckpt, work / "best.pt")
            model, tok, recipe = load_for_inference(work / "best.pt", device)
            t0 = time.perf_counter()
            model.shortlist = for_checkpoint(work, tok, recipe)
            print(f"{name}: shortlist ready in {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr)
            first = first or (tok, recipe, model.shortlist)
            if args.untrained_only:
                continue
        model.out_size = tok.tgt_vocab_size
        cap = source_cap(model) - 1
        pairs = [(x[:cap], []) for x in tok.encode_src([s.strip() for s in src_lines])]
        base = replace(recipe.decode, beam=args.beam, nbest=1, sample=False,
                       batch_tokens=args.batch_tokens or recipe.decode.batch_tokens)
        times: dict = {s: [] for s in settings}
        cpus: dict = {s: [] for s in settings}
        tokens: dict = {}
        sizes: dict = {}
        for r in range(args.rounds):
            for s in settings:
                dcfg = replace(base, shortlist=s[0], shortlist_frequent=s[1])
                out, seconds, cpu, size = decode(model, pairs, dcfg, device)
                times[s].append(seconds)
                cpus[s].append(cpu)
                tokens[s], sizes[s] = out, size
                print(f"{name} round {r + 1} {s}: {seconds:.2f} s, CPU {cpu:.2f} s (load "
                      f"{os.getloadavg()[0]:.2f})", file=sys.stderr)
        full_bleu = None
        for s in settings:
            hyps = tok.decode_tgt(tokens[s])
            bleu = score(hyps, refs)["bleu"]
            full_bleu = bleu if s == (0, 0) else full_bleu
            ratios = [t / f for t, f in zip(times[s], times[(0, 0)])]
            cpu_ratios = [t / f for t, f in zip(cpus[s], cpus[(0, 0)])]
            same = sum(a == b for a, b in zip(tokens[s], tokens[(0, 0)]))
            rows.append(f"| {name} | {'full' if s == (0, 0) else f'{s[0]},{s[1]}'} | "
                        f"{sizes[s]:,.0f} | {statistics.median(times[s]):.2f} "
                        f"({min(times[s]):.2f}) | {statistics.median(ratios):.2f} | "
                        f"{statistics.median(cpus[s]):.2f} ({min(cpus[s]):.2f}) | "
                        f"{statistics.median(cpu_ratios):.2f} | "
                        f"{bleu:.2f} | {bleu - full_bleu:+.2f} | {same:,} |")
    end = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    header.append(f"- `uptime` at end: {end}")
    print("\n".join(header))
    print()
    print("| model | shortlist K,N | allowed pieces per batch (mean) | seconds, median (min) "
          "| time / full (median of rounds) | CPU seconds, median (min) | CPU / full | BLEU "
          "| vs full | sentences as full |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
