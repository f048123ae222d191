"""`nmt compare`: RNN vs RNN+attention vs attention-only, end to end, in one resumable command.

A comparison recipe names `systems`, each a recipe file and/or `set:` overrides. A system's
recipe is, from lowest to highest priority: the comparison's `base`, the system's `recipe:` file,
its `set:`, the comparison's `overrides`, and `--set` from the command line. Data is the
exception, as every system must train and be scored on the same data: whatever data the
comparison gives (its `data:`, `base: {data: ...}`, `overrides: {data: ...}`, `--set data.*`,
`--data`) wins over every system's recipe file, and a system's `set:` that gives another value
for it is refused. The work is laid out so that re-running after an interruption loses nothing
already done:

    DIR/tokenizer/                    built once, shared by every system (+ settings.json)
    DIR/heldout/                      valid/test pairs held out of a corpus without such splits
    DIR/systems/NAME/                 a normal `nmt train` run directory (+ done.json when finished)
    DIR/systems/NAME/SPLIT.hyp        decoded test sets (+ SPLIT.json: what was decoded, how, time)
    DIR/systems/NAME-seedK/           with `seeds: N` (or --seeds N), runs K = 1..N-1 of NAME
    DIR/systems/NAME.log              with --jobs: the output of NAME's own process
    DIR/results.json, DIR/report.md, DIR/*.png

With --jobs N, N runs train at once, each in its own process (on one GPU the whole comparison
then takes about the time of its slowest system).

With N seeds every system is trained N times: run K (0..N-1) with train.seed + K, so run 0 is
the system's own recipe in its usual directory, and going from 1 seed to N (or N to N+1) trains
only the new runs. The report then gives means and standard deviations over the seeds, learning
curves with a band, and a significance test that resamples both sentences and seeds
(evaluation.seed_bootstrap).

Nothing is reused unless it is what the comparison asks for now: the tokenizer only when its
settings and training data are the same, a trained system only when its resolved recipe (all but
decoding, test sets and device) equals the one it was trained with, a hypothesis file only when
it was decoded from the same source lines with the same decoding settings. A changed tokenizer or
system is an error naming the change unless --retrain is given; changed decoding or test sets
are simply decoded again. eval (the BLEU tokenizer, docs/scoring.md) counts as training, since
validation BLEU chose best.pt and when to stop; the test scores are computed afresh from the
hypothesis files on every run.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import shutil
import signal
import statistics
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape

from nmt import identity, layout, report, rundir, training
from nmt.checkpoint import load_for_inference
from nmt.config import (DecodeConfig, Recipe, apply_overrides, coerce, read_yaml,
                        recipe_from_dict, to_dict)
from nmt.data import held_out, holdout, load_split, read_lines, split_paths
from nmt.distributed import cpu_count, decode_batch_tokens, resolve_device
from nmt.errors import NMTError
from nmt.evaluation import (bleu_interval, length_unit, paired_bootstrap, resolve_tokenize, score,
                            scoring, seed_bootstrap, seed_interval, sentence_length)
from nmt.prediction import translate_lines
from nmt.registry import design as model_design
from nmt.rundir import flat
from nmt.tokenizer import Tokenizer

console = Console(stderr=True)
# sections every system must share, or BLEU is not comparable
SHARED = ("data", "tokenizer", "eval")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a system name is also a directory name
# recipe fields that do not change what training computes: a finished system is reused across
# changes to them (decoding and test sets are redone as needed)
NOT_TRAINING = ("name", "decode.", "data.test", "data.max_test_pairs", "train.device",
                "train.threads", "train.tensorboard", "train.progress_every",
                "train.progress_seconds", "train.cuda_graphs")
# training summary fields given as the mean over a system's seeds (the others are its first run's)
MEAN_OVER_SEEDS = ("best_bleu", "steps", "epochs", "time", "train_time", "tokens_per_s")
# decode fields whose default changed since they were added, at their value before them
DECODED_BEFORE = {"amp": False}
# decode fields that change how fast a test set is decoded, not its translations: a hypothesis
# file is reused across them
NOT_DECODING = ("batch_tokens",)
# fields the shared tokenizer is built from
TOKENIZER_KEYS = ("tokenizer.", "data.source", "data.path", "data.hf_config", "data.src_lang",
                  "data.tgt_lang", "data.src_field", "data.tgt_field", "data.train",
                  "data.src_file", "data.tgt_file", "data.header", "data.holdout",
                  "data.max_train_pairs")


@dataclass
class Comparison:
    name: str = ""                  # title of the report; defaults to the file name
    baseline: str = "no-attention"  # system the attention systems are tested against
    examples: int = 5               # test sentences shown from every system beside the reference
    heatmaps: int = 3               # test sentences whose attention is drawn for every system
    length_bins: int = 5            # BLEU by length: buckets at source-length quantiles
    # or explicit edges, in source words (characters for an unspaced source language:
    # evaluation.length_unit)
    length_buckets: list[int] = field(default_factory=list)
    seeds: int = 1                  # training runs per system, seed K with train.seed + K
    base: dict = field(default_factory=dict)      # recipe sections under every system's own
    data: dict = field(default_factory=dict)      # data fields over every system's own
    overrides: dict = field(default_factory=dict)  # recipe sections over every system's own
    systems: dict = field(default_factory=dict)   # NAME -> {recipe: FILE, set: {overrides}}
    recipes: dict = field(default_factory=dict)   # NAME -> resolved Recipe (filled on load)


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in (b or {}).items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) \
            else copy.deepcopy(v)
    return out


def _typed(raw: dict, path: Path) -> Comparison:
    """The comparison's own fields, each checked against its type and range."""
    names = [f.name for f in dataclasses.fields(Comparison) if f.name != "recipes"]
    hints = typing.get_type_hints(Comparison)
    values = {}
    for key, value in raw.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            raise NMTError(f"{path}: unknown key {key!r}" +
                           (f"; did you mean {close[0]!r}?" if close else ""))
        if hints[key] is dict:
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise NMTError(f"{path}: {key} must be a mapping, got {value!r}")
            values[key] = value
        else:
            values[key] = coerce(value, hints[key], key, str(path))
    cmp = Comparison(**values)
    for key in ("examples", "heatmaps"):
        if getattr(cmp, key) < 0:
            raise NMTError(f"{path}: {key} must be >= 0, got {getattr(cmp, key)}")
    if cmp.seeds < 1:
        raise NMTError(f"{path}: seeds must be >= 1, got {cmp.seeds}")
    edges = cmp.length_buckets
    if any(e <= 0 for e in edges) or any(a >= b for a, b in zip(edges, edges[1:])):
        raise NMTError(f"{path}: length_buckets must be increasing positive lengths, got "
                       f"{edges}")
    return cmp


def load_comparison(path: str | Path, overrides: list[str] | None = None,
                    seeds: int | None = None) -> Comparison:
    """Load and check a whole comparison recipe, every system's resolved recipe included, so
    that no mistake in it shows only after training; `overrides` (section.key=value) apply to
    every system, `seeds` (--seeds) replaces the recipe's."""
    path = Path(path)
    cmp = _typed(read_yaml(path), path)
    if seeds is not None:
        if seeds < 1:
            raise NMTError(f"--seeds must be >= 1, got {seeds}")
        cmp.seeds = seeds
    cmp.name = cmp.name or path.stem
    if not cmp.systems:
        raise NMTError(f"{path}: no systems listed under `systems:`")
    base = cmp.base or {}
    given = _given_data(cmp, path, overrides or [])
    for name, spec in cmp.systems.items():
        where = f"{path}: systems.{name}"
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise NMTError(f"{where}: a system name becomes a directory name; use letters, "
                           f"digits, '.', '_' and '-' (not starting with '.' or '-')")
        spec = spec or {}
        if not isinstance(spec, dict):
            raise NMTError(f"{where}: expected a mapping with `recipe:` and/or `set:`")
        bad = set(spec) - {"recipe", "set"}
        if bad:
            raise NMTError(f"{where}: unknown key {sorted(bad)[0]!r}; use `recipe:` and/or `set:`")
        values = copy.deepcopy(base)
        if "recipe" in spec:
            if not isinstance(spec["recipe"], str):
                raise NMTError(f"{where}: recipe must be a file name, got {spec['recipe']!r}")
            values = _merge(values, read_yaml(path.parent / spec["recipe"]))
        own = (spec.get("set") or {}).get("data") if isinstance(spec.get("set"), dict) else None
        for key, value in (own or {}).items() if isinstance(own, dict) else ():
            if key in given and given[key][0] != value:
                raise NMTError(f"{where}: set: data.{key} is {value!r}, but the comparison's "
                               f"{given[key][1]} gives data.{key} {given[key][0]!r}; every system "
                               f"trains and is scored on the comparison's data: remove one")
        values = _merge(values, spec.get("set") or {})
        if given:  # the comparison's data over the system's own recipe file
            values = _merge(values, {"data": {k: v for k, (v, _) in given.items()}})
        values = _merge(values, cmp.overrides or {})
        values.setdefault("name", name)
        r = recipe_from_dict(values, where=where, overrides=list(overrides or []))
        r.name = name
        cmp.recipes[name] = r
    first = next(iter(cmp.recipes.values()))
    for name, r in cmp.recipes.items():
        for section in SHARED:
            if getattr(r, section) != getattr(first, section):
                raise NMTError(f"{path}: system {name!r} changes `{section}`; every system must "
                               f"share data and tokenizer (and eval: how BLEU is scored), or "
                               f"their BLEU scores do not compare")
    if not first.data.test:
        raise NMTError(f"{path}: data.test lists no test split; a comparison scores at least one")
    if cmp.baseline not in cmp.recipes:
        raise NMTError(f"{path}: baseline {cmp.baseline!r} is not one of the systems "
                       f"({', '.join(cmp.recipes)})")
    for name in cmp.recipes:
        for sr in seed_runs(cmp, name)[1:]:
            if sr.dir in cmp.recipes:
                raise NMTError(f"{path}: system {sr.dir!r} has the directory of {name!r}'s "
                               f"seed {sr.k} (seeds: {cmp.seeds}); rename it")
    return cmp


def _given_data(cmp: Comparison, path: Path, overrides: list[str]) -> dict:
    """data field -> (value, where the comparison gives it) for every data field given by the
    comparison, from lowest to highest priority."""
    sets = [o for o in overrides if o.strip().startswith("data.")]
    given: dict = {}
    for what, values in (("base", (cmp.base or {}).get("data")), ("data:", cmp.data),
                         ("overrides", (cmp.overrides or {}).get("data")),
                         ("--set/--data", apply_overrides({}, sets).get("data"))):
        if values is None:
            continue
        if not isinstance(values, dict):
            raise NMTError(f"{path}: {what.rstrip(':')} data must be a mapping of data fields, "
                           f"got {values!r}")
        given.update({k: (v, what) for k, v in values.items()})
    return given


@dataclass
class SeedRun:
    """One training run of a system: the K-th of its `seeds`."""
    system: str     # the system's name
    k: int          # 0 .. seeds-1
    dir: str        # under systems/: NAME for K = 0 (a one-seed comparison's layout), NAME-seedK
    recipe: Recipe  # the system's recipe, train.seed + K


def seed_runs(cmp: Comparison, name: str) -> list[SeedRun]:
    """The runs of system `name`: K = 0 is its recipe as written, in systems/NAME/ (so a
    one-seed comparison is laid out as it always was, and adding seeds keeps it); run K > 0
    trains with train.seed + K, everything else equal, in systems/NAME-seedK/."""
    runs = [SeedRun(name, 0, name, cmp.recipes[name])]
    for k in range(1, cmp.seeds):
        r = copy.deepcopy(cmp.recipes[name])
        r.train.seed += k
        r.name = f"{name}-seed{k}"
        runs.append(SeedRun(name, k, r.name, r))
    return runs


# ----------------------------------------------------------------------------- what is stale

def _pick(r: Recipe | dict, keep) -> dict:
    """The flattened recipe fields for which keep(key) holds. data.path is compared as an
    absolute path (a run records it so; the comparison's recipe may give it relative)."""
    got = {k: v for k, v in flat(r if isinstance(r, dict) else to_dict(r)).items() if keep(k)}
    if got.get("data.path") and Path(got["data.path"]).exists():
        got["data.path"] = os.path.abspath(got["data.path"])
    return got


def _training_key(r: Recipe | dict) -> dict:
    key = _pick(r, lambda k: not k.startswith(NOT_TRAINING))
    # validation scores with the tokenizer `auto` stands for: the same tokenizer named outright
    # is the same training
    if "eval.tokenize" in key:
        key["eval.tokenize"] = resolve_tokenize(key["eval.tokenize"], key["data.tgt_lang"])
    return key


def build_tokenizer(first: Recipe, tok_dir: Path, heldout: Path | None = None) -> None:
    """The comparison's shared tokenizer, trained on the first system's training split, with
    the settings it was built from (settings.json: what later runs check it against)."""
    console.print(f"[bold]tokenizer[/] building on "
                  f"{escape(f'{first.data.source}:{first.data.train}')}")
    train = load_split(first.data, first.data.train, limit=first.data.max_train_pairs,
                       heldout=heldout)
    Tokenizer.train(train.src, train.tgt, tok_dir, first.tokenizer,
                    log=lambda line: console.print(f"[bold]tokenizer[/] {escape(line)}"))
    (tok_dir / layout.TOKENIZER_SETTINGS).write_text(json.dumps(_tokenizer_key(first), indent=2))
    (tok_dir / layout.DATA_RECORD).write_text(json.dumps({"train": identity.of_corpus(train)}))


def _tokenizer_key(r: Recipe | dict) -> dict:
    return _pick(r, lambda k: k.startswith(TOKENIZER_KEYS))


def _before_auto(old: dict, new: dict) -> dict:
    """old (what was built or trained) as the fields added since would have recorded it: a
    record without tokenizer.sample_sentences trained on every sentence, and its
    character_coverage 1.0 is what `auto` chooses for the Latin-script corpora nmt handled then;
    both count as what is asked now, so that finished comparisons stay reusable."""
    old = dict(old)
    if "tokenizer.sample_sentences" not in old and "tokenizer.sample_sentences" in new:
        old["tokenizer.sample_sentences"] = new["tokenizer.sample_sentences"]
        if old.get("tokenizer.character_coverage") == 1.0 \
                and new.get("tokenizer.character_coverage") == "auto":
            old["tokenizer.character_coverage"] = "auto"
    return old


def _changes(old: dict, new: dict) -> str:
    old = _before_auto(old, new)
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return "; ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys)


def _stale_tokenizer(tok_dir: Path, r: Recipe) -> str | None:
    """Why the shared tokenizer in tok_dir is not the one r asks for (None: it is, or none)."""
    settings = tok_dir / layout.TOKENIZER_SETTINGS
    if not any(tok_dir.glob("*.model")):
        return None
    if settings.is_file():
        built = json.loads(settings.read_text())
    else:  # written before settings.json existed: a system's resolved recipe records them
        trained = sorted(layout.ComparisonDir(tok_dir.parent).systems.glob(f"*/{layout.RECIPE}"))
        if not trained:
            return "it was built without a record of its settings"
        built = _tokenizer_key(read_yaml(trained[0]))
        settings.write_text(json.dumps(built, indent=2))
    # a field added since it was built counts at its default, which is what it was built with
    return _changes(_tokenizer_key(Recipe()) | built, _tokenizer_key(r)) or \
        _data_changed(tok_dir, r, ("train",))


def _data_identity(dc, split: str) -> dict:
    """The content identity of a split of dc as it is now: of its files (their digests are
    remembered, nmt/identity.py), or of its text where it has none (a hub dataset)."""
    paths = split_paths(dc, split)
    if paths:
        return identity.of_files(paths)
    limit = dc.max_train_pairs if split == dc.train else dc.max_valid_pairs
    return identity.of_corpus(load_split(dc, split, limit=limit))


def _data_changed(d: Path, r: Recipe, splits=("train", "valid")) -> str | None:
    """"data changed: train.en" when the data recorded in d (data.json: what a run or the
    shared tokenizer was made from) differs from r's now; None when it is the same, or when d
    has no record (made before data.json existed)."""
    try:
        recorded = json.loads((d / layout.DATA_RECORD).read_text())
    except (OSError, ValueError):
        return None
    names = {"train": r.data.train, "valid": r.data.valid}
    for split in splits:
        if split in recorded:
            what = identity.changed(recorded[split], _data_identity(r.data, names[split]))
            if what:
                return f"data changed: {what}"
    return None


def _stale_system(run_dir: Path, r: Recipe, tok_dir: Path) -> str | None:
    """Why the run in run_dir is not what r asks for (None: it is, or there is no run yet)."""
    saved = run_dir / layout.RECIPE
    if not saved.is_file() or not (run_dir / layout.LAST).is_file():
        return None  # nothing trained yet (a start without a checkpoint is simply redone)
    # read as a Recipe, so that a field added since the run was trained counts at its default,
    # which is what the run trained with (as `nmt train --resume` reads it)
    try:
        raw = read_yaml(saved)
        # a run trained before the eval section existed validated with 13a, whatever its target
        raw.setdefault("eval", {"tokenize": "13a"})
        if isinstance(raw.get("tokenizer"), dict):  # recorded before sample_sentences existed?
            raw["tokenizer"] = _before_auto(
                {f"tokenizer.{k}": v for k, v in raw["tokenizer"].items()}, _tokenizer_key(r))
            raw["tokenizer"] = {k.split(".", 1)[1]: v for k, v in raw["tokenizer"].items()}
        trained = recipe_from_dict(raw, where=str(saved))
    except NMTError as e:
        return f"its recipe cannot be read any more: {e}"
    change = _changes(_training_key(trained), _training_key(r))
    if change:
        return change
    # test sets are not part of training, except held out of its corpus: more or other held-out
    # splits leave another training part (and new test pairs it may have trained on)
    if held_out(trained.data) != held_out(r.data):
        return (f"the splits held out of its corpus changed ({', '.join(held_out(trained.data))}"
                f" -> {', '.join(held_out(r.data))}), and with them its training part")
    if _tokenizer_files(run_dir / layout.TOKENIZER) != _tokenizer_files(tok_dir):
        return "it was trained with another tokenizer"
    return _data_changed(run_dir, r)


def _tokenizer_files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.glob("*.model"))}


def _decode_key(r: Recipe, src: list[str]) -> dict:
    """What a hypothesis file was decoded from and how; it is reused only for the same key."""
    digest = hashlib.sha256("\n".join(src).encode("utf-8")).hexdigest()
    return {"decode": to_dict(r.decode), "source_sha256": digest, "lines": len(src)}


def _fresh_hyp(hyp: Path, key: dict) -> bool:
    info = layout.decoding_record(hyp)
    if not (hyp.is_file() and info.is_file()):
        return False
    saved = json.loads(info.read_text())
    if "decode" in saved:
        # a decode field added since counts at the value the file was decoded with: its
        # default then (float32 search, before decode.amp existed)
        saved["decode"] = {**to_dict(DecodeConfig()), **DECODED_BEFORE, **saved["decode"]}
        same = all(_decoding(saved.get(k)) == _decoding(v) for k, v in key.items())
    else:  # written before the key was recorded: its beam and size are all there is to check
        same = saved.get("beam") == key["decode"]["beam"] and saved.get("sentences") == key["lines"]
    return same and len(read_lines(hyp)) == key["lines"]


def _decoding(value):
    """A decode key's "decode" mapping without NOT_DECODING; any other value as it is."""
    if not isinstance(value, dict):
        return value
    return {k: v for k, v in value.items() if k not in NOT_DECODING}


# ----------------------------------------------------------------------------- the run

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
    stale_tok = _stale_tokenizer(tok_dir, first)
    stale: dict[str, str] = {}  # run directory -> what changed since it was trained
    for sr in todo if not stale_tok else []:
        why = _stale_system(where.system(sr.dir), sr.recipe, tok_dir)
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
    tok = Tokenizer.load(tok_dir)

    if jobs > 1 and len(todo) > 1:
        _side_by_side(todo, out, tok_dir, tests, stale, device, jobs)
    else:
        for i, sr in enumerate(todo, 1):
            head = f"[bold][{i}/{len(todo)}] {sr.dir}[/]"
            _train_and_decode(sr, where.system(sr.dir), tok_dir, tests, stale.get(sr.dir),
                              head, device, quiet)

    results = collect(cmp, out, tests)
    where.results.write_text(json.dumps(results, indent=2))
    report.write(cmp, out, results, tests, tok)
    console.print(f"[bold green]report:[/] {escape(str(where.report))}")
    return results


def _side_by_side(todo: list[SeedRun], out: Path, tok_dir: Path, tests: dict,
                  stale: dict[str, str], device: str, jobs: int) -> None:
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
                sr = waiting.pop(0)
                log = layout.ComparisonDir(out).system_log(sr.dir)
                log.parent.mkdir(parents=True, exist_ok=True)
                p = ctx.Process(target=_run_alone, name=sr.dir, args=(
                    sr, threads, layout.ComparisonDir(out).system(sr.dir), tok_dir, tests,
                    stale.get(sr.dir),
                    device, log))
                p.start()
                running[p.sentinel] = (p, sr, log, time.time())
                console.print(f"{sr.dir}: started ({threads} CPU thread{'s' * (threads > 1)}; "
                              f"output in {escape(str(log))})")
            for s in multiprocessing.connection.wait(list(running)):
                p, sr, log, t0 = running.pop(s)
                p.join()
                if p.exitcode == 0:
                    console.print(f"{sr.dir}: done in {(time.time() - t0) / 60:.1f} min")
                    continue
                lines = read_lines(log) if log.is_file() else []
                last = next((x.strip() for x in reversed(lines) if x.strip()), "no output")
                if p.exitcode != 2:  # not an error the run reported itself: a crash, a kill
                    last = f"ended with exit status {p.exitcode} after: {last}"
                failed.append(f"{sr.dir}: {last} (all of it in {log})")
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


def _run_alone(sr: SeedRun, threads: int, run_dir: Path, tok_dir: Path, tests: dict,
               stale: str | None, device: str, log: Path) -> None:
    """A child process of _side_by_side: one run, its output into `log`, an error as its last
    line and exit status 2."""
    os.setsid()  # a terminal's Ctrl-C reaches the parent only, which passes it on once
    _die_with_parent()
    fd = _open_log(log, sr.dir)
    os.dup2(fd, 1)
    os.dup2(fd, 2)  # torch's and Python's output alike
    if not sr.recipe.train.threads:
        sr = dataclasses.replace(sr, recipe=copy.deepcopy(sr.recipe))
        sr.recipe.train.threads = threads
    try:
        _train_and_decode(sr, run_dir, tok_dir, tests, stale, sr.dir, device, quiet=True)
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


def _train_and_decode(sr: SeedRun, run_dir: Path, tok_dir: Path, tests: dict,
                      stale: str | None, head: str, device: str, quiet: bool) -> None:
    """One run of a system: trained (or resumed, or skipped when done.json says it finished),
    then every test set decoded unless its hypotheses are already what is asked for. `stale`:
    why the run there is for another recipe (it is trained again)."""
    r = sr.recipe
    done = run_dir / layout.DONE
    if stale:
        why = stale if stale.startswith("data changed") else f"recipe changed ({stale})"
        console.print(f"{head}: {escape(why)}: training again")
        done.unlink(missing_ok=True)
    if done.is_file():
        console.print(f"{head}: trained already, skipping")
    else:
        resume = not stale and (run_dir / layout.LAST).is_file()
        console.print(f"{head}: {'resuming' if resume else 'training'}")
        if device != "auto":
            r.train.device = device
        summary = training.train(r, run_dir, resume=resume, overwrite=bool(stale),
                                 quiet=quiet, tokenizer=Tokenizer.load(tok_dir),
                                 heldout_dir=layout.ComparisonDir.of_system(run_dir).heldout)
        if summary.get("interrupted"):
            raise NMTError(f"interrupted while training {sr.dir}; run the same command again "
                           "to resume")
        summary["device"] = _device_name(resolve_device(r.train.device),
                                         summary.get("threads"))
        summary["seed"] = r.train.seed
        done.write_text(json.dumps(summary, indent=2, default=str))
    for split, corpus in tests.items():
        hyp = layout.hypotheses(run_dir, split)
        key = _decode_key(r, corpus.src)
        if not stale and _fresh_hyp(hyp, key):
            continue
        console.print(f"{head}: decoding {split} (beam {r.decode.beam})")
        _decode(run_dir, corpus.src, hyp, device, r, key)


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
    layout.decoding_record(hyp).write_text(json.dumps(info, indent=2))


def _device_name(dev: torch.device, threads: int | None = None) -> str:
    """The report's device column; on the CPU with the threads the work used (not this
    process's setting now: training and decoding set their own)."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    n = threads or torch.get_num_threads()
    return f"cpu ({n} thread{'s' * (n != 1)})"


# ----------------------------------------------------------------------------- scoring

def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / layout.METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def quantile_edges(src: list[str], bins: int, unit: str = "words") -> list[int]:
    """Source-length edges (in `unit`: evaluation.length_unit) that split `src` into `bins`
    buckets of about equal size.

    Multi30k captions are short: fixed edges leave a handful of sentences in the top buckets,
    whose BLEU then swings by many points. Equal-count buckets hold ~len/bins sentences each
    (ties at an edge make them somewhat uneven); an edge that would repeat is dropped."""
    lengths = sorted(sentence_length(s, unit) for s in src)
    edges: list[int] = []
    for k in range(1, bins):
        e = lengths[round(k * len(lengths) / bins)] if lengths else 0
        if e > (edges[-1] if edges else lengths[0]):
            edges.append(e)
    return edges


def length_buckets(src: list[str], edges: list[int],
                   unit: str = "words") -> list[tuple[str, list[int]]]:
    """Group sentence indices by source length in `unit` (evaluation.length_unit): [<e0,
    e0-e1, ..., >=eN]."""
    bounds = [0, *edges, math.inf]
    out = []
    for lo, hi in zip(bounds, bounds[1:]):
        label = f"<{hi}" if lo == 0 else f"{lo}+" if hi == math.inf else \
            f"{lo}" if hi == lo + 1 else f"{lo}-{hi - 1}"
        idx = [i for i, s in enumerate(src) if lo <= sentence_length(s, unit) < hi]
        if idx:
            out.append((label, idx))
    return out


def design(r) -> str:
    """What a system's decoder does with the source: the part that differs *because it is the
    method* (the report prints it beside the parameter counts); its family's or attention
    kind's line in registry.py."""
    return model_design(r.model)


def collect(cmp: Comparison, out: Path, tests: dict) -> dict:
    """Everything the report shows, as plain data (results.json). With one seed a system's
    entry is its run's; with several, the same keys hold the aggregate over the seeds (means,
    *_sd the sample standard deviations, the learning curve with its band) and `seeds` lists
    each run's own numbers."""
    first = next(iter(cmp.recipes.values()))
    tokenize, lowercase = scoring(first)  # shared by every system (SHARED)
    unit = length_unit(first.data.src_lang)
    # how every BLEU and chrF below was scored; the signatures say it too
    ev = {"tokenize": tokenize, "lowercase": lowercase, "length_unit": unit}
    results: dict = {"name": cmp.name, "baseline": cmp.baseline, "seeds": cmp.seeds,
                     "eval": ev, "systems": {}, "tests": {}, "left_out": {}}
    hyps: dict[str, dict[str, list[list[str]]]] = {}  # split -> system -> hypotheses per seed
    for name in cmp.recipes:
        runs = [_run_result(sr, out, tests, results["left_out"], ev) for sr in seed_runs(cmp, name)]
        finished = [x for x in runs if x is not None]
        if len(finished) < len(runs):  # a system is scored once every seed of it is
            if finished:
                results["left_out"][name] = f"{len(finished)} of {len(runs)} seeds finished"
            continue
        splits = [split for split in tests if all(split in x["hyps"] for x in runs)]
        for split in splits:
            hyps.setdefault(split, {})[name] = [x["hyps"][split] for x in runs]
        edges = {split: cmp.length_buckets or quantile_edges(tests[split].src, cmp.length_bins,
                                                             unit) for split in splits}
        if len(runs) == 1:
            sys = runs[0]["result"]
            for split in splits:
                sys["tests"][split]["by_length"] = _by_length(
                    [runs[0]["hyps"][split]], tests[split], edges[split], ev)
        else:
            sys = _aggregate([x["result"] for x in runs], splits)
            for split in splits:
                runs_hyps = [x["hyps"][split] for x in runs]
                interval = seed_interval(runs_hyps, tests[split].tgt, tokenize, lowercase)
                sys["tests"][split]["ci"] = interval["ci"]
                sys["tests"][split]["by_length"] = _by_length(runs_hyps, tests[split],
                                                              edges[split], ev)
        results["systems"][name] = sys
    for split, by_sys in hyps.items():
        info: dict = {"n": len(tests[split].src)}
        if cmp.baseline in by_sys and len(by_sys) > 1:
            others = {n: h for n, h in by_sys.items() if n != cmp.baseline}
            refs = [tests[split].tgt]
            if cmp.seeds == 1:
                info["bootstrap"] = paired_bootstrap(by_sys[cmp.baseline][0],
                                                     {n: h[0] for n, h in others.items()},
                                                     refs, baseline_name=cmp.baseline,
                                                     tokenize=tokenize, lowercase=lowercase)
            else:
                info["bootstrap"] = seed_bootstrap(by_sys[cmp.baseline], others, refs,
                                                   baseline_name=cmp.baseline,
                                                   tokenize=tokenize, lowercase=lowercase)
            info["test"] = "paired bootstrap" if cmp.seeds == 1 else \
                "paired bootstrap over sentences and seeds"
        results["tests"][split] = info
    return results


def _run_result(sr: SeedRun, out: Path, tests: dict, left_out: dict,
                ev: dict) -> dict | None:
    """One finished run's numbers: {"result": its results.json entry (no BLEU by length yet),
    "hyps": {split: hypotheses}}; None while it is not finished, or when it was trained for
    another recipe (then noted in left_out, as is a test set decoded for other settings). The
    test sets are scored now, with the scoring `ev` (collect's) asks for, from the hypothesis
    files: a change of eval.tokenize re-scores them without decoding again."""
    r, run_dir = sr.recipe, layout.ComparisonDir(out).system(sr.dir)
    done = run_dir / layout.DONE
    if not done.is_file():
        return None
    why = _stale_system(run_dir, r, layout.ComparisonDir(out).tokenizer)
    if why:  # trained for another recipe (possible with --only): never scored as this one
        left_out[sr.dir] = why
        console.print(f"[yellow]warning:[/] system {sr.dir} left out of the report: it was "
                      f"trained for another recipe ({escape(why)}); run it (--only "
                      f"{sr.system}, with --retrain) to include it")
        return None
    summary = json.loads(done.read_text())
    valid = [m for m in _metrics(run_dir) if m.get("kind") == "valid"]
    best = max(valid, key=lambda m: m.get("val_bleu", -1), default={})
    result = {"arch": r.model.arch, "attention": r.model.attention if r.model.arch == "rnn"
              else "multi-head self + cross", "design": design(r), "summary": summary,
              "val_ppl": best.get("val_ppl"), "val_bleu": best.get("val_bleu"),
              "val_chrf": best.get("val_chrf"), "val_signature": best.get("bleu_signature"),
              "curve": [{k: m.get(k) for k in ("step", "wall", "val_bleu", "val_chrf",
                                                "val_ppl")}
                        for m in valid], "tests": {}}
    hyps = {}
    for split, corpus in tests.items():
        hyp_path = layout.hypotheses(run_dir, split)
        if not _fresh_hyp(hyp_path, _decode_key(r, corpus.src)):
            if hyp_path.is_file():
                left_out[f"{sr.dir}/{split}"] = "decoded for other settings"
                console.print(f"[yellow]warning:[/] system {sr.dir}: {escape(hyp_path.name)} was "
                              f"decoded from other source lines or with other decoding "
                              f"settings; left out of {split}'s scores; run --only {sr.system} "
                              f"to decode it again")
            continue
        hyps[split] = read_lines(hyp_path)
        result["tests"][split] = score(hyps[split], [corpus.tgt], ev["tokenize"],
                                       ev["lowercase"])
        result["tests"][split]["decode"] = json.loads(
            layout.decoding_record(hyp_path).read_text())
    return {"result": result, "hyps": hyps}


def _by_length(runs: list[list[str]], corpus, edges: list[int], ev: dict) -> list[dict]:
    """BLEU per source-length bucket with its 95% bootstrap interval (of the mean over seeds,
    and the seeds' standard deviation, when there are several), scored and measured as `ev`
    (collect's) says: the buckets by source length in ev["length_unit"], BLEU with
    ev["tokenize"] (and chrF, with one seed)."""
    rows = []
    for label, idx in length_buckets(corpus.src, edges, ev["length_unit"]):
        refs = [corpus.tgt[i] for i in idx]
        bucket = [[hyps[i] for i in idx] for hyps in runs]
        row = {"bucket": label, "n": len(idx)}
        if len(runs) == 1:
            row.update(bleu_interval(bucket[0], refs, ev["tokenize"], ev["lowercase"]))
        else:
            row.update(seed_interval(bucket, refs, ev["tokenize"], ev["lowercase"]))
            row["sd"] = statistics.stdev(row["seeds"])
        rows.append(row)
    return rows


def _aggregate(runs: list[dict], splits: list[str]) -> dict:
    """A system's entry from its seeds' entries: the seeds' means under the same keys, with
    KEY_sd (sample standard deviation, n - 1 in the denominator) for the test scores and best
    validation BLEU, the learning curves merged (curve_band), and each run under `seeds`."""
    first = runs[0]
    summary = {k: v for k, v in first["summary"].items() if k not in ("run_dir", "seed")}
    for key in MEAN_OVER_SEEDS:
        if key in summary:
            summary[key] = statistics.fmean(x["summary"].get(key) or 0 for x in runs)
    agg = {k: first[k] for k in ("arch", "attention", "design")}
    agg.update(summary=summary, val_ppl=_mean_sd(runs, "val_ppl")[0],
               curve=curve_band([x["curve"] for x in runs]), tests={})
    agg["val_bleu"], agg["val_bleu_sd"] = _mean_sd(runs, "val_bleu")
    agg["val_chrf"] = _mean_sd(runs, "val_chrf")[0]
    for split in splits:
        per_seed = [x["tests"][split] for x in runs]
        t = agg["tests"][split] = {"signatures": per_seed[0]["signatures"]}
        for metric in ("bleu", "chrf", "ter"):
            t[metric], t[f"{metric}_sd"] = _mean_sd(per_seed, metric)
        t["decode"] = dict(per_seed[0]["decode"],
                           sent_per_s=statistics.fmean(p["decode"]["sent_per_s"]
                                                       for p in per_seed))
    agg["seeds"] = runs
    return agg


def _mean_sd(rows: list[dict], key: str) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of rows[*][key] (None when a row lacks it)."""
    values = [r.get(key) for r in rows]
    if any(v is None for v in values):
        return None, None
    return statistics.fmean(values), statistics.stdev(values)


def curve_band(curves: list[list[dict]]) -> list[dict]:
    """Learning curves of several seeds as one: at every step where any seed validated, the
    mean of val_bleu, val_ppl and wall time over the seeds that did (`seeds`: how many), and
    val_bleu_min / val_bleu_max, the band the figure shades."""
    by_step: dict[int, list[dict]] = {}
    for curve in curves:
        for p in curve:
            if p.get("val_bleu") is not None:
                by_step.setdefault(p["step"], []).append(p)
    band = []
    for step, pts in sorted(by_step.items()):
        bleu = [p["val_bleu"] for p in pts]
        ppl = [p["val_ppl"] for p in pts if p.get("val_ppl") is not None]
        band.append({"step": step, "wall": statistics.fmean(p["wall"] for p in pts),
                     "val_bleu": statistics.fmean(bleu), "val_ppl":
                     statistics.fmean(ppl) if ppl else None, "val_bleu_min": min(bleu),
                     "val_bleu_max": max(bleu), "seeds": len(pts)})
    return band
