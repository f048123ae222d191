"""Running a comparison: the shared tokenizer, then every system trained (or resumed, or
skipped when finished) and its test sets decoded, one after another or with --jobs side by side
in processes of their own, then the results and the report.

A `Job` is one run of one system (one seed) with what its steps need: the comparison directory,
the test sets, the device, why its old run is stale. Every step reads the run's recipe through
the job (`Job.recipe`), a copy with the job's device and threads: the comparison's recipes are
shared by every job and by the results stage after them, and nothing here writes to them.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape

from nmt import identity, layout, report, rundir, training
from nmt.checkpoint import load_for_inference
from nmt.compare.recipe import Comparison, SeedRun, seed_runs
from nmt.compare.results import collect
from nmt.compare.stale import decode_key, fresh_hyp, stale_system, stale_tokenizer, tokenizer_key
from nmt.config import Recipe
from nmt.data import Corpus, held_out, holdout, load_split, read_lines
from nmt.distributed import cpu_count, decode_batch_tokens, resolve_device
from nmt.errors import NMTError
from nmt.evaluation import scoring
from nmt.prediction import translate_lines
from nmt.tokenizer import Tokenizer

console = Console(stderr=True)


@dataclass(frozen=True)
class Job:
    """One run of a system to train and decode, handed whole from `run` (or a --jobs child
    process) to each of its steps."""
    seed_run: SeedRun         # which system and seed; its recipe as the comparison gives it
    out: Path                 # the comparison directory
    tests: dict[str, Corpus]  # test split -> its pairs: what every run decodes
    stale: str | None = None  # why the run there is for another recipe (trained again)
    device: str = "auto"      # --device: where to train (auto: train.device) and decode
    threads: int = 0          # a --jobs child's share of the cores (a recipe's own wins)
    quiet: bool = False       # no progress bar (a --jobs child's output is a log)
    head: str = ""            # how the console names the run

    @property
    def run_dir(self) -> Path:
        return layout.ComparisonDir(self.out).system(self.seed_run.dir)

    @property
    def tok_dir(self) -> Path:
        return layout.ComparisonDir(self.out).tokenizer

    @property
    def recipe(self) -> Recipe:
        """The run's recipe with the job's device and threads, as a new recipe: the one in the
        comparison stays as it was loaded (other jobs, seed runs and collect read it)."""
        r = self.seed_run.recipe
        changes = {}
        if self.device != "auto":
            changes["device"] = self.device
        if self.threads and not r.train.threads:
            changes["threads"] = self.threads
        return dataclasses.replace(r, train=dataclasses.replace(r.train, **changes))


def build_tokenizer(first: Recipe, tok_dir: Path, heldout: Path | None = None) -> None:
    """The comparison's shared tokenizer, trained on the first system's training split, with
    the settings it was built from (settings.json: what later runs check it against)."""
    console.print(f"[bold]tokenizer[/] building on "
                  f"{escape(f'{first.data.source}:{first.data.train}')}")
    train = load_split(first.data, first.data.train, limit=first.data.max_train_pairs,
                       heldout=heldout)
    Tokenizer.train(train.src, train.tgt, tok_dir, first.tokenizer,
                    log=lambda line: console.print(f"[bold]tokenizer[/] {escape(line)}"))
    (tok_dir / layout.TOKENIZER_SETTINGS).write_text(json.dumps(tokenizer_key(first), indent=2))
    (tok_dir / layout.DATA_RECORD).write_text(json.dumps({"train": identity.of_corpus(train)}))


def run(cmp: Comparison, out: Path, only: list[str] | None = None, device: str = "auto",
        quiet: bool = False, retrain: bool = False, jobs: int = 1) -> dict:
    """Tokenizer once, then train -> decode -> score each system (each of its seeds), then the
    report. jobs > 1: that many runs at once, each in its own process (_side_by_side)."""
    names = list(cmp.recipes)
    for n in only or []:
        if n not in cmp.recipes:
            raise NMTError(f"--only {n}: no such system; choose from {', '.join(names)}")
    todo = [sr for n in names if not only or n in only for sr in seed_runs(cmp, n)]
    first = cmp.recipes[names[0]]
    if out.exists() and not out.is_dir():
        raise NMTError(f"--out {out}: is a file, not a directory")
    scoring(first)  # a package eval.tokenize needs and lacks: an error before any training
    where = layout.ComparisonDir(out)
    tok_dir = where.tokenizer

    # ---- everything that would be reused must be what is asked for now, checked up front
    for sr in todo:  # a run an --overwrite (--retrain) set aside and was killed: back first
        rundir.recover(where.system(sr.dir))
    stale_tok = stale_tokenizer(tok_dir, first)
    stale: dict[str, str] = {}  # run directory -> what changed since it was trained
    for sr in todo if not stale_tok else []:
        why = stale_system(where.system(sr.dir), sr.recipe, tok_dir)
        if why:
            stale[sr.dir] = why
    if (stale_tok or stale) and not retrain:
        what = (f"the shared tokenizer ({tok_dir}) changed: {stale_tok}; every system would "
                f"need retraining" if stale_tok else
                "; ".join(f"system {n}: {why}" for n, why in stale.items()))
        raise NMTError(f"{out} holds results for another recipe ({what}). Pass --retrain to "
                       f"train {'them' if stale_tok or len(stale) > 1 else 'it'} again, or "
                       f"choose another --out")
    heldout = where.heldout  # one held-out split, shared by every system
    if held_out(first.data):
        console.print(holdout(first.data, heldout).summary(), highlight=False, markup=False)
    tests = {s: load_split(first.data, s, limit=first.data.max_test_pairs, heldout=heldout)
             for s in first.data.test}
    if stale_tok:
        console.print(f"[bold]tokenizer[/] settings changed ({escape(stale_tok)}): rebuilding "
                      f"it and retraining every system")
        shutil.rmtree(tok_dir)
        stale = {sr.dir: "tokenizer changed" for sr in todo}
    if not any(tok_dir.glob("*.model")):
        build_tokenizer(first, tok_dir, heldout)

    todo_jobs = [Job(sr, out, tests, stale.get(sr.dir), device, quiet=quiet,
                     head=f"[bold][{i}/{len(todo)}] {sr.dir}[/]")
                 for i, sr in enumerate(todo, 1)]
    if jobs > 1 and len(todo_jobs) > 1:
        _side_by_side(todo_jobs, jobs)
    else:
        for job in todo_jobs:
            _train_and_decode(job)

    results = collect(cmp, out, tests)
    where.results.write_text(json.dumps(results, indent=2))
    report.write(cmp, out, results, tests)
    console.print(f"[bold green]report:[/] {escape(str(where.report))}")
    return results


def _side_by_side(todo: list[Job], jobs: int) -> None:
    """Train and decode the runs `jobs` at a time, each in its own process with its share of the
    cores. These small models leave a GPU waiting on each process's kernel launches, so runs side
    by side finish in about the time of the slowest one (bench/RESULTS.md, "Whole
    comparisons"). A run's output goes to systems/DIR.log. Ctrl-C or SIGTERM
    reaches each running run once, which stops as `nmt train` stops (last.pt saved): run again
    to resume. Call from the main thread (signal handlers)."""
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    threads = max(1, cpu_count() // min(jobs, len(todo)))
    waiting, running, failed = list(todo), {}, []
    # SIGTERM (kill, timeout, a cluster's scheduler) stops the runs as Ctrl-C does
    term = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                job = waiting.pop(0)
                name = job.seed_run.dir
                log = layout.ComparisonDir(job.out).system_log(name)
                log.parent.mkdir(parents=True, exist_ok=True)
                # in its process: quiet (its output is a log), named plainly, its share of cores
                child = dataclasses.replace(job, threads=threads, quiet=True, head=name)
                p = ctx.Process(target=_run_alone, name=name, args=(child, log))
                p.start()
                running[p.sentinel] = (p, name, log, time.time())
                console.print(f"{name}: started ({threads} CPU thread{'s' * (threads > 1)}; "
                              f"output in {escape(str(log))})")
            for s in multiprocessing.connection.wait(list(running)):
                p, name, log, t0 = running.pop(s)
                p.join()
                if p.exitcode == 0:
                    console.print(f"{name}: done in {(time.time() - t0) / 60:.1f} min")
                    continue
                lines = read_lines(log) if log.is_file() else []
                last = next((x.strip() for x in reversed(lines) if x.strip()), "no output")
                if p.exitcode != 2:  # not an error the run reported itself: a crash, a kill
                    last = f"ended with exit status {p.exitcode} after: {last}"
                failed.append(f"{name}: {last} (all of it in {log})")
    except KeyboardInterrupt:
        # the runs are in sessions of their own, out of the terminal's reach: tell each once
        for p, *_ in running.values():
            os.kill(p.pid, signal.SIGINT)
        console.print(f"[yellow]stopping:[/] every running system saves {layout.LAST} first")
        for p, *_ in running.values():
            p.join()
        raise NMTError(f"interrupted: the running systems saved {layout.LAST}; run the same "
                       "command again to resume") from None
    finally:
        signal.signal(signal.SIGTERM, term)
    if failed:
        raise NMTError("; ".join(failed))


def _run_alone(job: Job, log: Path) -> None:
    """A child process of _side_by_side: one run, its output into `log`, an error as its last
    line and exit status 2."""
    os.setsid()  # a terminal's Ctrl-C reaches the parent only, which passes it on once
    _die_with_parent()
    fd = _open_log(log, job.seed_run.dir)
    os.dup2(fd, 1)
    os.dup2(fd, 2)  # torch's and Python's output alike
    try:
        _train_and_decode(job)
    except NMTError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


def _open_log(log: Path, name: str) -> int:
    """systems/NAME.log for one more attempt: appended to (an earlier attempt's output is what
    says why it failed), after a header line naming the attempt. Returns the descriptor."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, f"==== {name}: attempt started {time.strftime('%Y-%m-%d %H:%M:%S')} "
                 f"(process {os.getpid()}) ====\n".encode())
    return fd


# prctl(2): PR_SET_PDEATHSIG sends the caller a signal when its parent dies
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """A --jobs child: SIGTERM when the parent dies, however it dies (SIGKILL included), so a
    child never trains on alone holding its system's lock; SIGTERM stops the run as Ctrl-C does
    (last.pt saved). Linux only (prctl); elsewhere children outlive a SIGKILLed parent."""
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: no prctl
        return
    if os.getppid() != parent or parent == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _train_and_decode(job: Job) -> None:
    """One run of a system: trained (or resumed, or skipped when done.json says it finished),
    then every test set decoded unless its hypotheses are already what is asked for."""
    _train(job)
    r = job.recipe
    for split, corpus in job.tests.items():
        hyp = layout.hypotheses(job.run_dir, split)
        key = decode_key(r, corpus.src)
        if not job.stale and fresh_hyp(hyp, key):
            continue
        console.print(f"{job.head}: decoding {split} (beam {r.decode.beam})")
        _decode(job.run_dir, corpus.src, hyp, job.device, r, key)


def _train(job: Job) -> None:
    """The run trained into its directory (done.json: its summary) unless it finished before;
    a stale run (job.stale) is trained again from the start."""
    done = job.run_dir / layout.DONE
    if job.stale:
        why = job.stale if job.stale.startswith("data changed") else \
            f"recipe changed ({job.stale})"
        console.print(f"{job.head}: {escape(why)}: training again")
        done.unlink(missing_ok=True)
    if done.is_file():
        console.print(f"{job.head}: trained already, skipping")
        return
    resume = not job.stale and (job.run_dir / layout.LAST).is_file()
    console.print(f"{job.head}: {'resuming' if resume else 'training'}")
    r = job.recipe
    summary = training.train(r, job.run_dir, resume=resume, overwrite=bool(job.stale),
                             quiet=job.quiet, tokenizer=Tokenizer.load(job.tok_dir),
                             heldout_dir=layout.ComparisonDir(job.out).heldout)
    if summary.get("interrupted"):
        raise NMTError(f"interrupted while training {job.seed_run.dir}; run the same command "
                       "again to resume")
    summary["device"] = _device_name(resolve_device(r.train.device), summary.get("threads"))
    summary["seed"] = r.train.seed
    done.write_text(json.dumps(summary, indent=2, default=str))


def _decode(run_dir: Path, src: list[str], hyp: Path, device: str, r: Recipe,
            key: dict) -> None:
    """Translate src with run_dir's best.pt and the comparison's decoding settings into hyp."""
    dev = resolve_device(device)
    model, tok, _ = load_for_inference(run_dir, dev)
    threads = torch.get_num_threads()
    if r.train.threads:  # the recipe's threads decode too (under --jobs: the job's share)
        torch.set_num_threads(r.train.threads)
    try:
        used = torch.get_num_threads()
        t0 = time.perf_counter()
        lines = translate_lines(model, tok, src, r.decode, dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    hyp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    # batch_tokens: the source tokens per batch it ran at (decode.batch_tokens auto: per device)
    info = {"seconds": seconds, "sentences": len(src), "sent_per_s": len(src) / seconds,
            "device": _device_name(dev, used), "beam": r.decode.beam,
            "batch_tokens": decode_batch_tokens(r.decode.batch_tokens, dev), **key}
    hyp.with_suffix(".json").write_text(json.dumps(info, indent=2))


def _device_name(dev: torch.device, threads: int | None = None) -> str:
    """The report's device column; on the CPU with the threads the work used (not this
    process's setting now: training and decoding set their own)."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    n = threads or torch.get_num_threads()
    return f"cpu ({n} thread{'s' * (n != 1)})"
