"""Following a run while it trains: plain progress lines for logs, and TensorBoard events.

The progress bar needs a terminal; under nohup, a cluster job or `> log` it shows nothing
between validations. There, training prints a plain line every `train.progress_every` updates
and/or every `train.progress_seconds` seconds instead (also into train.log):

    step 1,200/30,000 epoch 3 loss 3.214 lr 4.1e-04 12,345 tok/s elapsed 0:12:03 eta 4:48:00

The ETA assumes the updates still to come take as long as this session's have so far.

TensorBoard (an optional extra: pip install 'nmt[tensorboard]'): with `train.tensorboard` on
and the package installed, RUN_DIR/tensorboard/ gets the records of metrics.jsonl as scalars
(train loss, lr, tok/s; validation loss, perplexity, BLEU) and, at each validation, the
attention heatmap of one validation sentence.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import matplotlib.image

from nmt import layout
from nmt.plots import heatmaps, sentence_attention


def clock(seconds: float) -> str:
    """H:MM:SS."""
    s = int(round(max(seconds, 0.0)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ProgressLines:
    """Writes a progress line when `every` updates or `seconds` seconds have passed since the
    last one (either may be 0 = not that trigger); does nothing when not `enabled`."""

    def __init__(self, total: int, every: int, seconds: float, enabled: bool,
                 write: Callable[[str], None], now: Callable[[], float] = time.monotonic):
        self.total, self.every, self.seconds = total, every, seconds
        self.enabled = enabled and (every > 0 or seconds > 0)
        self.write, self.now = write, now
        self.first_step: int | None = None
        self.start = self.last_time = now()
        self.last_step = 0

    def __call__(self, step: int, epoch: int, loss: float, lr: float, tok_per_s: float,
                 elapsed: float) -> str | None:
        """Called after every update; returns the line written, if any. `elapsed`: wall
        seconds of the whole run (earlier sessions included)."""
        if not self.enabled:
            return None
        t = self.now()
        if self.first_step is None:  # this session's first update (the clock runs since
            self.first_step = self.last_step = step - 1  # construction, just before it)
        due = (self.every and step - self.last_step >= self.every) or \
            (self.seconds and t - self.last_time >= self.seconds)
        if not due:
            return None
        self.last_step, self.last_time = step, t
        done = step - self.first_step
        eta = (self.total - step) * (t - self.start) / done if done > 0 else 0.0
        # no update limit (a run stopped by time alone): neither a total nor an ETA to show
        of = f"/{self.total:,}" if self.total else ""
        line = (f"step {step:,}{of} epoch {epoch} loss {loss:.3f} lr {lr:.1e} "
                f"{tok_per_s:,.0f} tok/s elapsed {clock(elapsed)}"
                + (f" eta {clock(eta)}" if self.total else ""))
        self.write(line)
        return line


class TensorBoardLog:
    """Scalars and attention heatmaps for TensorBoard; inactive (every method a no-op) when
    not asked for or when tensorboard is not installed."""

    SCALARS = {"train": ("loss", "lr", "tok_per_s"), "valid": ("val_loss", "val_ppl", "val_bleu",
                                                                 "val_chrf")}

    def __init__(self, out_dir: Path, enabled: bool | str, warn: Callable[[str], None]):
        """enabled: train.tensorboard (True, False or "auto": only if installed, silently)."""
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional: nothing to write with
            if enabled is True:  # asked for explicitly, so say why nothing comes
                warn("train.tensorboard is true but tensorboard is not installed (pip install "
                     "'nmt[tensorboard]'); no event files are written")
            return
        self.dir = Path(out_dir) / layout.TENSORBOARD
        self.writer = SummaryWriter(str(self.dir))

    def record(self, rec: dict) -> None:
        """One metrics.jsonl record (kind train or valid) as scalars train/... valid/..."""
        if self.writer is None or rec.get("kind") not in self.SCALARS:
            return
        for key in self.SCALARS[rec["kind"]]:
            if key in rec:
                self.writer.add_scalar(f"{rec['kind']}/{key}", rec[key], rec["step"])
        self.writer.flush()

    def attention(self, model, tok, text: str, step: int) -> None:
        """The attention heatmap of one validation sentence at this step."""
        if self.writer is None:
            return
        was_training = model.training
        model.eval()  # no dropout: the picture is the model's, and no RNG draw moves training
        try:
            src, hyp, maps, _ = sentence_attention(model, tok, text)
        finally:
            model.train(was_training)
        if not maps:  # a model without attention
            return
        # one map keeps this cheap (~0.3 s): the RNN's, or the Transformer's last layer with
        # its heads averaged (`nmt attention` draws every layer and head)
        averaged = [k for k in maps if "heads averaged" in k]
        name = averaged[-1] if averaged else next(iter(maps))
        maps = {name: maps[name]}
        with tempfile.TemporaryDirectory() as tmp:
            png = Path(tmp) / "attention.png"
            heatmaps(maps, src, hyp, png, title=text)
            image = matplotlib.image.imread(png)[..., :3]  # (H, W, 3) floats in [0, 1]
        self.writer.add_image("valid/attention", image, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
