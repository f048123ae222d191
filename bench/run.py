"""Speed benchmark: training throughput, decoding speed and what each speed lever gives,
for two fixed models on Multi30k de-en, written as a dated log to bench/log/ (summarised in
bench/RESULTS.md).

    make bench                                   # everything, as published
    .venv/bin/python bench/run.py --configs T --tokens 1730 --warmup 1 --steps 3 --no-decode \
        --no-levers --dry-run                    # a one-minute smoke run, writes nothing

Training. The update is nmt.training.Trainer.update, one batch per update, in one process:
collate -> forward -> label-smoothed CE summed over real target tokens -> backward of loss /
target tokens -> clip_grad_norm_ -> fused Adam step -> zero_grad -> LambdaLR step. Only the
schedule differs from a recipe's: a constant lr, so the loss visibly falls within the few timed
updates (first and last are recorded: an update that silently skipped work could not lower it);
the schedule costs nothing.
Batches come from nmt.batching.token_batches, whose budget counts *padded* positions; the budget
is calibrated so that the mean number of real (non-pad) target tokens per update hits the asked
size, which is what JoeyNMT's figures count.

MFU = 6 * N * target tokens/s / (fp32 torch.mm peak of this CPU, measured in the same process),
where N counts the parameters that multiply: every weight except embedding tables that are only
looked up (a tied table that is also the output projection counts). 6N per token is the usual
forward+backward estimate (Kaplan et al. 2020); it ignores attention scores and counts the
encoder's work on source tokens as if there were as many as target tokens, so it is a rough
ratio, not a profile.

Decoding. Each trained model translates the 1,000 test_2016_flickr lines, greedy and with beam
5, timed after an untimed warm-up; BLEU beside each. Where `nmt compare` trained the model, the
beam-5 BLEU it recorded in its results.json stands beside ours: the same checkpoint decoded with
the same settings must score the same, or decoding has changed. The Transformer is also exported
with `nmt export` and decoded by CTranslate2 (float32 and int8; the `ctranslate2` extra), the
engine OpenNMT-py and fairseq users serve with, through the same path as `nmt translate
--checkpoint DIR`.

Every measurement runs in a fresh spawned process: ru_maxrss is that process's own peak, thread
settings and torch.compile caches never leak into the next one. The load average gates the start
(others' tests share the 2 cores); during each timed window, /proc/stat minus our own CPU time
gives the CPU others used ("other CPU", in cores), recorded beside every number.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

from machine import hardware, others_busy, wait_for_quiet
from measure import (BENCH, CACHE, CONFIGS, LEVERS, BriefTrainSpec, DecodeSpec, TrainSpec,
                     brief_train_worker, decode_worker, in_process, lever, tokenizer,
                     train_worker)
from nmt.config import DecodeConfig
from nmt.distributed import decode_batch_tokens
from tables import LOG, disturbed, section, write_results

# decoded too when `make compare` has trained them: every model family's speed
FAMILIES = ["no-attention", "luong-dot", "luong-general", "luong-concat"]


def _trained(system: str) -> str | None:
    """The CPU comparison's run of `system`, if finished: trained recipe models for decoding."""
    d = Path("runs") / "compare-cpu" / "systems" / system  # relative: it is printed in the log
    return str(d) if (BENCH.parent / d / "done.json").is_file() else None


def _recorded_bleu(ckpt: str, split: str = "test_2016_flickr") -> float | None:
    """The test BLEU `nmt compare` recorded for the system in run dir `ckpt` (beam as in its
    recipe), if that comparison's results.json is beside it: the bench's own decoding of the
    same checkpoint must give it again, or decoding changed."""
    run = BENCH.parent / ckpt
    results = run.parent.parent / "results.json"
    if not results.is_file():
        return None
    system = json.loads(results.read_text()).get("systems", {}).get(run.name, {})
    return system.get("tests", {}).get(split, {}).get("bleu")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="T,R", help="comma list of T, R")
    p.add_argument("--tokens", default="1730,4096",
                   help="real (non-pad) target tokens per update to measure, comma list")
    p.add_argument("--warmup", type=int, default=5, help="untimed updates first")
    p.add_argument("--steps", type=int, default=20, help="timed updates")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in the main table")
    p.add_argument("--compile", action="store_true", help="torch.compile in the main table")
    p.add_argument("--no-bucketing", action="store_true", help="random batches, main table")
    p.add_argument("--levers", default="threads1,nobucket,bf16,compile,osmem",
                   help=f"tried one at a time at the first --tokens size, against the main "
                        f"table; '' = none. Known: {', '.join(LEVERS)}; a+b combines")
    p.add_argument("--decode-levers", default="bf16,ct2,ct2int8,osmem",
                   help="levers also timed when decoding ('' = none); ct2/ct2int8 need the "
                        "ctranslate2 extra")
    p.add_argument("--compile-timeout", type=float, default=900, help="seconds, per compile run")
    p.add_argument("--checkpoint-T", dest="ckpt_T", default=_trained("transformer"),
                   help="run dir or .pt of a trained T (default: `make compare`'s Transformer, "
                        "which is T, when it has run)")
    p.add_argument("--checkpoint-R", dest="ckpt_R", default=_trained("bahdanau"),
                   help="run dir or .pt of a trained R (default: `make compare`'s Bahdanau "
                        "system, which is R, when it has run)")
    p.add_argument("--train-updates", type=int, default=400,
                   help="without a checkpoint, train this many updates with `nmt train`'s loop "
                        "(batch 4096, cached in bench/.cache/runs) before timing decoding; "
                        "0 = skip decoding")
    p.add_argument("--no-decode", action="store_true")
    p.add_argument("--decode-batch-tokens", type=int,
                   default=decode_batch_tokens(DecodeConfig().batch_tokens, "cpu"),
                   help="source tokens per decoding batch (default: what auto takes on a CPU)")
    p.add_argument("--max-load", type=float, default=1.5,
                   help="start only below this 1-minute load average")
    p.add_argument("--wait", type=float, default=1500, help="seconds to wait for it at most")
    p.add_argument("--max-other", type=float, default=0.3,
                   help="before each measurement, wait until other processes use fewer cores")
    p.add_argument("--settle", type=float, default=300, help="seconds to wait for that at most")
    p.add_argument("--retries", type=int, default=2,
                   help="measure again when others used more than --max-other cores meanwhile")
    p.add_argument("--log-dir", type=Path, default=LOG, help="where the run's log goes")
    p.add_argument("--dry-run", action="store_true", help="print the section, write nothing")
    p.add_argument("--note", default="", help="a line to add to the section")
    return p.parse_args(argv)


class Bench:
    """Runs the measurements one at a time, each in a fresh process, waiting for the other
    users of the machine to quieten first and measuring again when they did not."""

    def __init__(self, a: argparse.Namespace, threads: int):
        self.a, self.threads = a, threads

    def settle(self) -> float:
        """Wait (up to --settle s) until others use fewer than --max-other cores."""
        t0 = time.time()
        while (busy := others_busy()) >= self.a.max_other and time.time() - t0 < self.a.settle:
            print(f"  others use {busy:.2f} cores; waiting", flush=True)
        return busy

    def measure(self, fn, spec, what: str, timeout: float | None = None) -> dict:
        """Measure; if others took more than --max-other cores during the timed window, try
        again (up to --retries times) and keep the least disturbed attempt."""
        best = None
        for attempt in range(1, self.a.retries + 2):
            before = self.settle()
            print(f"{what} (try {attempt}; others before: {before:.2f} cores)", flush=True)
            m = in_process(fn, spec, timeout)
            m.update(other_before=before, tries=attempt)
            print("   ", {k: round(v, 3) if isinstance(v, float) else v for k, v in m.items()
                          if k not in ("traceback", "beams")}, flush=True)
            if "traceback" in m:
                print(m["traceback"], file=sys.stderr)
            if best is None or disturbed(m) < disturbed(best):
                best = m
            if "error" in m or disturbed(m) < self.a.max_other:
                break
        return best

    def train(self, spec: TrainSpec, label: str = "") -> dict:
        return self.measure(train_worker, spec, f"train {spec.config} {spec.tokens} tok {label}",
                            self.a.compile_timeout if spec.compile else None)

    def levers(self, base: TrainSpec, configs: list[str], baseline: dict) -> list[dict]:
        """Each lever (or combination) at the first batch size, against the baseline rows."""
        rows = []
        for label, change, where, _ in self.a.lever_list:
            for c in [c for c in configs if c in where]:
                m = self.train(replace(base, config=c, **change), label)
                rows.append({"config": c, "lever": label, "m": m,
                             "note": lever_note(change, m, baseline.get(c, {}))})
        return rows

    def decode(self, rows: list[dict], name: str, ckpt, config: str | None, source: str) -> None:
        """Time one trained model (and the decoding levers that apply to its config)."""
        spec = DecodeSpec(checkpoint=str(BENCH.parent / ckpt), config=config,
                          threads=self.threads, batch_tokens=self.a.decode_batch_tokens)
        m = self.measure(decode_worker, spec, f"decode {name} from {ckpt}")
        rows.append({"config": name, "source": source, "lever": "", "m": m,
                     "recorded": _recorded_bleu(ckpt)})
        known = {f.name for f in fields(DecodeSpec)}
        for label, change, where, _ in self.a.decode_lever_list:
            if config and config in where:
                lever_spec = replace(spec, **{k: v for k, v in change.items() if k in known})
                m = self.measure(decode_worker, lever_spec, f"decode {name} {label}")
                rows.append({"config": name, "source": source, "lever": label, "m": m})

    def decoding(self, configs: list[str]) -> list[dict]:
        """T and R from --checkpoint-T/R or a brief training run, then the other families."""
        a, rows = self.a, []
        for c in configs:
            ckpt = getattr(a, f"ckpt_{c}")
            if ckpt:
                self.decode(rows, c, ckpt, c, f"`{ckpt}`")
                continue
            if not a.train_updates:
                rows.append({"config": c, "source": "none", "lever": "", "m": {
                    "error": "skipped: no --checkpoint and --train-updates 0"}})
                continue
            out = CACHE / "runs" / f"{c}-{a.train_updates}"
            if not (out / "best.pt").is_file():
                r = self.measure(brief_train_worker, BriefTrainSpec(
                    config=c, updates=a.train_updates, threads=self.threads, out=str(out)),
                    f"training {c} for {a.train_updates} updates into {out}")
                if "error" in r:
                    rows.append({"config": c, "source": "brief training", "lever": "", "m": r})
                    continue
            self.decode(rows, c, out, c, f"{a.train_updates} updates (bench)")
        # the other model families, as `make compare` trained them (R-sized RNNs)
        for system in FAMILIES:
            if ckpt := _trained(system):
                self.decode(rows, system, ckpt, None, f"`{ckpt}`")
        return rows


def lever_note(change: dict, m: dict, b: dict) -> str:
    """What a lever row needs said beside its speed: does bf16 keep the loss, what compiling
    cost, how much padding."""
    if "error" in m:
        return ""
    note = []
    if change.get("bf16"):
        d = abs(m["loss_last"] - b.get("loss_last", math.nan))
        note.append(f"last loss {'matches' if d < 0.05 else 'DIFFERS from'} fp32 "
                    f"({d:.3f} apart)")
    if change.get("compile"):
        note.append(f"first update (compiling) {m['first_update_s']:.0f} s")
    if "bucketing" in change:
        note.append(f"padding {m['padding']:.0%} (bucketed {b.get('padding', 0):.0%})")
    return "; ".join(note)


def main() -> None:
    a = parse_args()
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    if set(configs) - set(CONFIGS):
        raise SystemExit(f"--configs: use {', '.join(CONFIGS)}")
    sizes = [int(x) for x in a.tokens.split(",")]
    a.lever_list = [lever(x.strip()) + (x.strip(),) for x in a.levers.split(",") if x.strip()]
    a.decode_lever_list = [lever(x.strip()) + (x.strip(),) for x in a.decode_levers.split(",")
                           if x.strip()]
    threads = a.threads or len(os.sched_getaffinity(0))
    hw = hardware()
    CACHE.mkdir(parents=True, exist_ok=True)
    tokenizer()  # build it before the clock matters
    quiet, load0 = wait_for_quiet(a.max_load, a.wait)
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    bench = Bench(a, threads)
    base = TrainSpec(config=configs[0], tokens=sizes[0], warmup=a.warmup, steps=a.steps,
                     threads=threads, bf16=a.bf16, compile=a.compile,
                     bucketing=not a.no_bucketing)

    train_rows = [{"config": c, "tokens": n, "m": bench.train(replace(base, config=c, tokens=n))}
                  for c in configs for n in sizes]
    baseline = {r["config"]: r["m"] for r in train_rows if r["tokens"] == sizes[0]}
    lever_rows = bench.levers(base, configs, baseline)
    decode_rows = []
    if not a.no_decode and (a.train_updates > 0 or a.ckpt_T or a.ckpt_R):
        decode_rows = bench.decoding(configs)

    sec = section(a, hw, threads, started, quiet, load0, sizes, train_rows, lever_rows,
                  baseline, decode_rows)
    print("\n" + "\n".join(sec))
    if not a.dry_run:
        print(f"\nwritten to {write_results(sec, 'cpu-bench', a.log_dir)}")


if __name__ == "__main__":
    main()
