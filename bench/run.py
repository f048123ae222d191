"""Speed benchmark: training throughput, decoding speed and what each speed lever gives,
for two fixed models on Multi30k de-en, appended as a dated section to bench/RESULTS.md.

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

Every measurement runs in a fresh spawned process: ru_maxrss is that process's own peak, thread
settings and torch.compile caches never leak into the next one. The load average gates the start
(others' tests share the 2 cores); during each timed window, /proc/stat minus our own CPU time
gives the CPU others used ("other CPU", in cores), recorded beside every number.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from nmt.batching import collate, padding_fraction, token_batches
from nmt.config import DataConfig, DecodeConfig, ModelConfig, Recipe, TokenizerConfig, TrainConfig
from nmt.tokenizer import Tokenizer

BENCH = Path(__file__).resolve().parent
CACHE = BENCH / ".cache"
TOK_DIR = CACHE / "spm8k"
RESULTS = BENCH / "RESULTS.md"
SEED = 1234

CONFIGS = {
    # Transformer 3+3, d 256, 4 heads, ff 1024, tied: JoeyNMT's 7.6M reference model
    "T": ModelConfig(arch="transformer", d_model=256, heads=4, ff_dim=1024, enc_layers=3,
                     dec_layers=3, dropout=0.1, tie_embeddings=True),
    # 1-layer bi-GRU (2 x 256) + 1-layer GRU 512 decoder, Bahdanau, untied, as JoeyNMT's 12.3M
    # RNN; ours has fewer parameters because its deep output (and so the output matrix) is
    # emb_dim 256 wide where JoeyNMT's is hidden 512 wide
    "R": ModelConfig(arch="rnn", attention="bahdanau", rnn_type="gru", emb_dim=256,
                     hidden_size=512, bidirectional=True, enc_layers=1, dec_layers=1,
                     dropout=0.2, tie_embeddings=False),
}
# the update of nmt.training with TrainConfig's loss/optimizer defaults (label smoothing 0.1,
# Adam (0.9, 0.98), clip 1.0); constant lr, see the module docstring
BENCH_TRAIN = TrainConfig(lr=5e-4, schedule="constant")

# JoeyNMT 2.3.0 as first measured (before vs_joeynmt.py existed) on a 2-core AMD EPYC, fp32,
# 2 threads, ~1,730 real target tokens/update. bench/vs_joeynmt.py measures its training on this
# machine; train_table prefers that (JOEY_HERE) when its CPU is this one.
JOEY = {"train": {"T": 589, "R": 593}, "s_update": 2.9, "mem_gb": 2.8,
        "decode": {("T", 1): 10.5, ("T", 5): 9.5, ("R", 1): 110, ("R", 5): 42}}
JOEY_HERE = CACHE / "joeynmt" / "measured.json"
TARGET_TRAIN = 1200                        # tok/s at ~1,730 real target tokens, T and R
TARGET_BEAM5_S = {"T": 20.0, "R": 12.0}    # seconds for the 1,000 test sentences, beam 5
# decoded too when `make compare` has trained them: every model family's speed
FAMILIES = ["no-attention", "luong-dot", "luong-general", "luong-concat"]


# ----------------------------------------------------------------------------- machine

def hardware() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in _run(["lscpu"]).splitlines()
                  if line.startswith("Model name")), platform.processor() or "?")
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)), "mem_gib": mem_kb / 2**20,
            "torch": torch.__version__, "python": platform.python_version(),
            "isa": torch.backends.cpu.get_cpu_capability()}


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""


def wait_for_quiet(max_load: float, budget_s: float, poll_s: float = 60) -> tuple[bool, float]:
    """Poll the 1-minute load average until it drops below max_load (others' tests share the
    cores); give up after budget_s. Returns (quiet, load when we started)."""
    t0 = time.time()
    while True:
        load = os.getloadavg()[0]
        if load < max_load:
            return True, load
        if time.time() - t0 + poll_s > budget_s:
            print(f"load average still {load:.2f} after {budget_s / 60:.0f} min: measuring "
                  f"anyway, the load is recorded with the numbers", flush=True)
            return False, load
        print(f"load average {load:.2f} >= {max_load}: waiting {poll_s:.0f}s", flush=True)
        time.sleep(poll_s)


def others_busy(window_s: float = 10) -> float:
    """Cores busy over the next window_s, while this process sleeps: the other users' load,
    without the tail of our own last measurement that the load average still carries."""
    b0, o0 = _busy_s(), _own_s()
    time.sleep(window_s)
    return max(0.0, (_busy_s() - b0 - (_own_s() - o0)) / window_s)


class CpuWindow:
    """CPU used by other processes during a window, in cores: all busy time from /proc/stat
    minus this process's own user+system time."""

    def __enter__(self):
        self.t, self.busy, self.own = time.perf_counter(), _busy_s(), _own_s()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t
        own = _own_s() - self.own
        self.other = max(0.0, (_busy_s() - self.busy - own) / wall)
        self.own_cores = own / wall


def _busy_s() -> float:
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]  # idle + iowait
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def matmul_peak(n: int = 2048, reps: int = 6) -> float:
    """fp32 GFLOP/s of a large torch.mm (2 n^3 flops), best of `reps`: this CPU's practical peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def matmul_parameters(model: torch.nn.Module) -> int:
    """Parameters that cost 2 flops per token forward: all but lookup-only embedding tables."""
    lookups = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    lookups -= {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    return sum(p.numel() for p in model.parameters() if id(p) not in lookups)


# ----------------------------------------------------------------------------- data

def tokenizer() -> Tokenizer:
    """One joint 8k unigram SentencePiece model over Multi30k de+en train, built once."""
    if (TOK_DIR / "spm.model").is_file():
        return Tokenizer.load(TOK_DIR)
    from nmt.data import load_split

    print(f"building the 8k joint SentencePiece model into {TOK_DIR}", flush=True)
    train = load_split(DataConfig(), "train")
    return Tokenizer.train(train.src, train.tgt, TOK_DIR, TokenizerConfig())


def train_pairs(tok: Tokenizer) -> list[tuple[list[int], list[int]]]:
    from nmt.data import encode_pairs, load_split

    return encode_pairs(load_split(DataConfig(), "train"), tok, DataConfig(), train=True)[0]


def make_batches(pairs, real_tokens: int, bucketing: bool) -> tuple[list[list[int]], dict]:
    """Epoch-1 batches whose mean real target tokens (incl. EOS) is about `real_tokens`.

    Bucketed: token_batches with a padded-position budget found by bisection. Unbucketed (the
    lever): random pairs, a fixed count per batch with the same mean real tokens, so the two
    differ only in padding."""
    src = [len(s) for s, _ in pairs]
    tgt = [len(t) for _, t in pairs]
    ntok = np.asarray(tgt) + 1

    def mean_real(batches):
        return float(np.mean([ntok[b].sum() for b in batches]))

    if bucketing:
        lo, hi = real_tokens, 4 * real_tokens
        while hi - lo > 1:  # mean real tokens grows with the budget
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if mean_real(token_batches(src, tgt, mid, SEED, 1)) < \
                real_tokens else (lo, mid)
        cand = [token_batches(src, tgt, b, SEED, 1) for b in (lo, hi)]
        err = [abs(mean_real(c) - real_tokens) for c in cand]
        budget, batches = ((lo, cand[0]) if err[0] <= err[1] else (hi, cand[1]))
    else:
        per = max(1, round(real_tokens / ntok.mean()))
        batches = random_batches(len(pairs), per, SEED)
        budget = None
    info = {"budget": budget, "epoch_mean": mean_real(batches), "n_batches": len(batches),
            "padding": padding_fraction(batches, src, tgt),
            "per_batch": None if bucketing else per}
    return batches, info


def random_batches(n: int, per: int, seed) -> list[list[int]]:
    """n pairs shuffled and cut into batches of `per` as they come, so every batch mixes
    lengths: JoeyNMT's batching (its TokenBatchSampler has "no bucketing implemented")."""
    order = np.random.default_rng(seed).permutation(n).tolist()
    return [order[i:i + per] for i in range(0, n, per)]


# ----------------------------------------------------------------------------- workers
# Each runs in a fresh spawned process and returns a dict (or {"error": ...}).

def _call(name: str, spec: dict) -> dict:
    try:
        return globals()[name](spec)
    except Exception as e:  # a failing lever is a result to record, not a crash
        return {"error": f"{type(e).__name__}: {e}".splitlines()[0][:300],
                "traceback": traceback.format_exc()}


def _train_worker(spec: dict) -> dict:
    """Time `warmup + steps` real updates of one config at one batch size."""
    import torch.nn.functional  # noqa: F401  (import cost outside the timing)

    import candidates
    from nmt.model import build_model
    from nmt.seq2seq import count_parameters
    from nmt.training import Trainer

    torch.set_num_threads(spec["threads"])
    cands = spec.get("candidates", [])
    candidates.apply(cands)
    tok = tokenizer()
    pairs = train_pairs(tok)
    batches, binfo = make_batches(pairs, spec["tokens"], spec["bucketing"])
    n = spec["warmup"] + spec["steps"]
    if len(batches) < n:
        raise ValueError(f"only {len(batches)} batches for {n} updates")
    batches = batches[:n]

    torch.manual_seed(SEED)
    model = build_model(CONFIGS[spec["config"]], tok.src_vocab_size, tok.tgt_vocab_size,
                        joint=tok.joint)
    params = count_parameters(model)
    flop_params = matmul_parameters(model)
    check = None
    if "rnn_loop" in cands and spec["config"] == "R":
        b = collate(pairs, batches[0])
        check = candidates.check_rnn_loop(model, b.src, b.src_len, b.tgt_in)
    # nmt's own update (fused Adam, clipping, schedule), one batch per update
    trainer = Trainer(model.train(), BENCH_TRAIN, pairs, amp=spec["bf16"],
                      compile=spec["compile"])

    def update(idx: list[int]) -> tuple[float, int]:
        r = trainer.update([idx])
        if r.skipped:
            raise FloatingPointError("non-finite loss or gradient norm")
        return r.loss / r.tokens, r.tokens

    warm_times = []
    for idx in batches[:spec["warmup"]]:
        t0 = time.perf_counter()
        update(idx)
        warm_times.append(time.perf_counter() - t0)
    times, losses, toks = [], [], []
    with CpuWindow() as cpu:
        for idx in batches[spec["warmup"]:]:
            t0 = time.perf_counter()
            loss, ntok = update(idx)
            times.append(time.perf_counter() - t0)
            losses.append(loss)
            toks.append(ntok)
    peak = matmul_peak()
    tps = sum(toks) / sum(times)
    return {"params": params, "tok_s": tps, "s_update": float(np.mean(times)),
            "s_update_median": float(np.median(times)), "timed_mean_tokens": float(np.mean(toks)),
            "first_update_s": warm_times[0] if warm_times else None,
            "loss_first": losses[0], "loss_last": losses[-1], "peak_gb": peak_rss_gb(),
            "peak_gflops": peak, "flop_params": flop_params,
            "mfu": 6 * flop_params * tps / (peak * 1e9),
            "other_cpu": cpu.other, "own_cores": cpu.own_cores, "check": check, **binfo}


def _brief_train_worker(spec: dict) -> dict:
    """Train a config for a few hundred updates with `nmt train`'s own loop, so that decoding is
    measured on a model that emits EOS like a trained one (an untrained model runs every
    hypothesis to the length limit)."""
    from nmt.training import train

    torch.set_num_threads(spec["threads"])
    k, steps = spec["config"], spec["updates"]
    tr = replace(TrainConfig(), max_steps=steps, max_epochs=0, valid_every=steps, patience=0,
                 batch_tokens=4096, lr=1e-3, threads=spec["threads"],
                 schedule="inverse_sqrt" if k == "T" else "constant", warmup=max(steps // 4, 1))
    recipe = Recipe(name=f"bench-{k}", model=CONFIGS[k], train=tr)
    t0 = time.time()
    summary = train(recipe, Path(spec["out"]), overwrite=True, quiet=True, tokenizer_dir=TOK_DIR)
    return {"seconds": time.time() - t0, "best_bleu": summary.get("best_bleu"),
            "tokens_per_s": summary.get("tokens_per_s")}


def _decode_worker(spec: dict) -> dict:
    """Translate the 1,000 test_2016_flickr lines, greedy and beam 5, timed; BLEU of each."""
    import candidates
    from nmt.checkpoint import load_for_inference
    from nmt.data import load_split
    from nmt.evaluation import score
    from nmt.prediction import translate_lines

    torch.set_num_threads(spec["threads"])
    candidates.apply(spec.get("candidates", []))
    device = torch.device("cpu")
    model, tok, recipe = load_for_inference(spec["checkpoint"], device)
    if spec["config"] and recipe.model != CONFIGS[spec["config"]]:
        raise ValueError(f"{spec['checkpoint']} is not configuration {spec['config']}: "
                         f"{recipe.model}")
    test = load_split(DataConfig(), "test_2016_flickr")
    out = {}
    for beam in spec["beams"]:
        dcfg = replace(recipe.decode, beam=beam, nbest=1, batch_tokens=spec["batch_tokens"])
        translate_lines(model, tok, test.src[:32], dcfg, device)  # warm-up, untimed
        with CpuWindow() as cpu:
            t0 = time.perf_counter()
            hyps = translate_lines(model, tok, test.src, dcfg, device)
            dt = time.perf_counter() - t0
        s = score(hyps, [test.tgt])
        ratio = sum(len(h.split()) for h in hyps) / sum(len(r.split()) for r in test.tgt)
        out[beam] = {"seconds": dt, "sent_s": len(hyps) / dt, "bleu": s["bleu"],
                     "len_ratio": ratio, "other_cpu": cpu.other, "alpha": dcfg.alpha}
    src_lens = [len(x) + 1 for x in tok.encode_src(test.src)]
    n_batches = len(token_batches(src_lens, src_lens, spec["batch_tokens"], 0, 0, shuffle=False))
    return {"beams": out, "peak_gb": peak_rss_gb(), "sent_per_batch": len(test.src) / n_batches,
            "params": sum(p.numel() for p in model.parameters())}


def in_process(fn, spec: dict, timeout: float | None = None) -> dict:
    """Run fn(spec) in a fresh spawned process; a timeout or a crash is returned as an error."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        job = pool.apply_async(_call, (fn.__name__, spec))
        try:
            return job.get(timeout)
        except mp.TimeoutError:
            pool.terminate()
            return {"error": f"gave up after {timeout:.0f}s"}
        except Exception as e:
            return {"error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}


# ----------------------------------------------------------------------------- report

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
           "hyp/ref words | other CPU | JoeyNMT sent/s | target |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["m"]
        if "error" in m:
            out.append(f"| {r['config']} | {r['source']} | {r.get('lever', '')} | | "
                       f"failed: {m['error']} | | | | | | |")
            continue
        for beam, b in m["beams"].items():
            joey, target = JOEY["decode"].get((r["config"], beam), ""), ""
            if beam == 5 and r["config"] in TARGET_BEAM5_S:
                lim = TARGET_BEAM5_S[r["config"]]
                target = f"< {lim:.0f} s: {'met' if b['seconds'] < lim else 'NOT met'}"
            out.append(f"| {r['config']} | {r['source']} | {r['lever'] or 'none'} | "
                       f"{'greedy' if beam == 1 else f'beam {beam}'} | {b['seconds']:.1f} | "
                       f"**{b['sent_s']:.1f}** | {b['bleu']:.1f} | {b['len_ratio']:.2f} | "
                       f"{b['other_cpu']:.2f}{tries(m)} | {joey} | "
                       f"{target} |")
    return out


def write_results(section: list[str], path: Path) -> None:
    """Newest section first, earlier ones kept below."""
    head = ("# Benchmark results\n\nWritten by `make bench` (bench/run.py); newest run first. "
            "How each number is measured: see the docstring of bench/run.py.\n")
    old = path.read_text(encoding="utf-8") if path.is_file() else head
    cut = old.find("\n## ")
    top, rest = (old, "") if cut < 0 else (old[:cut + 1], old[cut + 1:])
    path.write_text(top.rstrip("\n") + "\n\n" + "\n".join(section).rstrip("\n") + "\n\n"
                    + rest, encoding="utf-8")


# ----------------------------------------------------------------------------- main

LEVERS = {  # name: (label, change to the measurement spec, configs it applies to)
    "threads1": ("1 thread (vs all cores)", {"threads": 1}, "TR"),
    "bf16": ("bf16 autocast", {"bf16": True}, "TR"),
    "compile": ("torch.compile(dynamic=True)", {"compile": True}, "TR"),
    "nobucket": ("no length bucketing (random batches)", {"bucketing": False}, "TR"),
    "rnn_loop": ("RNN decoder loop*", {"candidates": ["rnn_loop"]}, "R"),
}


def lever(names: str) -> tuple[str, dict, str]:
    """`a+b` combines levers a and b."""
    label, change, where = [], {}, "TR"
    for n in names.split("+"):
        if n not in LEVERS:
            raise SystemExit(f"unknown lever {n!r}; use {', '.join(LEVERS)} (or a+b)")
        lab, ch, w = LEVERS[n]
        label.append(lab)
        cands = change.get("candidates", []) + ch.get("candidates", [])
        change = {**change, **ch, **({"candidates": cands} if cands else {})}
        where = "".join(c for c in where if c in w)
    return " + ".join(label), change, where


def _trained(system: str) -> str | None:
    """The CPU comparison's run of `system`, if finished: trained recipe models for decoding."""
    d = Path("runs") / "compare-cpu" / "systems" / system  # relative: it is printed in RESULTS
    return str(d) if (BENCH.parent / d / "done.json").is_file() else None


def main() -> None:
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
    p.add_argument("--levers", default="threads1,nobucket,rnn_loop,bf16,compile",
                   help=f"tried one at a time at the first --tokens size, against the main "
                        f"table; '' = none. Known: {', '.join(LEVERS)}; a+b combines")
    p.add_argument("--decode-levers", default="rnn_loop",
                   help="proposed nmt changes also timed when decoding ('' = none)")
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
    p.add_argument("--decode-batch-tokens", type=int, default=DecodeConfig().batch_tokens,
                   help="source tokens per decoding batch")
    p.add_argument("--max-load", type=float, default=1.5,
                   help="start only below this 1-minute load average")
    p.add_argument("--wait", type=float, default=1500, help="seconds to wait for it at most")
    p.add_argument("--max-other", type=float, default=0.3,
                   help="before each measurement, wait until other processes use fewer cores")
    p.add_argument("--settle", type=float, default=300, help="seconds to wait for that at most")
    p.add_argument("--retries", type=int, default=2,
                   help="measure again when others used more than --max-other cores meanwhile")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--dry-run", action="store_true", help="print the section, write nothing")
    p.add_argument("--note", default="", help="a line to add to the section")
    a = p.parse_args()

    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    if set(configs) - set(CONFIGS):
        raise SystemExit(f"--configs: use {', '.join(CONFIGS)}")
    sizes = [int(x) for x in a.tokens.split(",")]
    levers = [lever(x.strip()) + (x.strip(),) for x in a.levers.split(",") if x.strip()]
    dlevers = [lever(x.strip()) + (x.strip(),) for x in a.decode_levers.split(",") if x.strip()]
    threads = a.threads or len(os.sched_getaffinity(0))
    hw = hardware()
    CACHE.mkdir(parents=True, exist_ok=True)
    tokenizer()  # build it before the clock matters
    quiet, load0 = wait_for_quiet(a.max_load, a.wait)
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    base = dict(warmup=a.warmup, steps=a.steps, threads=threads, bf16=a.bf16,
                compile=a.compile, bucketing=not a.no_bucketing, candidates=[])

    def settle() -> float:
        t0 = time.time()
        while (busy := others_busy()) >= a.max_other and time.time() - t0 < a.settle:
            print(f"  others use {busy:.2f} cores; waiting", flush=True)
        return busy

    def run(fn, spec: dict, what: str, timeout: float | None = None) -> dict:
        """Measure; if others took more than --max-other cores during the timed window, try
        again (up to --retries times) and keep the least disturbed attempt."""
        best = None
        for attempt in range(1, a.retries + 2):
            before = settle()
            print(f"{what} (try {attempt}; others before: {before:.2f} cores)", flush=True)
            m = in_process(fn, spec, timeout)
            m.update(other_before=before, tries=attempt)
            print("   ", {k: round(v, 3) if isinstance(v, float) else v for k, v in m.items()
                          if k not in ("traceback", "beams")}, flush=True)
            if "traceback" in m:
                print(m["traceback"], file=sys.stderr)
            if best is None or disturbed(m) < disturbed(best):
                best = m
            if "error" in m or disturbed(m) < a.max_other:
                break
        return best

    def train(spec: dict, label: str = "") -> dict:
        return run(_train_worker, spec, f"train {spec['config']} {spec['tokens']} tok {label}",
                   a.compile_timeout if spec["compile"] else None)

    train_rows = [{"config": c, "tokens": n, "m": train({**base, "config": c, "tokens": n})}
                  for c in configs for n in sizes]

    baseline = {r["config"]: r["m"] for r in train_rows if r["tokens"] == sizes[0]}
    lever_rows = []
    for label, change, where, name in levers:
        for c in [c for c in configs if c in where]:
            m = train({**base, "config": c, "tokens": sizes[0], **change}, label)
            b, note = baseline.get(c, {}), []
            if "error" not in m:
                if change.get("bf16"):
                    d = abs(m["loss_last"] - b.get("loss_last", math.nan))
                    note.append(f"last loss {'matches' if d < 0.05 else 'DIFFERS from'} fp32 "
                                f"({d:.3f} apart)")
                if change.get("compile"):
                    note.append(f"first update (compiling) {m['first_update_s']:.0f} s")
                if "bucketing" in change:
                    note.append(f"padding {m['padding']:.0%} (bucketed {b.get('padding', 0):.0%})")
                if m.get("check") is not None:
                    note.append(f"same function: max abs logit diff {m['check']:.1e}")
            lever_rows.append({"config": c, "lever": label, "m": m, "note": "; ".join(note)})

    decode_rows = []

    def decode(name: str, ckpt, config: str | None, source: str) -> None:
        """Time one trained model (and the decoding levers that apply to its config)."""
        spec = {"checkpoint": str(BENCH.parent / ckpt), "config": config, "beams": [1, 5],
                "threads": threads, "batch_tokens": a.decode_batch_tokens}
        m = run(_decode_worker, spec, f"decode {name} from {ckpt}")
        decode_rows.append({"config": name, "source": source, "lever": "", "m": m})
        for label, change, where, _ in dlevers:
            if config and config in where:
                m = run(_decode_worker, {**spec, **change}, f"decode {name} {label}")
                decode_rows.append({"config": name, "source": source, "lever": label, "m": m})

    if not a.no_decode and (a.train_updates > 0 or a.ckpt_T or a.ckpt_R):
        for c in configs:
            ckpt = getattr(a, f"ckpt_{c}")
            if ckpt:
                decode(c, ckpt, c, f"`{ckpt}`")
                continue
            if not a.train_updates:
                decode_rows.append({"config": c, "source": "none", "lever": "", "m": {
                    "error": "skipped: no --checkpoint and --train-updates 0"}})
                continue
            out = CACHE / "runs" / f"{c}-{a.train_updates}"
            if not (out / "best.pt").is_file():
                r = run(_brief_train_worker, {"config": c, "updates": a.train_updates,
                                              "threads": threads, "out": str(out)},
                        f"training {c} for {a.train_updates} updates into {out}")
                if "error" in r:
                    decode_rows.append({"config": c, "source": "brief training",
                                        "lever": "", "m": r})
                    continue
            decode(c, out, c, f"{a.train_updates} updates (bench)")
        # the other model families, as `make compare` trained them (R-sized RNNs)
        for system in FAMILIES:
            if ckpt := _trained(system):
                decode(system, ckpt, None, f"`{ckpt}`")

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
            lever_table(lever_rows, baseline) + ["", "\\* a proposed change inside nmt/, "
                                                 "measured by monkeypatching (bench/candidates.py)"]
    if decode_rows:
        per = next((r["m"]["sent_per_batch"] for r in decode_rows if "sent_per_batch" in r["m"]),
                   None)
        sec += ["", f"### Decoding test_2016_flickr (1,000 sentences; batches of "
                    f"{a.decode_batch_tokens:,} source tokens = about {fmt(per, '.0f')} "
                    f"sentences; JoeyNMT: 64)", ""] + decode_table(decode_rows)
    elif not a.no_decode:
        sec += ["", "Decoding skipped: no checkpoints and --train-updates 0 (an untrained model "
                    "decodes to the length limit, so its speed would mean nothing)."]
    print("\n" + "\n".join(sec))
    if not a.dry_run:
        write_results(sec, a.results)
        print(f"\nappended to {a.results}")


if __name__ == "__main__":
    main()
