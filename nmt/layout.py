"""Where a run directory and a comparison directory keep each file: every name is spelled here.

A run directory (`nmt train --out RUN`) holds:

    RUN/last.pt            everything to resume (recipe, tokenizer, weights, optimizer, RNG, state)
    RUN/best.pt            the weights of the best validation BLEU (what translating loads)
    RUN/step-N.pt          the last.pt of step N, kept while train.keep_last > 1 (the newest K)
    RUN/averaged.pt        the mean of the last train.average_last periodic checkpoints
    RUN/recipe.yaml        the resolved recipe, readable (resume reads the one in last.pt)
    RUN/metrics.jsonl      one record per train window, validation and average
    RUN/train.log          the lines the run printed
    RUN/data.json          the content identity of its training and validation data
    RUN/tokenizer/         its SentencePiece model(s) (nmt.tokenizer's file names)
    RUN/tensorboard/       TensorBoard events (train.tensorboard)
    RUN/heldout/           valid/test pairs held out of a corpus without such splits
    RUN/shortlist.pt       the vocabulary shortlist (decode.shortlist), beside the checkpoint
    RUN/.lock, RUN/.replaced*   the run directory's lock and an --overwrite's old run (rundir.py)

A comparison directory (`nmt compare --out DIR`, ComparisonDir) holds one shared tokenizer and
held-out split, a run directory per system under systems/, and the results and report; nmt/
spells none of these names anywhere else (tests/test_layout.py checks).
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

# ----------------------------------------------------------------------------- a run directory

LAST = "last.pt"
BEST = "best.pt"
AVERAGED = "averaged.pt"
CHECKPOINT = {"last": LAST, "best": BEST}  # a run's checkpoint by what it is for (`which`)
RECIPE = "recipe.yaml"
METRICS = "metrics.jsonl"
LOG = "train.log"
DATA_RECORD = "data.json"
TOKENIZER = "tokenizer"
TENSORBOARD = "tensorboard"
HELDOUT = "heldout"
SHORTLIST = "shortlist.pt"
# the run directory's own state (rundir.py's state machine)
LOCK = ".lock"
STASH = ".replaced"  # the old run while --overwrite has not yet committed to the new one
PARTIAL = ".replaced.partial"  # the old run while its files move into or out of STASH
TRASH = ".replaced.committed"  # (+ -PID) a committed STASH, only ever deleted

PERIODIC = "step-{step}.pt"  # last.pt of step N, kept with train.keep_last > 1
PERIODIC_GLOB = "step-*.pt"
_PERIODIC = re.compile(r"step-(\d+)\.pt")


def periodic_path(run_dir: Path, step: int) -> Path:
    """Where the periodic checkpoint of `step` is kept (whether or not it exists)."""
    return Path(run_dir) / PERIODIC.format(step=step)


def step_of(path: Path) -> int | None:
    """The step a periodic checkpoint's name gives (step-120.pt: 120); None for any other name."""
    m = _PERIODIC.fullmatch(Path(path).name)
    return int(m.group(1)) if m else None


def periodic(run_dir: Path) -> list[Path]:
    """The periodic checkpoints of a run directory, oldest (lowest step) first: numerically, so
    step-1000.pt comes after step-999.pt."""
    found = [p for p in Path(run_dir).glob(PERIODIC_GLOB) if step_of(p) is not None]
    return sorted(found, key=step_of)


def keep_periodic(run_dir: Path, step: int, keep: int) -> None:
    """With keep_last K > 1, the last.pt just written is also kept as step-N.pt, and only the
    newest K periodic checkpoints stay."""
    if keep <= 1:
        return
    run_dir = Path(run_dir)
    target = periodic_path(run_dir, step)
    target.unlink(missing_ok=True)
    try:
        os.link(run_dir / LAST, target)  # last.pt is replaced, never rewritten in place
    except OSError:
        shutil.copy2(run_dir / LAST, target)
    prune_periodic(run_dir, keep)


def prune_periodic(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` periodic checkpoints."""
    for p in periodic(run_dir)[:-keep]:
        p.unlink()


def checkpoint_step(ckpt: dict) -> int | None:
    """The updates behind a loaded checkpoint: training keeps them in its RunState ("state"),
    an averaged checkpoint records its last one's ("step"); None when it says neither."""
    return ckpt.get("state", {}).get("step", ckpt.get("step"))


# ----------------------------------------------------------------------------- a comparison

SYSTEMS = "systems"
RESULTS = "results.json"
REPORT = "report.md"
REPORT_HTML = "report.html"
# beside results.json: the weights of every heatmap the report draws (too many numbers to read
# in results.json)
ATTENTION_MAPS = "attention.json"
LEARNING_CURVES = "learning_curves.png"
TOKENIZER_SETTINGS = "settings.json"  # in the shared tokenizer/: what it was built from
DONE = "done.json"  # in a system's run directory: its training finished (the summary)
HYPOTHESES = ".hyp"  # SPLIT.hyp in a system's run directory: a decoded test set


def hypotheses(run_dir: Path, split: str) -> Path:
    """A system's translations of test set `split`, one line per source line."""
    return Path(run_dir) / f"{split}{HYPOTHESES}"


def decoding_record(hyp: Path) -> Path:
    """SPLIT.json beside SPLIT.hyp: what was decoded, how, and how fast."""
    return Path(hyp).with_suffix(".json")


def length_figure(split: str) -> str:
    """The report's BLEU-by-source-length figure of `split` (a name in the comparison dir)."""
    return f"bleu_by_length_{split}.png"


def attention_figure(system: str, k: int) -> str:
    """The report's k-th (1-based) attention heatmap of `system`."""
    return f"attention_{system}_{k}.png"


@dataclass(frozen=True)
class ComparisonDir:
    """The files of one comparison directory (`nmt compare --out DIR`)."""
    root: Path

    @property
    def tokenizer(self) -> Path:
        """The tokenizer every system shares (+ TOKENIZER_SETTINGS and DATA_RECORD)."""
        return self.root / TOKENIZER

    @property
    def heldout(self) -> Path:
        """The valid/test pairs held out of a corpus without such splits, shared by every run."""
        return self.root / HELDOUT

    @property
    def systems(self) -> Path:
        return self.root / SYSTEMS

    def system(self, run: str) -> Path:
        """The run directory of a system's run (NAME, or NAME-seedK)."""
        return self.systems / run

    def hypotheses(self, run: str, split: str) -> Path:
        """The run's translations of test set `split`."""
        return hypotheses(self.system(run), split)

    def system_log(self, run: str) -> Path:
        """With --jobs: the output of the run's own process."""
        return self.systems / f"{run}.log"

    @property
    def results(self) -> Path:
        return self.root / RESULTS

    @property
    def attention_maps(self) -> Path:
        return self.root / ATTENTION_MAPS

    @property
    def report(self) -> Path:
        return self.root / REPORT

    @property
    def report_html(self) -> Path:
        return self.root / REPORT_HTML

    @staticmethod
    def of_system(run_dir: Path) -> "ComparisonDir | None":
        """The comparison a run directory belongs to (it is DIR/systems/NAME), else None."""
        run_dir = Path(run_dir)
        return ComparisonDir(run_dir.parent.parent) if run_dir.parent.name == SYSTEMS else None
