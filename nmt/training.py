"""Training: a `Trainer` that does one update, one validation or one checkpoint at a time, and a
loop that reads top to bottom (nanoGPT style), from a recipe to best.pt.

Objective: label-smoothed cross-entropy (Szegedy et al. 2016; Vaswani et al. 2017, Sec. 5.4) over
the non-pad target tokens, divided by the number of target tokens in the whole update (every
micro-batch of every rank), so gradient accumulation and data parallelism both give exactly the
gradient of one big batch. Learning rate: linear warm-up then inverse square root decay (Vaswani
et al. 2017, Eq. 3, rescaled so that train.lr is the peak), reduce-on-plateau on validation BLEU
or loss, or constant.

Resuming is exact: an epoch's batch list is a pure function of (seed, epoch) (batching.py), and a
checkpoint records how many of its batches were consumed plus every RNG state, so a run killed at
any point and resumed from last.pt ends with the same weights as one never interrupted: bit for bit
on the CPU, and on CUDA with train.deterministic (README, Guarantees; _reseed_rnn_dropout keeps
cuDNN's own RNN dropout state in step).
"""
from __future__ import annotations

import inspect
import json
import math
import random
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeRemainingColumn)

from nmt import checkpoint, identity, layout, rundir
from nmt import distributed as dist
from nmt import graphs
from nmt.average import average_at_end
from nmt.batching import BATCHERS, Batch, Prefetch, collate
from nmt.config import Recipe, TrainConfig, save_recipe
from nmt.data import (Corpus, absolute_data, cached_train, encode_pairs, encode_train,
                      held_out, holdout, load_split, pair_lengths, split_paths, store_train,
                      tokenizer_cache_dir)
from nmt.identity import write_json_atomic
from nmt.errors import NMTError
from nmt.evaluation import score, scoring
from nmt.model import build_model
from nmt.prediction import teacher_forced_loss, translate_lines
from nmt.seq2seq import count_parameters
from nmt.live import ProgressLines, TensorBoardLog
from nmt.special import PAD
from nmt.tokenizer import Tokenizer

Pairs = list[tuple[list[int], list[int]]]
# an epoch's batches: (src_lens, tgt_lens, batch_tokens, seed, epoch) -> index lists into the pairs
Batcher = Callable[[list[int], list[int], int, int, int], list[list[int]]]


@dataclass
class RunState:
    """Where a run stands; saved in every checkpoint, restored on --resume."""
    step: int = 0                   # optimizer updates done
    epoch: int = 1                  # epoch in progress (1-based)
    batch_in_epoch: int = 0         # batches of this epoch's list already consumed
    best_bleu: float = -1.0
    bad_validations: int = 0        # validations since BLEU last improved (early stopping)
    last_valid_step: int = -1
    elapsed: float = 0.0            # wall seconds over all sessions of this run
    train_time: float = 0.0         # of which spent in updates (not validation)
    tokens: int = 0                 # target tokens trained on
    valid_pending: bool = False     # a stop signal abandoned this step's validation: redo it


class Abandoned(Exception):
    """A stop signal (Ctrl-C, SIGTERM) arrived during a validation: it is given up at the next
    decoding batch, so the run stops within seconds, not after the whole validation set."""


@dataclass
class UpdateResult:
    """What one call of Trainer.update did."""
    loss: float          # label-smoothed loss summed over this rank's target tokens
    tokens: int          # target tokens (incl. EOS) in this rank's batches
    update_tokens: int   # target tokens in the whole update, every rank's batches
    lr: float            # the learning rate the update used
    skipped: bool        # non-finite loss or gradient norm on some rank: no update was made
    stop: bool           # Ctrl-C on some rank: stop after this update
    seconds: float
    out_of_time: bool = False  # train.max_minutes is spent: stop after this update


@dataclass
class RunFiles:
    """What validating and checkpointing need beyond the model: the run's recipe, tokenizer,
    validation split and directory. bench/ runs a Trainer without one (updates only)."""
    recipe: Recipe
    tok: Tokenizer
    out_dir: Path
    log: RunLog
    valid_corpus: Corpus
    valid_pairs: Pairs


def sequence_loss(logits: torch.Tensor, tgt_out: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Label-smoothed cross-entropy summed over non-pad target positions (the caller divides)."""
    return F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD,  # (B*T, V)
                           label_smoothing=smoothing, reduction="sum")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of train.lr for update `step` (1-based). inverse_sqrt: Vaswani et al. 2017,
    Eq. 3, d_model^-0.5 * min(s^-0.5, s * w^-1.5) divided by its peak value at s = w."""
    if cfg.schedule != "inverse_sqrt":
        return 1.0
    w = max(cfg.warmup, 1)
    if step <= w:
        return step / w
    return max((w / step) ** 0.5, cfg.min_lr / cfg.lr)


def _finished(st: RunState, cfg: TrainConfig, out_of_time: bool = False) -> str | None:
    """Why the run should stop now, if it should (checked before every update). `out_of_time`:
    the last update found train.max_minutes spent (every rank agrees on it)."""
    if cfg.max_steps and st.step >= cfg.max_steps:
        return f"reached max_steps={cfg.max_steps}"
    if cfg.max_epochs and st.epoch > cfg.max_epochs:
        return f"reached max_epochs={cfg.max_epochs}"
    if out_of_time:
        return f"reached max_minutes={cfg.max_minutes:g}"
    if cfg.patience and st.bad_validations >= cfg.patience:
        return f"early stopping: no BLEU gain in {cfg.patience} validations"
    return None


# ----------------------------------------------------------------------------- the run

def train(recipe: Recipe | None, out_dir: Path, resume: bool = False, overwrite: bool = False,
          quiet: bool = False, tokenizer: Tokenizer | None = None,
          batcher: Batcher | None = None, init_weights: dict | None = None,
          heldout_dir: Path | None = None, overrides: list[str] | None = None) -> dict:
    """Train `recipe` into `out_dir`; returns a summary (best_bleu, steps, time, tokens/s, ...).

    Run under torchrun for data parallelism: every rank computes the same batch list and takes
    its share of each update; rank 0 alone validates and writes files. `tokenizer`: use this
    one (a comparison's shared tokenizer, a fine-tuned checkpoint's) instead of training one;
    the run directory gets its copy. `batcher` makes an epoch's batches instead of
    train.batching's (bench/ swaps in JoeyNMT's to compare toolkits). `init_weights`: start
    from these weights instead of a random initialisation (fine-tuning, finetune.py).
    `heldout_dir`: where the valid/test pairs held out of a corpus without such splits are
    written (default out_dir/heldout; compare shares one).

    `resume`: continue out_dir from its last.pt, which is read once, under the directory's
    lock. The recipe is the one stored there, with the RESUMABLE fields of `recipe` (`nmt
    compare`) or, with `recipe` None, of the `overrides` (`nmt train --resume --set ...`).
    """
    out_dir = Path(out_dir)
    if resume and overwrite:
        raise NMTError("--resume continues the run in --out, --overwrite replaces it; pick one")
    if (recipe is None and not resume) or (overrides and recipe is not None):
        raise ValueError("train() takes a recipe, or resume=True with overrides of the "
                         "run's own recipe")
    main = dist.is_main_process()
    if resume and main:
        rundir.resumable(out_dir)  # a clear error before the lock creates the directory
    # a recipe known now: its device and scoring are checked before the directory is claimed;
    # a resumed run's own recipe is known once its last.pt is read
    d = _setup(recipe) if recipe is not None else None
    threads = torch.get_num_threads()
    try:
        with dist.kept_determinism(), rundir.claim(out_dir, resume, overwrite,
                                                   active=main) as run:
            ckpt = rundir.read_last(out_dir) if resume else None
            if ckpt is not None:
                recipe = _resumed_recipe(out_dir, ckpt, recipe, overrides)
            if d is None:
                d = _setup(recipe)
            trainer = _start(recipe, out_dir, ckpt, tokenizer, d, batcher, run, init_weights,
                             heldout_dir)
            return _loop(trainer, quiet)
    finally:
        torch.set_num_threads(threads)  # a caller (tests, compare) keeps its own setting
        if d is not None:
            dist.cleanup(d)


def _setup(recipe: Recipe) -> dist.Dist:
    """This process's place in the run (rank, device); a package eval.tokenize needs and lacks
    is an error now, not at the first validation."""
    scoring(recipe)
    return dist.setup(recipe.train.device)


def _resumed_recipe(out_dir: Path, ckpt: dict, recipe: Recipe | None,
                    overrides: list[str] | None) -> Recipe:
    """The recipe a resumed run continues with: the one in its last.pt (`ckpt`), with the
    RESUMABLE fields `recipe` or `overrides` change (rundir.resume_recipe)."""
    if recipe is None:
        return rundir.resume_recipe(out_dir, overrides, ckpt=ckpt)
    saved_tok = ckpt["recipe"].get("tokenizer") or {}
    if "sample_sentences" not in saved_tok and saved_tok.get("character_coverage") == 1.0 \
            and recipe.tokenizer.character_coverage == "auto":
        # a run from before `auto` recorded the 1.0 that auto chooses for its Latin text
        recipe = replace(recipe, tokenizer=replace(recipe.tokenizer, character_coverage=1.0))
    return rundir.resume_recipe(out_dir, recipe=recipe, ckpt=ckpt)


def _loop(t: Trainer, quiet: bool) -> dict:
    """Updates until a stopping rule fires, validating and writing last.pt on the way."""
    st, cfg = t.state, t.cfg
    # Ctrl-C or SIGTERM: finish the update, save, stop
    restore_signals = rundir.catch_stop_signals(t.interrupted)
    window, stop, batches = _Window(), None, []
    # no terminal for the bar (nohup, a job, `> log`): plain lines, also into train.log
    lines = t.progress_lines(quiet)
    try:
        with t.progress(quiet) as bar:
            # a validation a stop signal abandoned is done first, as the stopped run would have
            if st.valid_pending:
                t.validate()
            # one pass per epoch (or the rest of the epoch a resumed run was in)
            while stop is None and not (stop := _finished(st, cfg)):
                # the epoch's batch list, a pure function of (seed, epoch): the same on resume
                batches = t.epoch_batches(st.epoch)
                stream = t.prefetch(batches, st.batch_in_epoch)
                while st.batch_in_epoch < len(batches):
                    # the next update's batches, over all ranks; counted as consumed up front
                    group = batches[st.batch_in_epoch:st.batch_in_epoch + t.per_update]
                    st.batch_in_epoch += len(group)
                    # forward, backward, clip, step (or skip an update with a non-finite loss)
                    res = t.update(group, stream)
                    window.add(res)
                    bar.update(bar.task_ids[0], completed=st.step, epoch=st.epoch, lr=res.lr,
                               tps=window.tok_per_s, loss=window.mean_loss)
                    if not res.skipped:
                        lines(st.step, st.epoch, window.mean_loss, res.lr, window.tok_per_s,
                              time.time() - t.t_start)
                        # a train record in metrics.jsonl every log_every updates
                        if st.step % cfg.log_every == 0:
                            t.record_train(window, res.lr)
                            window = _Window()
                        # validate every valid_every updates (0: at the epoch's end, below)
                        validated = cfg.valid_every > 0 and st.step % cfg.valid_every == 0
                        if validated:
                            t.validate()
                        # last.pt every checkpoint_every updates (0: after each validation)
                        if cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0 or \
                                not cfg.checkpoint_every and validated:
                            t.save("last")
                    # stop on Ctrl-C (any rank) or a stopping rule, else the next update
                    stop = "interrupted" if res.stop else _finished(st, cfg, res.out_of_time)
                    if stop:
                        break
                else:
                    # the epoch's batches are used up: validate (if per epoch, and not done on
                    # resuming, just above), next epoch
                    if not cfg.valid_every and st.last_valid_step != st.step:
                        t.validate()
                    st.epoch, st.batch_in_epoch = st.epoch + 1, 0
                    if not cfg.checkpoint_every and not cfg.valid_every:
                        t.save("last")
            # a last validation, so that best.pt has seen the final weights
            if stop != "interrupted" and st.last_valid_step != st.step:
                t.validate()
    except Abandoned:  # a stop signal during a validation: last.pt says to redo it
        stop = "interrupted"
    finally:
        restore_signals()
        t.files.log.tensorboard.close()
    # last.pt holds the final state (an interrupted run resumes from it)
    t.save("last")
    # the mean of the last K periodic checkpoints, validated beside best.pt
    if cfg.average_last and t.d.main and stop != "interrupted":
        restore_signals = rundir.catch_stop_signals(t.interrupted)
        try:
            t.average_last()
        except Abandoned:
            stop = "interrupted"
            t._info(f"stopped while validating {layout.AVERAGED}; {layout.LAST} and "
                    f"{layout.BEST} are complete, and --resume averages and validates again")
        finally:
            restore_signals()
    return t.finish(stop, len(batches))


def _start(recipe: Recipe, out_dir: Path, ckpt: dict | None, tokenizer: Tokenizer | None,
           d: dist.Dist, batcher: Batcher | None, run: rundir.RunDir,
           init_weights: dict | None = None, heldout_dir: Path | None = None) -> Trainer:
    """In the claimed run directory (a fresh run, or the recipe and last.pt `ckpt` of the one
    being resumed): load the data, build the model, commit the claim: a ready Trainer."""
    resume = ckpt is not None
    # the recipe records where the data is as an absolute path, so that the run can be resumed
    # from any directory (data that moved: --set data.path=NEW, checked by content identity)
    recipe = replace(recipe, data=absolute_data(recipe.data))
    dist.barrier(d)
    cfg, device = recipe.train, d.device
    log = RunLog(out_dir, d.main)
    log.tensorboard = TensorBoardLog(out_dir, d.main and cfg.tensorboard, log.warn)
    if cfg.deterministic:  # before the first matrix multiply: torch reads the cuBLAS setting once
        dist.use_deterministic_algorithms(device)
    if d.main:
        save_recipe(recipe, out_dir / layout.RECIPE)
    threads = cfg.threads or max(1, dist.cpu_count() // d.local_world)
    torch.set_num_threads(threads)
    if device.type == "cuda":  # TF32 tensor cores for the float32 matmuls autocast leaves
        torch.set_float32_matmul_precision("high")
    where = f"{threads} thread{'s' if threads > 1 else ''}" if device.type == "cpu" else ""
    where += f"{', ' if where else ''}{d.world} ranks" if d.world > 1 else ""
    where += f"{', ' if where else ''}deterministic algorithms" if cfg.deterministic else ""
    where += f"{', ' if where else ''}bf16 autocast" if dist.uses_bf16(cfg.amp, device) else ""
    log.info(f"{'resuming' if resume else 'training'} {recipe.name or 'recipe'} in {out_dir} on "
             f"{device}" + (f" ({where})" if where else ""))
    tok, train_pairs, valid_corpus, valid_pairs, data_ids = _load_data(
        recipe, out_dir, ckpt, tokenizer, d, log, heldout_dir)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model = build_model(recipe.model, tok.src_vocab_size, tok.tgt_vocab_size,
                        joint=tok.joint).to(device)
    if init_weights is not None and ckpt is None:
        checkpoint.load_weights(model, init_weights, Path("--init-from"))
    if d.rank:  # same initial weights everywhere, but each rank its own dropout masks
        torch.manual_seed(cfg.seed + d.rank)
    log.info(f"model: {_describe(recipe)}, {count_parameters(model):,} parameters")
    run.commit()  # data and model are ready: only now may --overwrite drop the old run
    if d.main and (not resume or not (out_dir / layout.DATA_RECORD).is_file()):
        write_json_atomic(out_dir / layout.DATA_RECORD, data_ids)  # what this run is trained on
    files = RunFiles(recipe, tok, out_dir, log, valid_corpus, valid_pairs)
    return Trainer(model, cfg, train_pairs, d, files=files, ckpt=ckpt, batcher=batcher)


def _load_data(recipe: Recipe, out_dir: Path, ckpt: dict | None, tokenizer: Tokenizer | None,
               d: dist.Dist, log: RunLog, heldout_dir: Path | None = None
               ) -> tuple[Tokenizer, Pairs, Corpus, Pairs, dict]:
    """The tokenizer (the checkpoint's, the one given, or trained now), then the filtered
    training pairs (from the encoded-corpus cache when this data, tokenizer and these settings
    were encoded before: the training text is then not even read) and every validation pair,
    and the identity of both splits (checked against the run's record on --resume)."""
    dc = recipe.data
    # a corpus without valid/test splits: the held-out pairs, written by rank 0 alone
    heldout = (heldout_dir or out_dir / layout.HELDOUT) if d.main else None
    if held_out(dc):
        log.info(holdout(dc, heldout).summary())
    valid_corpus = load_split(dc, dc.valid, limit=dc.max_valid_pairs, heldout=heldout)
    train_corpus = None
    paths = split_paths(dc, dc.train)  # the files the training split is read from, if any
    if ckpt is not None:
        tok = Tokenizer.from_state(ckpt["tokenizer"])
    elif tokenizer is not None:
        tok = tokenizer
        if d.main:
            tok.save(out_dir / layout.TOKENIZER)
    else:
        # trained on this data with these settings before (another run, another system): the
        # same tokenizer from the cache, without reading the training text
        cached = tokenizer_cache_dir(identity.of_files(paths), recipe.tokenizer, dc) \
            if paths else None
        if d.main and cached is not None and cached.is_dir():
            tok = Tokenizer.load(cached)
            tok.save(out_dir / layout.TOKENIZER)
            log.info(f"tokenizer: trained on this data with these settings already ({cached})")
            for line in tok.notes:
                log.info(line)
        elif d.main:
            train_corpus = load_split(dc, dc.train, limit=dc.max_train_pairs, heldout=heldout)
            tok = Tokenizer.train(train_corpus.src, train_corpus.tgt, out_dir / layout.TOKENIZER,
                                  recipe.tokenizer, log=log.info)
            cached = tokenizer_cache_dir(identity.of_corpus(train_corpus), recipe.tokenizer, dc)
            identity.store_dir(cached, tok.save)
        dist.barrier(d)
        tok = Tokenizer.load(out_dir / layout.TOKENIZER)
    train_id = identity.of_files(paths) if paths and train_corpus is None else None
    hit = cached_train(train_id, tok, dc) if train_id else None
    if hit is None:
        if train_corpus is None:
            train_corpus = load_split(dc, dc.train, limit=dc.max_train_pairs, heldout=heldout)
        train_id = identity.of_corpus(train_corpus)
        hit = cached_train(train_id, tok, dc)
    if hit is not None:
        train_pairs, report, train_name = hit
        log.info(f"training pairs: encoded already ({len(train_pairs):,} pairs, from the cache "
                 f"in {identity.cache_root()})")
    else:
        train_pairs, report = encode_train(train_corpus, tok, dc)
        train_name = train_corpus.name
        why = store_train(train_pairs, report, train_name, train_id, tok, dc) if d.main else None
        if why:
            log.warn(f"the encoded training pairs could not be cached ({why}); the next start "
                     f"encodes them again")
    del train_corpus  # the text is not needed any more: only the encoded arrays stay
    valid_pairs, _ = encode_pairs(valid_corpus, tok, dc, train=False)
    data_ids = {"train": train_id, "valid": identity.of_corpus(valid_corpus)}
    if ckpt is not None:
        _same_data(out_dir, data_ids)
    log.info(f"train {train_name}: {report.total:,} pairs, kept {report.kept:,} "
             f"(dropped {report.empty} with an empty side, {report.too_long} longer than "
             f"{dc.max_len} tokens, {report.bad_ratio} with length ratio > {dc.max_ratio:g}); "
             f"valid {valid_corpus.name}: {len(valid_pairs):,} pairs; vocab "
             f"{tok.src_vocab_size:,}/{tok.tgt_vocab_size:,}" + (" (joint)" if tok.joint else ""))
    if not len(train_pairs):
        raise NMTError(f"{train_name}: no training pairs left after filtering; check "
                       f"data.max_len / data.max_ratio and that the files hold text")
    if not valid_pairs:
        raise NMTError(f"{valid_corpus.name}: the validation split is empty")
    return tok, train_pairs, valid_corpus, valid_pairs, data_ids


def _same_data(out_dir: Path, now: dict) -> None:
    """--resume continues on the data the run was trained on, wherever it lies now: the same
    content (by identity), or one clear error naming the files that differ."""
    try:
        recorded = json.loads((out_dir / layout.DATA_RECORD).read_text())
    except (OSError, ValueError):
        return  # a run from before data.json: nothing to check against (written at commit)
    diffs = [f"{split}: {identity.changed(recorded[split], now[split])}"
             for split in ("train", "valid")
             if split in recorded and not identity.same(recorded[split], now[split])]
    if diffs:
        raise NMTError(f"--resume: {out_dir} was trained on other data than data.path names "
                       f"now ({'; '.join(diffs)} differ from {out_dir / layout.DATA_RECORD}); "
                       f"resume with the data it was trained on (--set data.path=...), or train "
                       f"a new run in another --out")


@dataclass
class _Window:
    """Training figures since the last train record (what the progress bar and log show)."""
    loss: float = 0.0
    tokens: int = 0
    update_tokens: int = 0
    seconds: float = 0.0

    def add(self, r: UpdateResult) -> None:
        self.seconds += r.seconds
        if not r.skipped:
            self.loss += r.loss
            self.tokens += r.tokens
            self.update_tokens += r.update_tokens

    @property
    def mean_loss(self) -> float:
        return self.loss / max(self.tokens, 1)

    @property
    def tok_per_s(self) -> float:
        return self.update_tokens / max(self.seconds, 1e-9)


# ----------------------------------------------------------------------------- the trainer

class Trainer:
    """Model, optimizer, schedule and RunState, and the three things a run is made of: one
    update, one validation, one checkpoint (JoeyNMT's TrainManager, minGPT's Trainer).

    `model` is built (and seeded) by the caller and already on `d.device`; `ckpt` (a last.pt)
    restores weights, optimizer, schedule, state and RNG. Without `files` the trainer only
    updates (bench/ times updates this way): validate and save need a run directory.
    `amp` None follows train.amp (dist.uses_bf16); `compile` wraps the model in
    torch.compile(dynamic=True). train.cuda_graphs: micro-batches padded to bucket shapes and
    replayed as CUDA graphs (nmt/graphs.py), on one CUDA device only.
    """

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, train_pairs: Pairs,
                 d: dist.Dist | None = None, files: RunFiles | None = None,
                 ckpt: dict | None = None, batcher: Batcher | None = None,
                 amp: bool | None = None, compile: bool = False):
        self.model, self.cfg, self.pairs, self.files = model, cfg, train_pairs, files
        self.batcher = batcher or BATCHERS[cfg.batching]
        self.d = d or dist.Dist(device=next(model.parameters()).device)
        self.device = self.d.device
        self.optimizer, self.scheduler = _optimizer(model, cfg, self.device)
        self.state = RunState()
        self.valid_records: list[dict] = []
        self.bad_steps = 0                     # non-finite updates in a row
        self.interrupted = threading.Event()   # Ctrl-C/SIGTERM: every rank stops after the update
        self.bf16 = dist.uses_bf16(cfg.amp, self.device) if amp is None else amp
        self.amp = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)
        self.src_lens, self.tgt_lens = pair_lengths(train_pairs)  # (N,) int64 arrays
        self.n_tok = self.tgt_lens + 1  # target tokens incl. EOS, as the loss counts
        self.per_update = self.d.world * cfg.accum_steps  # batches in one update, over all ranks
        if ckpt is not None:
            self._restore(ckpt)
        self.net = self._wrap(compile)
        self.graphs: graphs.GraphedSteps | None = None
        self.no_graphs_reason: str | None = None  # why a capture failed, if one did
        why_not = graphs.unavailable(cfg.cuda_graphs, self.device, self.d.world, compile)
        if why_not is None:
            self.graphs = self.graphed_steps()
        elif cfg.cuda_graphs is True:  # asked for outright: say why there are none
            self._warn(f"train.cuda_graphs is true, but {why_not}: updates run without graphs")
        self.t_start = time.time() - self.state.elapsed
        upe = -(-len(self.epoch_batches(1)) // self.per_update)
        self.total = min((x for x in (cfg.max_steps, cfg.max_epochs * upe) if x > 0), default=0)
        limits = [f"{self.total:,} updates"] if self.total else []
        limits += [f"{cfg.max_minutes:g} minutes"] if cfg.max_minutes else []
        self._info(f"{upe:,} updates per epoch ({cfg.batch_tokens:,} tokens x {self.per_update} "
                   f"batches); training for {' or '.join(limits)} at most")

    # ---- one update

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The batches (index lists into the training pairs) of `epoch`, every rank's."""
        cfg = self.cfg
        return self.batcher(self.src_lens, self.tgt_lens, cfg.batch_tokens, cfg.seed, epoch)

    def _micro(self, group: list[list[int]]) -> list[tuple[list[int], float]]:
        """This rank's micro-batches of an update on `group` (every rank's batches), with their
        weights: group[rank::world]; at an epoch's end some ranks run short of batches and
        repeat one at weight 0, so every rank joins every gradient all-reduce."""
        d = self.d
        mine = group[d.rank::d.world]
        n_micro = -(-len(group) // d.world)
        return [(b, 1.0) for b in mine] + [(group[0], 0.0)] * (n_micro - len(mine))

    def prefetch(self, batches: list[list[int]], start: int = 0) -> Prefetch:
        """This rank's micro-batches (with weights) of the updates on batches[start:], in the
        order `update` reads them, collated and moved to the device; on a GPU the next one is
        prepared while the current update runs. Collating draws no random numbers, so reading
        ahead changes nothing a resumed run depends on."""
        groups = (batches[i:i + self.per_update]
                  for i in range(start, len(batches), self.per_update))
        return Prefetch((m for g in groups for m in self._micro(g)), self._collate, self.device)

    def _collate(self, micro: tuple[list[int], float]) -> Batch:
        """A micro-batch's Batch, padded to its bucket shape while CUDA graphs run updates."""
        batch = collate(self.pairs, micro[0])
        return batch if self.graphs is None else self.graphs.pad(batch)

    def update(self, group: list[list[int]], stream: Prefetch | None = None) -> UpdateResult:
        """One optimizer update on `group`, the update's batches over all ranks: this rank
        accumulates the gradients of group[rank::world], the loss divided by the target tokens
        of the whole group. A non-finite loss or gradient norm skips the update (a run survives
        an occasional overflow); train.max_bad_steps of them in a row stop the run. `stream`
        (Trainer.prefetch) delivers the batches, the next one prepared early; None: this
        group's batches are collated here.

        The host reads from the device once per update (each read waits for the GPU to get
        there): the gradient norm and the loss together, which decide whether to step."""
        t0 = time.time()
        d, cfg, st = self.d, self.cfg, self.state
        ntok = sum(int(self.n_tok[b].sum()) for b in group)
        micro = self._micro(group)
        if stream is None:
            stream = Prefetch(micro, self._collate, self.device)
        loss_sum = torch.zeros((), device=self.device)
        for j, (idx, weight) in enumerate(micro):
            (got, _), batch = next(stream)
            if got is not idx:
                raise RuntimeError("the batch stream is out of step with the updates")
            sync = d.world == 1 or j == len(micro) - 1  # all-reduce on the last only
            loss_sum += self._backward(batch, weight, ntok, sync) * weight
            stream.ahead()  # the host prepares the next batch while the GPU runs this one
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_norm or math.inf)
        norm, loss = torch.stack([norm.float(), loss_sum.float()]).tolist()
        # train.max_minutes counts wall time since the run began, over all its sessions; the
        # flags make every rank stop after the same update even if their clocks differ
        spent = cfg.max_minutes > 0 and time.time() - self.t_start >= cfg.max_minutes * 60
        bad, stop, spent = dist.any_flags(d, not (math.isfinite(norm) and math.isfinite(loss)),
                                          self.interrupted.is_set(), spent)
        lr = self.optimizer.param_groups[0]["lr"]
        # graphs add into gradients at fixed addresses: zeroed in place, never freed
        free = self.graphs is None
        if bad:
            self.optimizer.zero_grad(set_to_none=free)
            self._skipped()
        else:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=free)
            if cfg.schedule != "plateau":
                self.scheduler.step()
            st.step += 1
            st.tokens += ntok
            self.bad_steps = 0
        dt = time.time() - t0
        st.train_time += dt
        return UpdateResult(
            loss=loss, tokens=sum(int(self.n_tok[b].sum()) for b, w in micro if w),
            update_tokens=ntok, lr=lr, skipped=bad, stop=stop, seconds=dt, out_of_time=spent)

    def _backward(self, batch: Batch, weight: float, ntok: int, sync: bool) -> torch.Tensor:
        """Forward and backward of one micro-batch, its loss scaled by weight / ntok; returns
        its summed loss (detached). `sync`: all-reduce the gradients now (DDP). With CUDA graphs
        the padded batch's graph does it (the loss scaled through a tensor, so one graph serves
        every update); a shape that cannot be captured turns them off for the rest of the run."""
        if self.graphs is not None:
            try:
                return self.graphs.backward(batch, weight * self.d.world / ntok)
            except Exception as e:  # whatever a capture refuses, the eager pass can do
                self._no_graphs(e)
        with nullcontext() if sync else self.net.no_sync():
            with self.amp:
                logits, _ = self.net(batch.src, batch.src_len, batch.tgt_in,
                                     attention=False)  # (B, T, V)
                loss = sequence_loss(logits, batch.tgt_out, self.cfg.label_smoothing)
            # DDP averages gradients over ranks: the world factor makes it a sum
            (loss * (weight * self.d.world / ntok)).backward()
        return loss.detach()

    def graphed_steps(self, capture: bool = True) -> graphs.GraphedSteps:
        """CUDA graphs of this trainer's micro-batch pass: the model's summed loss under the
        run's autocast, whose weight cache is off (a graph must not hold casts made at capture).
        capture=False: the same padded pass, run eagerly (the CPU tests check it so)."""
        amp = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16,
                             cache_enabled=False)

        def loss(src, src_len, tgt_in, tgt_out):
            with amp:
                logits, _ = self.model(src, src_len, tgt_in, attention=False)  # (B, T, V)
                return sequence_loss(logits, tgt_out, self.cfg.label_smoothing)
        return graphs.GraphedSteps(self.model, loss, self.device, capture=capture)

    def _no_graphs(self, e: Exception) -> None:
        """A batch shape could not be captured: one warning, eager updates from now on (this
        micro-batch included; the gradients of the update's earlier ones are kept)."""
        why = (str(e).strip().splitlines() or [""])[0][:200]
        self.no_graphs_reason = f"{type(e).__name__}: {why}"
        self._warn(f"CUDA graphs: capturing an update failed ({self.no_graphs_reason}); "
                   f"training goes on without them (train.cuda_graphs: false skips trying)")
        self.graphs = None

    def _skipped(self) -> None:
        """Count a skipped update; too many in a row mean the run diverged."""
        self.bad_steps += 1
        st, cfg = self.state, self.cfg
        self._warn(f"step {st.step + 1}: non-finite loss or gradient norm; update skipped "
                   f"({self.bad_steps} of at most {cfg.max_bad_steps} in a row)")
        if self.bad_steps < cfg.max_bad_steps:
            return
        last = self.files.out_dir / layout.LAST if self.files else None
        saved = (f"{last} holds the last good checkpoint" if last and last.is_file() else
                 "no checkpoint was written yet")
        raise NMTError(f"{self.bad_steps} updates in a row had a non-finite loss or gradient "
                       f"(step {st.step + 1}, epoch {st.epoch}); training stopped. {saved}. "
                       f"Lower train.lr, raise train.warmup or set train.clip_norm, then start "
                       f"again (or --resume)")

    # ---- validation and checkpoints

    def validate(self) -> dict:
        """Validate (rank 0; the others wait and then decide alike): early-stopping count,
        plateau schedule, best.pt when BLEU improved, a valid record. Returns the record."""
        t0 = time.time()
        d, st, cfg, f = self.d, self.state, self.cfg, self._files()
        rec = None
        st.valid_pending = True  # until it is done: a last.pt saved before says to redo it
        if d.main:
            rec = _validate(self.model, f.tok, f.valid_corpus, f.valid_pairs, f.recipe,
                            self.device, self._stop_check)
        rec = dist.broadcast(d, rec)
        st.valid_pending = False
        improved = rec["val_bleu"] > st.best_bleu
        st.best_bleu = max(st.best_bleu, rec["val_bleu"])
        st.bad_validations = 0 if improved else st.bad_validations + 1
        st.last_valid_step = st.step
        if cfg.schedule == "plateau":
            self.scheduler.step(rec["val_bleu"] if cfg.plateau_metric == "bleu" else
                                rec["val_loss"])
        rec = {"kind": "valid", "step": st.step, "epoch": st.epoch,
               "wall": round(time.time() - self.t_start, 2), **rec}
        self.valid_records.append(rec)
        f.log.record(rec)
        if d.main:
            f.log.tensorboard.attention(self.model, f.tok, f.valid_corpus.src[0], st.step)
        if improved:
            self.save("best")
        self._info(f"valid step {st.step} epoch {st.epoch}: loss {rec['val_loss']:.3f} "
                   f"ppl {rec['val_ppl']:.2f} BLEU {rec['val_bleu']:.2f} "
                   + (f"chrF {rec['val_chrf']:.2f} " if "val_chrf" in rec else "")
                   + ("(new best)" if improved else
                      f"(best {st.best_bleu:.2f}, {st.bad_validations} without gain)")
                   + f" lr {self.optimizer.param_groups[0]['lr']:.2e} [{time.time() - t0:.0f}s]"
                   + ("" if len(self.valid_records) > 1 else
                      "".join(f"\n  {rec[k]}" for k in ("bleu_signature", "chrf_signature")
                              if k in rec)))
        return rec

    def _stop_check(self) -> None:
        """Between validation batches: give the validation up once a stop signal came (one
        process only: with several ranks the others wait for its result, so it finishes)."""
        if self.d.world == 1 and self.interrupted.is_set():
            raise Abandoned

    def save(self, which: str) -> None:
        """Write `last` (everything to resume; every rank must call it, RNG states are gathered)
        or `best` (what translating needs) into the run directory; rank 0 writes."""
        f = self._files()
        rng = dist.gather(self.d, _get_rng(self.device)) if which == "last" else None
        if which == "last":  # from here on as a run resumed from this checkpoint does
            _reseed_rnn_dropout(self.device)
        if not self.d.main:
            return
        resume = {}
        if which == "last":
            self.state.elapsed = time.time() - self.t_start
            resume = {"optimizer": self.optimizer.state_dict(),
                      "scheduler": self.scheduler.state_dict(), "rng": rng, "world": self.d.world}
        checkpoint.save(f.out_dir / layout.CHECKPOINT[which], checkpoint.payload(
            f.recipe, f.tok, self.model, state=asdict(self.state), metrics=self.valid_records,
            **resume))
        if which == "last":
            layout.keep_periodic(f.out_dir, self.state.step, self.cfg.keep_last)

    def _restore(self, ckpt: dict) -> None:
        """Continue from a last.pt: weights, optimizer, schedule, state, RNG, validations."""
        d, st = self.d, None
        checkpoint.load_weights(self.model, ckpt["model"], ckpt["path"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.state = st = RunState(**ckpt["state"])
        self.valid_records = list(ckpt.get("metrics", []))
        if len(ckpt["rng"]) == d.world:  # also re-derives cuDNN's RNN dropout state from it
            _set_rng(ckpt["rng"][d.rank], self.device)
        else:
            self._warn(f"checkpoint holds RNG states of {len(ckpt['rng'])} ranks, this run has "
                       f"{d.world}: dropout masks will differ from an uninterrupted run")
            torch.manual_seed(self.cfg.seed + st.step + d.rank)
        if d.main and self.files:
            _truncate_metrics(self.files.out_dir / layout.METRICS, st.step)
        self._info(f"resumed from {ckpt['path']}: step {st.step}, epoch {st.epoch}, batch "
                   f"{st.batch_in_epoch} of the epoch, best BLEU {max(st.best_bleu, 0):.2f}")

    def _wrap(self, compile: bool) -> torch.nn.Module:
        """The module updates run: the model, compiled and/or in DDP as asked."""
        net = torch.compile(self.model, dynamic=True) if compile else self.model
        if self.d.world == 1:
            return net
        DDP = torch.nn.parallel.DistributedDataParallel
        # buffers (position tables) are constants: no need to broadcast them at every forward
        no_sync_buffers = {"forward_sync_buffers": False} if "forward_sync_buffers" in \
            inspect.signature(DDP).parameters else {"broadcast_buffers": False}
        # no device_ids: DDP would move every input to the GPU, the source lengths too, which
        # stay on the CPU (the RNN encoder reads them there); the batches are on the GPU already
        return DDP(net, device_ids=None, **no_sync_buffers)

    # ---- reporting

    def progress(self, quiet: bool) -> Progress:
        """The progress bar (rank 0, unless quiet); its one task is the run's updates."""
        log = self._files().log
        bar = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(),
                       MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}"),
                       TextColumn("lr {task.fields[lr]:.1e}"),
                       TextColumn("{task.fields[tps]:,.0f} tok/s"), TimeRemainingColumn(),
                       console=log.console, disable=quiet or not self.d.main, transient=True)
        bar.add_task("train", total=self.total, completed=self.state.step, epoch=self.state.epoch,
                     loss=0.0, lr=self.optimizer.param_groups[0]["lr"], tps=0.0)
        return bar

    def progress_lines(self, quiet: bool) -> ProgressLines:
        """Plain progress lines for a run whose output is not a terminal (or --quiet)."""
        log = self._files().log
        return ProgressLines(self.total, self.cfg.progress_every, self.cfg.progress_seconds,
                             self.d.main and (quiet or not log.console.is_terminal), log.info)

    def average_last(self) -> None:
        """Average the last train.average_last periodic checkpoints into averaged.pt and
        validate it beside best.pt (rank 0)."""
        f = self._files()
        average_at_end(f.out_dir, self.cfg.average_last, lambda m: _validate(
            m.to(self.device), f.tok, f.valid_corpus, f.valid_pairs, f.recipe, self.device,
            self._stop_check), self.state, f.log)

    def record_train(self, window: _Window, lr: float) -> None:
        st = self.state
        self._files().log.record({"kind": "train", "step": st.step, "epoch": st.epoch,
                                  "wall": round(time.time() - self.t_start, 2),
                                  "loss": round(window.mean_loss, 5), "lr": lr,
                                  "tok_per_s": round(window.tok_per_s, 1)})

    def finish(self, stop: str | None, epoch_batches: int) -> dict:
        """The run's summary, and its last line for the user."""
        st, out_dir = self.state, self._files().out_dir
        tps = st.tokens / max(st.train_time, 1e-9)
        summary = {"run_dir": str(out_dir), "best_bleu": st.best_bleu, "steps": st.step,
                   "epochs": round(st.epoch - 1 + st.batch_in_epoch / max(epoch_batches, 1), 3),
                   "time": round(time.time() - self.t_start, 1),
                   "train_time": round(st.train_time, 1), "tokens_per_s": round(tps, 1),
                   "params": count_parameters(self.model), "stopped": stop,
                   "threads": torch.get_num_threads(),  # what the run used (train.threads)
                   "interrupted": stop == "interrupted"}
        if stop == "interrupted":
            self._info(f"interrupted at step {st.step} (epoch {st.epoch}); saved "
                       f"{out_dir / layout.LAST}")
        else:
            self._info(f"done: {stop}; {st.step:,} updates, best BLEU {st.best_bleu:.2f}, "
                       f"{tps:,.0f} target tok/s, {summary['time']:.0f}s; "
                       f"{layout.BEST} and {layout.LAST} in {out_dir}")
        return summary

    def _files(self) -> RunFiles:
        if self.files is None:
            raise RuntimeError("this Trainer has no run directory (RunFiles): it can only update")
        return self.files

    def _info(self, msg: str) -> None:
        if self.files:
            self.files.log.info(msg)

    def _warn(self, msg: str) -> None:
        if self.files:
            self.files.log.warn(msg)


def _optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device):
    """(optimizer, schedule) a recipe asks for."""
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    # the fused kernel is the same update in one pass, a few percent more tokens/s on a CPU
    # (bench/RESULTS.md, "Training throughput"); it exists for CPU and CUDA, not for every device
    optimizer = opt_cls(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                        weight_decay=cfg.weight_decay,
                        fused=device.type in ("cpu", "cuda") or None)
    if cfg.schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max" if cfg.plateau_metric == "bleu" else "min",
            factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s + 1, cfg))
    return optimizer, scheduler


# ----------------------------------------------------------------------------- validation

def _validate(model, tok, corpus, pairs, recipe: Recipe, device, check=None) -> dict:
    """Teacher-forced loss/perplexity and greedy BLEU on the validation split (rank 0 only),
    in the precision every decoding uses (prediction.decoding_precision), so the BLEU is what
    `nmt translate` gives.

    The training RNG state is put back afterwards, so validating never changes what training
    does next (a resumed run need not repeat validations to stay exact). `check()`, called
    before decoding and after each decoding batch, may raise Abandoned to give it up."""
    rng = _get_rng(device)
    model.eval()
    try:
        with torch.no_grad():
            nll, ppl = teacher_forced_loss(model, pairs, recipe.decode.batch_tokens, device)
            greedy = replace(recipe.decode, beam=1, nbest=1, sample=False)
            if check is not None:
                check()
            hyps = translate_lines(model, tok, corpus.src, greedy, device, check=check)
        tokenize, lowercase = scoring(recipe)
        s = score(hyps, [corpus.tgt], tokenize, lowercase, names=("bleu", "chrf"))
    finally:
        model.train()
        _set_rng(rng, device)
    return {"val_loss": round(nll, 5), "val_ppl": round(ppl, 3), "val_bleu": round(s["bleu"], 3),
            "val_chrf": round(s["chrf"], 3), "bleu_signature": str(s["signatures"]["bleu"]),
            "chrf_signature": str(s["signatures"]["chrf"])}


# ----------------------------------------------------------------------------- run directory

def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records a killed run logged after its last checkpoint; the resumed run redoes them."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


# ----------------------------------------------------------------------------- helpers

class RunLog:
    """Lines for the user (rank 0), mirrored into train.log; metric records into metrics.jsonl."""

    def __init__(self, out_dir: Path, main: bool):
        self.out_dir, self.main = out_dir, main
        self.console = Console(highlight=False, emoji=False)
        self.tensorboard = TensorBoardLog(out_dir, False, self.warn)  # off until the run says

    def info(self, msg: str, style: str | None = None) -> None:
        if not self.main:
            return
        self.console.print(msg, style=style, markup=False)
        with open(self.out_dir / layout.LOG, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")

    def warn(self, msg: str) -> None:
        self.info(f"warning: {msg}", style="yellow")

    def record(self, rec: dict) -> None:
        if self.main:
            with open(self.out_dir / layout.METRICS, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
            self.tensorboard.record(rec)


def _get_rng(device: torch.device) -> dict:
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_rng(s: dict, device: torch.device) -> None:
    random.setstate(s["python"])
    torch.set_rng_state(s["torch"])
    if s["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(s["cuda"], device)


def _reseed_rnn_dropout(device: torch.device) -> None:
    """Make cuDNN re-derive its RNN dropout state from the CUDA generator's current state.

    cuDNN's GRU/LSTM apply the dropout between layers from a state buffer of their own (one per
    GPU, advanced by every training call), which torch.cuda.get_rng_state() does not capture. It
    is initialised from the default CUDA generator at the first RNN call after that generator's
    state was set (manual_seed, set_rng_state), and only then. Setting the generator to its own
    state marks it so, without changing any number it draws: called right after the RNG states
    are saved for last.pt, the run goes on exactly as a run resumed from last.pt does, whose
    restored state re-derives the buffer at its first update just the same. No-op off CUDA."""
    if device.type == "cuda":
        torch.cuda.set_rng_state(torch.cuda.get_rng_state(device), device)


def _describe(r: Recipe) -> str:
    m = r.model
    if m.arch == "transformer":
        return (f"Transformer {m.enc_layers}+{m.dec_layers} layers, d_model {m.d_model}, "
                f"{m.heads} heads, ff {m.ff_dim}")
    return (f"{m.rnn_type.upper()} {m.enc_layers}+{m.dec_layers} layers, hidden {m.hidden_size}, "
            f"attention {m.attention}")
