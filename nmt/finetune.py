"""Fine-tuning: a new run whose weights and tokenizer start from a trained checkpoint.

Only the weights and the tokenizer come from the checkpoint; the optimizer, the learning-rate
schedule, the step count and the best score start fresh, and the data may differ (domain
adaptation). The recipe must describe the same model and the same tokenizer: a difference is
an error naming the field, since the weights would not fit (or the ids would mean other pieces).
`--resume` keeps its strict meaning: continuing one run exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nmt import checkpoint, layout
from nmt.config import Recipe, recipe_from_dict, to_dict
from nmt.errors import NMTError
from nmt.tokenizer import Tokenizer


@dataclass
class Init:
    """What a fine-tuning run takes from its checkpoint."""
    path: Path           # the checkpoint file read
    weights: dict        # its model state_dict
    tokenizer: Tokenizer
    step: int | None     # the step it was saved at, for the log


def _diff(section: str, new: dict, old: dict) -> list[str]:
    return [f"{section}.{k}: {new.get(k)!r} here, {old.get(k)!r} in the checkpoint"
            for k in sorted(new.keys() | old.keys()) if new.get(k) != old.get(k)]


def load_init(source: str | Path, recipe: Recipe) -> Init:
    """Read `source` (a run directory: its best.pt, or a .pt file) and check that `recipe`
    describes the model and tokenizer it holds."""
    ck = checkpoint.load(source)
    where = ck["path"]
    old = to_dict(recipe_from_dict(ck["recipe"], where=f"{where} (recipe)"))
    new = to_dict(recipe)
    model = _diff("model", new["model"], old["model"])
    if model:
        raise NMTError(f"--init-from {where}: the recipe describes another architecture "
                       f"({'; '.join(model)}); fine-tuning needs the model section the "
                       "checkpoint was trained with")
    vocab = _diff("tokenizer", new["tokenizer"], old["tokenizer"])
    if vocab:
        raise NMTError(f"--init-from {where}: the recipe asks for another vocabulary "
                       f"({'; '.join(vocab)}); the checkpoint's tokenizer is reused, so give the "
                       "tokenizer section it was trained with")
    return Init(where, ck["model"], Tokenizer.from_state(ck["tokenizer"]),
                layout.checkpoint_step(ck))
