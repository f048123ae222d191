"""Checkpoints: everything a run needs to resume, and everything `translate` needs to decode.

A checkpoint carries its resolved recipe and serialized tokenizer, so a single `.pt` file is
enough to translate. Writes are atomic (temp file in the same directory, then rename), so a crash
mid-write leaves the previous file intact.
"""
from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Any

import torch

from nmt import __version__, layout
from nmt.atomic import atomic_write
from nmt.config import Recipe, recipe_from_dict, to_dict
from nmt.errors import NMTError
from nmt.model import build_model
from nmt.tokenizer import Tokenizer

FORMAT = 1  # bump when the layout of a checkpoint changes incompatibly


def payload(recipe: Recipe, tok: Tokenizer, model: torch.nn.Module, **extra: Any) -> dict[str, Any]:
    """What every checkpoint holds (enough to translate: recipe, tokenizer, weights), plus
    `extra`; training adds its RunState and validations, and for last.pt the optimizer,
    schedule and RNG states to resume."""
    return {"recipe": to_dict(recipe), "tokenizer": tok.to_state(), "model": model.state_dict(),
            **extra}


def save(path: Path, payload: dict[str, Any], then: str = "continue with --resume") -> None:
    """Write `payload` (plus format and versions) atomically to `path`; on a full disk an
    NMTError says to free space and `then` what to do."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "nmt_version": __version__,
               "torch_version": torch.__version__, **payload}
    try:
        with atomic_write(path, binary=True) as f:
            torch.save(payload, f)
    except (OSError, RuntimeError) as e:
        # torch's zip writer turns the file's OSError into "RuntimeError: [enforce fail at
        # inline_container.cc] unexpected pos"; the OSError it met is its __context__
        cause = e if isinstance(e, OSError) else e.__context__
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = f"the previous {path.name} is kept" if path.is_file() else "nothing was written"
            raise NMTError(f"{path}: disk full while writing it ({cause.strerror}); {kept}. Free "
                           f"space (old runs, {layout.PERIODIC_GLOB} files), then {then}") \
                from None
        if isinstance(cause, OSError) and cause is not e:
            raise cause from None  # the file system's error, which the CLI reports in one line
        raise


def resolve(path: str | Path, which: str = "best") -> Path:
    """A run directory means its `best.pt` (or `last.pt` when no best exists yet); `which`
    "last" asks for its last.pt first."""
    path = Path(path)
    if path.is_dir():
        wanted = layout.CHECKPOINT[which]
        for name in (wanted, layout.BEST, layout.LAST):
            if (path / name).is_file():
                if name != wanted:
                    print(f"warning: {path} has no {wanted} (no validation finished yet?); "
                          f"using {name}", file=sys.stderr)
                return path / name
        raise NMTError(f"{path}: no checkpoint ({layout.BEST} or {layout.LAST}) in this run "
                       "directory; train first with `nmt train`")
    if not path.is_file():
        raise NMTError(f"{path}: checkpoint not found")
    return path


def load(path: str | Path, which: str = "best") -> dict[str, Any]:
    """Read a checkpoint on CPU and check that this version of nmt can use it."""
    path = resolve(path, which)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated, not a torch file, ...
        raise NMTError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e}); "
                       "it may be truncated or from another program") from None
    if not isinstance(ckpt, dict) or "format" not in ckpt:
        raise NMTError(f"{path}: not an nmt checkpoint")
    if ckpt["format"] != FORMAT:
        raise NMTError(f"{path}: checkpoint format {ckpt['format']} written by nmt "
                       f"{ckpt.get('nmt_version', '?')}; this is nmt {__version__} (format "
                       f"{FORMAT}). Use that nmt version, or retrain.")
    ckpt["path"] = path
    return ckpt


def load_for_inference(path: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode, tokenizer, recipe) from a checkpoint file or run directory."""
    ckpt = load(path)
    recipe = recipe_from_dict(ckpt["recipe"], where=f"{ckpt['path']} (recipe)")
    tok = Tokenizer.from_state(ckpt["tokenizer"])
    model = build_model(recipe.model, tok.src_vocab_size, tok.tgt_vocab_size, joint=tok.joint)
    load_weights(model, ckpt["model"], ckpt["path"])
    return model.to(device).eval(), tok, recipe


def load_weights(model: torch.nn.Module, state: dict, where: Path) -> None:
    """Load weights, turning a shape or key mismatch into an error a user can act on."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[:3]
        raise NMTError(f"{where}: weights do not fit the model its recipe describes "
                       f"({' '.join(first)}); was the recipe changed after training?") from None
