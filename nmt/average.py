"""Checkpoint averaging: the element-wise mean of the weights of several checkpoints of one run.

theta_avg = (1/K) * sum_k theta_k over the last K periodic checkpoints (Vaswani et al. 2017,
Sec. 6.1 average the last 5 or 20; Junczys-Dowmunt et al. 2016). Only checkpoints of one model
can be averaged: the same architecture (the recipe's `model` section) and the same tokenizer
(the same ids mean the same pieces); anything else is refused with the difference named.

The result holds only what decoding needs (recipe, tokenizer, weights), so `translate`, `eval`
and `attention` load it like best.pt; it is not a point to --resume from.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from nmt import checkpoint, layout
from nmt.config import recipe_from_dict
from nmt.errors import NMTError
from nmt.model import build_model
from nmt.tokenizer import Tokenizer

def periodic_checkpoints(run_dir: Path, last: int) -> list[Path]:
    """The newest `last` step-N.pt files of a run directory, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NMTError(f"{run_dir}: not a run directory; give a run directory with --last K, "
                       "or the .pt files to average")
    if last < 1:
        raise NMTError(f"--last must be >= 1, got {last}")
    found = layout.periodic(run_dir)
    if len(found) < last:
        raise NMTError(f"{run_dir}: {len(found)} periodic checkpoint(s) "
                       f"({layout.PERIODIC.format(step='N')}), --last "
                       f"asks for {last}; train with train.keep_last >= {last} to keep them")
    return found[-last:]


def _model_diff(a: dict, b: dict) -> str:
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return "; ".join(f"model.{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys)


def average_checkpoints(paths: list[Path]) -> dict:
    """The payload of a checkpoint whose weights are the mean of those in `paths`.

    Floating-point tensors are averaged in float64 and cast back; integer buffers (none in the
    current models) are taken from the first checkpoint. The recipe and tokenizer are the first
    one's, checked equal on every other.
    """
    if not paths:
        raise NMTError("nothing to average: give a run directory with --last K or .pt files")
    first = checkpoint.load(paths[0])
    ref_model, ref_tok = first["recipe"]["model"], first["tokenizer"]
    total = {k: v.double() if v.is_floating_point() else v for k, v in first["model"].items()}
    step = layout.checkpoint_step(first)
    for p in paths[1:]:
        ck = checkpoint.load(p)
        step = layout.checkpoint_step(ck)
        where = f"{ck['path']} and {first['path']}"
        if ck["recipe"]["model"] != ref_model:
            raise NMTError(f"cannot average {where}: different architectures "
                           f"({_model_diff(ck['recipe']['model'], ref_model)}); average "
                           "checkpoints of one run")
        if ck["tokenizer"] != ref_tok:
            raise NMTError(f"cannot average {where}: different tokenizers (token ids mean "
                           "different pieces); average checkpoints of one run")
        state = ck["model"]
        if state.keys() != total.keys() or any(state[k].shape != total[k].shape for k in total):
            raise NMTError(f"cannot average {where}: their weights differ in names or shapes")
        for k, v in state.items():
            if v.is_floating_point():
                total[k] += v.double()
    n = len(paths)
    avg = {k: (v / n).to(first["model"][k].dtype) if v.is_floating_point() else v
           for k, v in total.items()}
    return {"recipe": first["recipe"], "tokenizer": ref_tok, "model": avg,
            "averaged_from": [str(checkpoint.resolve(p)) for p in paths], "step": step}


def average(run: Path | None, files: list[Path], last: int | None, out: Path) -> list[Path]:
    """`nmt average`: the last K periodic checkpoints of `run`, or the named files, into `out`.
    Returns the checkpoints averaged."""
    if run is not None and Path(run).suffix == ".pt":  # `nmt average a.pt b.pt -o c.pt`
        run, files = None, [Path(run), *files]
    if run is not None:
        if files:
            raise NMTError("give a run directory with --last K, or .pt files, not both")
        if last is None:
            raise NMTError(f"{run}: say how many of its last periodic checkpoints to average "
                           "with --last K")
        paths = periodic_checkpoints(run, last)
    else:
        if last is not None:
            raise NMTError("--last K takes the checkpoints of a run directory; with .pt files, "
                           "drop --last")
        paths = files
    if Path(out).suffix != ".pt":
        raise NMTError(f"-o {out}: the averaged checkpoint is a .pt file")
    if any(Path(out).resolve() == Path(p).resolve() for p in paths):
        raise NMTError(f"-o {out} is one of the checkpoints being averaged; choose another name")
    checkpoint.save(Path(out), average_checkpoints(paths), then="run nmt average again")
    return paths


def average_at_end(run_dir: Path, last: int, validate: Callable[[torch.nn.Module], dict],
                   state, log) -> dict:
    """End of training (train.average_last = K): write averaged.pt from the last K periodic
    checkpoints and validate it, so its BLEU can be read beside best.pt's.

    `validate(model) -> {"val_bleu", "val_loss", ...}` is the run's own validation; `state` the
    run's state (step, best_bleu); `log` its log (`info` lines, `record` into metrics.jsonl).
    Returns the record written (kind "average"); a run that kept fewer than K checkpoints
    averages those there are and says so.
    """
    have = layout.periodic(run_dir)
    if not have:
        log.info("average_last: no periodic checkpoint was written; nothing to average")
        return {}
    paths = have[-last:]
    payload = average_checkpoints(paths)
    checkpoint.save(Path(run_dir) / layout.AVERAGED, payload)
    recipe = recipe_from_dict(payload["recipe"], where=f"{run_dir} (recipe)")
    tok = Tokenizer.from_state(payload["tokenizer"])
    model = build_model(recipe.model, tok.src_vocab_size, tok.tgt_vocab_size, joint=tok.joint)
    model.load_state_dict(payload["model"])
    steps = [layout.step_of(p) for p in paths]
    rec = {"kind": "average", "step": state.step, "averaged_steps": steps, **validate(model),
           "best_bleu": state.best_bleu}
    log.record(rec)
    short = f" (only {len(paths)} were kept)" if len(paths) < last else ""
    log.info(f"averaged the last {len(paths)} checkpoint{'s' * (len(paths) != 1)}{short} (steps "
             f"{', '.join(map(str, steps))}) -> {layout.AVERAGED}: valid BLEU "
             f"{rec['val_bleu']:.2f}, loss {rec['val_loss']:.3f}; {layout.BEST}: BLEU "
             f"{state.best_bleu:.2f}")
    return rec
