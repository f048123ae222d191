"""`nmt compare`: RNN vs RNN+attention vs attention-only, end to end, in one resumable command.

A comparison recipe names `systems`, each a recipe file and/or `set:` overrides. A system's
recipe is, from lowest to highest priority: the comparison's `base`, the system's `recipe:` file,
its `set:`, the comparison's `overrides`, and `--set` from the command line. The work is laid out so
that re-running after an interruption loses nothing already done:

    DIR/tokenizer/                    built once, shared by every system
    DIR/systems/NAME/                 a normal `nmt train` run directory (+ done.json when finished)
    DIR/systems/NAME/SPLIT.hyp        decoded test sets (+ SPLIT.json: decoding time)
    DIR/results.json, DIR/report.md, DIR/*.png
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from nmt import report, training
from nmt.checkpoint import load_for_inference
from nmt.config import apply_overrides, read_yaml, recipe_from_dict
from nmt.data import load_split
from nmt.distributed import resolve_device
from nmt.errors import NMTError
from nmt.evaluation import bleu_interval, paired_bootstrap, score
from nmt.prediction import translate_lines
from nmt.tokenizer import Tokenizer

console = Console(stderr=True)
SHARED = ("data", "tokenizer")  # sections every system must share, or BLEU is not comparable


@dataclass
class Comparison:
    name: str = ""                  # title of the report; defaults to the file name
    baseline: str = "no-attention"  # system the attention systems are tested against
    examples: int = 5               # test sentences shown from every system beside the reference
    heatmaps: int = 3               # test sentences whose attention is drawn for every system
    length_bins: int = 5            # BLEU by length: buckets at source-length quantiles
    length_buckets: list[int] = field(default_factory=list)  # or explicit edges, in source words
    base: dict = field(default_factory=dict)      # recipe sections under every system's own
    overrides: dict = field(default_factory=dict)  # recipe sections over every system's own
    systems: dict = field(default_factory=dict)   # NAME -> {recipe: FILE, set: {overrides}}
    recipes: dict = field(default_factory=dict)   # NAME -> resolved Recipe (filled on load)


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in (b or {}).items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) \
            else copy.deepcopy(v)
    return out


def load_comparison(path: str | Path, overrides: list[str] | None = None) -> Comparison:
    """Load a comparison recipe; `overrides` (section.key=value) apply to every system."""
    path = Path(path)
    raw = read_yaml(path)
    names = [f.name for f in dataclasses.fields(Comparison) if f.name != "recipes"]
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            raise NMTError(f"{path}: unknown key {key!r}" +
                           (f"; did you mean {close[0]!r}?" if close else ""))
    cmp = Comparison(**{k: raw[k] for k in raw})
    cmp.name = cmp.name or path.stem
    if not cmp.systems:
        raise NMTError(f"{path}: no systems listed under `systems:`")
    base = cmp.base or {}
    for name, spec in cmp.systems.items():
        spec = spec or {}
        where = f"{path}: systems.{name}"
        bad = set(spec) - {"recipe", "set"}
        if bad:
            raise NMTError(f"{where}: unknown key {sorted(bad)[0]!r}; use `recipe:` and/or `set:`")
        values = copy.deepcopy(base)
        if "recipe" in spec:
            values = _merge(values, read_yaml(path.parent / spec["recipe"]))
        values = _merge(values, spec.get("set") or {})
        values = _merge(values, cmp.overrides or {})
        values = apply_overrides(values, list(overrides or []))
        values.setdefault("name", name)
        r = recipe_from_dict(values, where=where)
        r.name = name
        cmp.recipes[name] = r
    first = next(iter(cmp.recipes.values()))
    for name, r in cmp.recipes.items():
        for section in SHARED:
            if getattr(r, section) != getattr(first, section):
                raise NMTError(f"{path}: system {name!r} changes `{section}`; every system must "
                               f"share data and tokenizer, or their BLEU scores do not compare")
    if cmp.baseline not in cmp.recipes:
        raise NMTError(f"{path}: baseline {cmp.baseline!r} is not one of the systems "
                       f"({', '.join(cmp.recipes)})")
    return cmp


# ----------------------------------------------------------------------------- the run

def run(cmp: Comparison, out: Path, only: list[str] | None = None, device: str = "auto",
        quiet: bool = False) -> dict:
    """Tokenizer once, then train -> decode -> score each system, then the report."""
    out.mkdir(parents=True, exist_ok=True)
    names = list(cmp.recipes)
    for n in only or []:
        if n not in cmp.recipes:
            raise NMTError(f"--only {n}: no such system; choose from {', '.join(names)}")
    todo = [n for n in names if not only or n in only]
    first = cmp.recipes[names[0]]

    tok_dir = out / "tokenizer"
    if not any(tok_dir.glob("*.model")):
        console.print(f"[bold]tokenizer[/] building on {first.data.source}:{first.data.train}")
        train = load_split(first.data, first.data.train, limit=first.data.max_train_pairs)
        Tokenizer.train(train.src, train.tgt, tok_dir, first.tokenizer)
    tok = Tokenizer.load(tok_dir)

    tests = {s: load_split(first.data, s, limit=first.data.max_test_pairs) for s in first.data.test}
    for i, name in enumerate(todo, 1):
        r = cmp.recipes[name]
        run_dir = out / "systems" / name
        done = run_dir / "done.json"
        head = f"[bold][{i}/{len(todo)}] {name}[/]"
        if done.is_file():
            console.print(f"{head}: trained already, skipping")
        else:
            resume = (run_dir / "last.pt").is_file()
            console.print(f"{head}: {'resuming' if resume else 'training'}")
            if device != "auto":
                r.train.device = device
            # a run killed before its first checkpoint left nothing to resume: start it afresh
            summary = training.train(r, run_dir, resume=resume, overwrite=not resume,
                                     quiet=quiet, tokenizer_dir=tok_dir)
            if summary.get("interrupted"):
                raise NMTError(f"interrupted while training {name}; run the same command again "
                               "to resume")
            summary["device"] = _device_name(resolve_device(r.train.device))
            done.write_text(json.dumps(summary, indent=2, default=str))
        for split, corpus in tests.items():
            hyp = run_dir / f"{split}.hyp"
            if hyp.is_file() and \
                    len(hyp.read_text(encoding="utf-8").splitlines()) == len(corpus.src):
                continue
            console.print(f"{head}: decoding {split} (beam {r.decode.beam})")
            _decode(run_dir, corpus.src, hyp, device)

    results = collect(cmp, out, tests)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    report.write(cmp, out, results, tests, tok)
    console.print(f"[bold green]report:[/] {out / 'report.md'}")
    return results


def _decode(run_dir: Path, src: list[str], hyp: Path, device: str) -> None:
    dev = resolve_device(device)
    model, tok, recipe = load_for_inference(run_dir, dev)
    t0 = time.perf_counter()
    lines = translate_lines(model, tok, src, recipe.decode, dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    hyp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    info = {"seconds": seconds, "sentences": len(src), "sent_per_s": len(src) / seconds,
            "device": _device_name(dev), "beam": recipe.decode.beam}
    hyp.with_suffix(".json").write_text(json.dumps(info, indent=2))


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({torch.get_num_threads()} threads)"


# ----------------------------------------------------------------------------- scoring

def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def quantile_edges(src: list[str], bins: int) -> list[int]:
    """Source-length edges (words) that split `src` into `bins` buckets of about equal size.

    Multi30k captions are short: fixed edges leave a handful of sentences in the top buckets,
    whose BLEU then swings by many points. Equal-count buckets hold ~len/bins sentences each
    (ties at an edge make them somewhat uneven); an edge that would repeat is dropped."""
    lengths = sorted(len(s.split()) for s in src)
    edges: list[int] = []
    for k in range(1, bins):
        e = lengths[round(k * len(lengths) / bins)] if lengths else 0
        if e > (edges[-1] if edges else lengths[0]):
            edges.append(e)
    return edges


def length_buckets(src: list[str], edges: list[int]) -> list[tuple[str, list[int]]]:
    """Group sentence indices by source length in words: [<e0, e0-e1, ..., >=eN]."""
    bounds = [0, *edges, math.inf]
    out = []
    for lo, hi in zip(bounds, bounds[1:]):
        label = f"<{hi}" if lo == 0 else f"{lo}+" if hi == math.inf else \
            f"{lo}" if hi == lo + 1 else f"{lo}-{hi - 1}"
        idx = [i for i, s in enumerate(src) if lo <= len(s.split()) < hi]
        if idx:
            out.append((label, idx))
    return out


def design(r) -> str:
    """What a system's decoder does with the source: the part that differs *because it is the
    method* (the report prints it beside the parameter counts)."""
    m = r.model
    if m.arch == "transformer":
        return f"{m.dec_layers} layers of self- and cross-attention, {m.heads} heads; no recurrence"
    if m.attention == "none":
        return "fixed context: the encoder summary c, into the RNN and the readout at every step"
    if m.attention == "bahdanau":
        return "attends from s_{i-1} (before the RNN step); c_i into the RNN and the readout"
    feed = "; ~h_t fed back (input feeding)" if m.input_feeding else ""
    return f"attends from h_t (after the RNN step), {m.attention.removeprefix('luong-')} " \
           f"score; readout ~h_t = tanh(W_c [c_t; h_t]){feed}"


def collect(cmp: Comparison, out: Path, tests: dict) -> dict:
    """Everything the report shows, as plain data (results.json)."""
    results: dict = {"name": cmp.name, "baseline": cmp.baseline, "systems": {}, "tests": {}}
    hyps: dict[str, dict[str, list[str]]] = {}
    for name, r in cmp.recipes.items():
        run_dir = out / "systems" / name
        done = run_dir / "done.json"
        if not done.is_file():
            continue
        summary = json.loads(done.read_text())
        valid = [m for m in _metrics(run_dir) if m.get("kind") == "valid"]
        best = max(valid, key=lambda m: m.get("val_bleu", -1), default={})
        sys = {"arch": r.model.arch, "attention": r.model.attention if r.model.arch == "rnn"
               else "multi-head self + cross", "design": design(r), "summary": summary,
               "val_ppl": best.get("val_ppl"), "val_bleu": best.get("val_bleu"),
               "curve": [{k: m.get(k) for k in ("step", "wall", "val_bleu", "val_ppl")}
                         for m in valid], "tests": {}}
        for split, corpus in tests.items():
            hyp_path = run_dir / f"{split}.hyp"
            if not hyp_path.is_file():
                continue
            hyp = hyp_path.read_text(encoding="utf-8").splitlines()
            hyps.setdefault(split, {})[name] = hyp
            scores = score(hyp, [corpus.tgt])
            scores["decode"] = json.loads(hyp_path.with_suffix(".json").read_text())
            edges = cmp.length_buckets or quantile_edges(corpus.src, cmp.length_bins)
            scores["by_length"] = [
                {"bucket": label, "n": len(idx),
                 **bleu_interval([hyp[i] for i in idx], [corpus.tgt[i] for i in idx])}
                for label, idx in length_buckets(corpus.src, edges)]
            sys["tests"][split] = scores
        results["systems"][name] = sys
    for split, by_sys in hyps.items():
        info: dict = {"n": len(tests[split].src)}
        if cmp.baseline in by_sys and len(by_sys) > 1:
            others = {n: h for n, h in by_sys.items() if n != cmp.baseline}
            info["bootstrap"] = paired_bootstrap(by_sys[cmp.baseline], others, [tests[split].tgt],
                                                 baseline_name=cmp.baseline)
        results["tests"][split] = info
    return results
