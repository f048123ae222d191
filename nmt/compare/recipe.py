"""A comparison recipe: the `Comparison` its YAML is read into, every system's resolved recipe,
and the seed runs each system is trained as.

A system's recipe is, from lowest to highest priority: the comparison's `base`, the system's
`recipe:` file, its `set:`, the comparison's `overrides`, and `--set` from the command line.
Data is the exception, as every system must train and be scored on the same data: whatever data
the comparison gives (its `data:`, `base: {data: ...}`, `overrides: {data: ...}`, `--set
data.*`, `--data`) wins over every system's recipe file, and a system's `set:` that gives
another value for it is refused. Everything is checked on loading, so that no mistake in a
comparison shows only after hours of training.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from nmt.config import Recipe, apply_overrides, coerce, read_yaml, recipe_from_dict
from nmt.errors import NMTError

# sections every system must share, or BLEU is not comparable
SHARED = ("data", "tokenizer", "eval")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a system name is also a directory name


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
