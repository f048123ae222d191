"""Training: one loop that reads top to bottom (nanoGPT style), from a recipe to best.pt.

Objective: label-smoothed cross-entropy (Szegedy et al. 2016; Vaswani et al. 2017, Sec. 5.4) over
the non-pad target tokens, divided by the number of target tokens in the whole update (every
micro-batch of every rank), so gradient accumulation and data parallelism both give exactly the
gradient of one big batch. Learning rate: linear warm-up then inverse square root decay (Vaswani
et al. 2017, Eq. 3, rescaled so that train.lr is the peak), reduce-on-plateau on validation BLEU
or loss, or constant.

Resuming is exact: an epoch's batch list is a pure function of (seed, epoch) (batching.py), and a
checkpoint records how many of its batches were consumed plus every RNG state, so a run killed at
any point and resumed from last.pt ends with the same weights as one never interrupted.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import random
import shutil
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeRemainingColumn)

from nmt import checkpoint, rundir
from nmt import distributed as dist
from nmt.batching import Batch, collate, token_batches
from nmt.config import Recipe, TrainConfig, recipe_from_dict, save_recipe, to_dict
from nmt.data import encode_pairs, load_split
from nmt.errors import NMTError
from nmt.rundir import RESUMABLE
from nmt.tokenizer import PAD, Tokenizer



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


def _finished(st: RunState, cfg: TrainConfig) -> str | None:
    """Why the run should stop now, if it should (checked before every update)."""
    if cfg.max_steps and st.step >= cfg.max_steps:
        return f"reached max_steps={cfg.max_steps}"
    if cfg.max_epochs and st.epoch > cfg.max_epochs:
        return f"reached max_epochs={cfg.max_epochs}"
    if cfg.patience and st.bad_validations >= cfg.patience:
        return f"early stopping: no BLEU gain in {cfg.patience} validations"
    return None


def train(recipe: Recipe, out_dir: Path, resume: bool = False, overwrite: bool = False,
          quiet: bool = False, tokenizer_dir: Path | None = None) -> dict:
    """Train `recipe` into `out_dir`; returns a summary (best_bleu, steps, time, tokens/s, ...).

    Run under torchrun for data parallelism: every rank computes the same batch list and takes
    its share of each update; rank 0 alone validates and writes files.
    """
    out_dir = Path(out_dir)
    if resume and overwrite:
        raise NMTError("--resume continues the run in --out, --overwrite replaces it; pick one")
    d = dist.setup(recipe.train.device)
    threads = torch.get_num_threads()
    try:
        with rundir.claim(out_dir, resume, overwrite, active=d.main) as run:
            return _train(recipe, out_dir, resume, quiet, tokenizer_dir, d, run)
    finally:
        torch.set_num_threads(threads)  # a caller (tests, compare) keeps its own setting
        dist.cleanup(d)


def _train(recipe, out_dir, resume, quiet, tokenizer_dir, d: dist.Dist,
           run: rundir.RunDir) -> dict:
    # ---- run directory: a fresh run, or the recipe and state of the one being resumed
    ckpt = None
    if resume:
        ckpt = rundir.load_last(out_dir)
        recipe = _resume_recipe(recipe, ckpt["recipe"], ckpt["path"])
    dist.barrier(d)
    cfg, device = recipe.train, d.device
    log = RunLog(out_dir, d.main)
    if d.main:
        save_recipe(recipe, out_dir / "recipe.yaml")
    threads = cfg.threads or max(1, _cpu_count() // d.local_world)
    torch.set_num_threads(threads)
    if device.type == "cuda":  # TF32 tensor cores for the float32 matmuls autocast leaves
        torch.set_float32_matmul_precision("high")
    amp = torch.autocast(device.type, dtype=torch.bfloat16,
                         enabled=cfg.amp and device.type == "cuda")
    where = f"{threads} thread{'s' if threads > 1 else ''}" if device.type == "cpu" else ""
    where += f"{', ' if where else ''}{d.world} ranks" if d.world > 1 else ""
    log.info(f"{'resuming' if resume else 'training'} {recipe.name or 'recipe'} in {out_dir} on "
             f"{device}" + (f" ({where})" if where else ""))

    # ---- data: tokenizer, then filtered training pairs and every validation pair
    dc = recipe.data
    train_corpus = load_split(dc, dc.train, limit=dc.max_train_pairs)
    valid_corpus = load_split(dc, dc.valid, limit=dc.max_valid_pairs)
    if ckpt is not None:
        tok = Tokenizer.from_state(ckpt["tokenizer"])
    elif tokenizer_dir is not None:
        tok = Tokenizer.load(tokenizer_dir)
        if d.main:
            tok.save(out_dir / "tokenizer")
    else:
        if d.main:
            Tokenizer.train(train_corpus.src, train_corpus.tgt, out_dir / "tokenizer",
                            recipe.tokenizer)
        dist.barrier(d)
        tok = Tokenizer.load(out_dir / "tokenizer")
    train_pairs, report = encode_pairs(train_corpus, tok, dc, train=True)
    valid_pairs, _ = encode_pairs(valid_corpus, tok, dc, train=False)
    log.info(f"train {train_corpus.name}: {report.total:,} pairs, kept {report.kept:,} "
             f"(dropped {report.empty} with an empty side, {report.too_long} longer than "
             f"{dc.max_len} tokens, {report.bad_ratio} with length ratio > {dc.max_ratio:g}); "
             f"valid {valid_corpus.name}: {len(valid_pairs):,} pairs; vocab "
             f"{tok.src_vocab_size:,}/{tok.tgt_vocab_size:,}" + (" (joint)" if tok.joint else ""))
    if not train_pairs:
        raise NMTError(f"{train_corpus.name}: no training pairs left after filtering; check "
                       f"data.max_len / data.max_ratio and that the files hold text")
    if not valid_pairs:
        raise NMTError(f"{valid_corpus.name}: the validation split is empty")

    # ---- model, optimizer, schedule
    from nmt.model import build_model, count_parameters  # heavy; only training needs it here

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model = build_model(recipe.model, tok.src_vocab_size, tok.tgt_vocab_size,
                        joint=tok.joint).to(device)
    if d.rank:  # same initial weights everywhere, but each rank its own dropout masks
        torch.manual_seed(cfg.seed + d.rank)
    params = count_parameters(model)
    log.info(f"model: {_describe(recipe)}, {params:,} parameters")
    run.commit()  # data and model are ready: only now may --overwrite drop the old run
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    # the fused kernel is the same update in one pass: +4% (T) / +8% (R) tok/s on a 2-core CPU
    # (bench/RESULTS.md); it exists for CPU and CUDA, not for every other device
    optimizer = opt_cls(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                        weight_decay=cfg.weight_decay,
                        fused=device.type in ("cpu", "cuda") or None)
    plateau = cfg.schedule == "plateau"
    if plateau:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max" if cfg.plateau_metric == "bleu" else "min",
            factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s + 1, cfg))
    st = RunState()
    if ckpt is not None:
        checkpoint.load_weights(model, ckpt["model"], ckpt["path"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        st = RunState(**ckpt["state"])
        if len(ckpt["rng"]) == d.world:
            _set_rng(ckpt["rng"][d.rank], device)
        else:
            log.warn(f"checkpoint holds RNG states of {len(ckpt['rng'])} ranks, this run has "
                     f"{d.world}: dropout masks will differ from an uninterrupted run")
            torch.manual_seed(cfg.seed + st.step + d.rank)
        if d.main:
            _truncate_metrics(out_dir / "metrics.jsonl", st.step)
        log.info(f"resumed from {ckpt['path']}: step {st.step}, epoch {st.epoch}, batch "
                 f"{st.batch_in_epoch} of the epoch, best BLEU {max(st.best_bleu, 0):.2f}")
    net = model
    if d.world > 1:
        DDP = torch.nn.parallel.DistributedDataParallel
        # buffers (position tables) are constants: no need to broadcast them at every forward
        no_sync_buffers = {"forward_sync_buffers": False} if "forward_sync_buffers" in \
            inspect.signature(DDP).parameters else {"broadcast_buffers": False}
        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                  **no_sync_buffers)

    # ---- everything a checkpoint or a validation needs
    def save_last() -> None:
        rng = dist.gather(d, _get_rng(device))  # a collective: every rank takes part
        if d.main:
            st.elapsed = time.time() - t_start
            payload = {"recipe": to_dict(recipe), "tokenizer": tok.to_state(),
                       "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "rng": rng, "world": d.world,
                       "state": asdict(st), "step": st.step, "epoch": st.epoch,
                       "batch_in_epoch": st.batch_in_epoch, "best_bleu": st.best_bleu,
                       "metrics": valid_records}
            checkpoint.save(out_dir / "last.pt", payload)
            _keep_periodic(out_dir, st.step, cfg.keep_last)

    def run_validation() -> None:
        t0 = time.time()
        rec = None
        if d.main:
            rec = _validate(model, tok, valid_corpus, valid_pairs, recipe, device, amp)
        rec = dist.broadcast(d, rec)  # the others wait here; all then decide alike
        improved = rec["val_bleu"] > st.best_bleu
        st.best_bleu = max(st.best_bleu, rec["val_bleu"])
        st.bad_validations = 0 if improved else st.bad_validations + 1
        st.last_valid_step = st.step
        if plateau:
            scheduler.step(rec["val_bleu"] if cfg.plateau_metric == "bleu" else rec["val_loss"])
        rec = {"kind": "valid", "step": st.step, "epoch": st.epoch,
               "wall": round(time.time() - t_start, 2), **rec}
        valid_records.append(rec)
        if d.main:
            log.record(rec)
            if improved:
                checkpoint.save(out_dir / "best.pt", {
                    "recipe": to_dict(recipe), "tokenizer": tok.to_state(),
                    "model": model.state_dict(), "step": st.step, "epoch": st.epoch,
                    "best_bleu": st.best_bleu, "metrics": valid_records})
            log.info(f"valid step {st.step} epoch {st.epoch}: loss {rec['val_loss']:.3f} "
                     f"ppl {rec['val_ppl']:.2f} BLEU {rec['val_bleu']:.2f} "
                     + ("(new best)" if improved else
                        f"(best {st.best_bleu:.2f}, {st.bad_validations} without gain)")
                     + f" lr {optimizer.param_groups[0]['lr']:.2e} [{time.time() - t0:.0f}s]"
                     + ("" if len(valid_records) > 1 else f"\n  {rec['bleu_signature']}"))

    valid_records: list[dict] = list(ckpt.get("metrics", [])) if ckpt else []
    t_start = time.time() - st.elapsed

    # ---- the loop
    src_lens = [len(s) for s, _ in train_pairs]
    tgt_lens = [len(t) for _, t in train_pairs]
    n_tok = [n + 1 for n in tgt_lens]  # target tokens incl. EOS, as the loss counts them
    per_update = d.world * cfg.accum_steps  # batches in one update, over all ranks
    upe = -(-len(token_batches(src_lens, tgt_lens, cfg.batch_tokens, cfg.seed, 1)) // per_update)
    total = min(x for x in (cfg.max_steps, cfg.max_epochs * upe) if x > 0)
    log.info(f"{upe:,} updates per epoch ({cfg.batch_tokens:,} tokens x {per_update} batches); "
             f"training for {total:,} updates at most")
    stop_reason, bad_steps, interrupted = None, 0, threading.Event()
    restore_signals = rundir.catch_stop_signals(interrupted)
    progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(),
                        MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}"),
                        TextColumn("lr {task.fields[lr]:.1e}"),
                        TextColumn("{task.fields[tps]:,.0f} tok/s"), TimeRemainingColumn(),
                        console=log.console, disable=quiet or not d.main, transient=True)
    task = progress.add_task("train", total=total, completed=st.step, epoch=st.epoch,
                             loss=0.0, lr=optimizer.param_groups[0]["lr"], tps=0.0)
    win_loss, win_tok, win_global_tok, win_time = 0.0, 0, 0, 0.0  # since the last log record
    batches: list[list[int]] = []
    try:
        with progress:
            while stop_reason is None:
                stop_reason = _finished(st, cfg)
                if stop_reason:
                    break
                batches = token_batches(src_lens, tgt_lens, cfg.batch_tokens, cfg.seed, st.epoch)
                while st.batch_in_epoch < len(batches):
                    t0 = time.time()
                    group = batches[st.batch_in_epoch:st.batch_in_epoch + per_update]
                    st.batch_in_epoch += len(group)
                    ntok = sum(n_tok[i] for b in group for i in b)  # the whole update's tokens
                    mine = group[d.rank::d.world]
                    # at an epoch's end some ranks may run short of batches; they repeat one at
                    # weight 0, so every rank joins every gradient all-reduce
                    n_micro = -(-len(group) // d.world)
                    micro = [(b, 1.0) for b in mine] + [(group[0], 0.0)] * (n_micro - len(mine))
                    loss_sum = torch.zeros((), device=device)
                    for j, (idx, weight) in enumerate(micro):
                        batch = _to_device(collate(train_pairs, idx), device)
                        sync = d.world == 1 or j == len(micro) - 1  # all-reduce on the last only
                        with nullcontext() if sync else net.no_sync():
                            with amp:
                                logits, _ = net(batch.src, batch.src_len, batch.tgt_in)  # (B,T,V)
                                loss = sequence_loss(logits, batch.tgt_out, cfg.label_smoothing)
                            # DDP averages gradients over ranks: the world factor makes it a sum
                            (loss * (weight * d.world / ntok)).backward()
                        loss_sum += loss.detach() * weight
                    norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                          cfg.clip_norm or math.inf)
                    bad, stop_now = dist.any_flags(
                        d, not (math.isfinite(norm.item()) and math.isfinite(loss_sum.item())),
                        interrupted.is_set())
                    lr = optimizer.param_groups[0]["lr"]
                    if bad:  # skip the update; a run survives an occasional overflow
                        optimizer.zero_grad(set_to_none=True)
                        bad_steps += 1
                        log.warn(f"step {st.step + 1}: non-finite loss or gradient norm; update "
                                 f"skipped ({bad_steps} of at most {cfg.max_bad_steps} in a row)")
                        if bad_steps >= cfg.max_bad_steps:
                            saved = (f"{out_dir / 'last.pt'} holds the last good checkpoint"
                                     if (out_dir / "last.pt").is_file() else
                                     "no checkpoint was written yet")
                            raise NMTError(
                                f"{bad_steps} updates in a row had a non-finite loss or gradient "
                                f"(step {st.step + 1}, epoch {st.epoch}); training stopped. "
                                f"{saved}. Lower train.lr, raise train.warmup or set "
                                f"train.clip_norm, then start again (or --resume)")
                    else:
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                        if not plateau:
                            scheduler.step()
                        st.step += 1
                        bad_steps = 0
                        win_loss += loss_sum.item()
                        win_tok += sum(n_tok[i] for b in mine for i in b)
                        win_global_tok += ntok
                        st.tokens += ntok
                    dt = time.time() - t0
                    win_time += dt
                    st.train_time += dt
                    tps = win_global_tok / max(win_time, 1e-9)
                    progress.update(task, completed=st.step, epoch=st.epoch, lr=lr, tps=tps,
                                    loss=win_loss / max(win_tok, 1))
                    if not bad:
                        if st.step % cfg.log_every == 0:
                            log.record({"kind": "train", "step": st.step, "epoch": st.epoch,
                                        "wall": round(time.time() - t_start, 2),
                                        "loss": round(win_loss / max(win_tok, 1), 5), "lr": lr,
                                        "tok_per_s": round(tps, 1)})
                            win_loss, win_tok, win_global_tok, win_time = 0.0, 0, 0, 0.0
                        validated = cfg.valid_every > 0 and st.step % cfg.valid_every == 0
                        if validated:
                            run_validation()
                        if cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0 or \
                                not cfg.checkpoint_every and validated:
                            save_last()
                    stop_reason = "interrupted" if stop_now else _finished(st, cfg)
                    if stop_reason:
                        break
                else:  # the epoch's batches are used up
                    if not cfg.valid_every:
                        run_validation()
                    st.epoch, st.batch_in_epoch = st.epoch + 1, 0
                    if not cfg.checkpoint_every and not cfg.valid_every:
                        save_last()
            if stop_reason != "interrupted" and st.last_valid_step != st.step:
                run_validation()  # so best.pt has seen the final weights
    finally:
        restore_signals()
    save_last()

    tps = st.tokens / max(st.train_time, 1e-9)
    summary = {"run_dir": str(out_dir), "best_bleu": st.best_bleu, "steps": st.step,
               "epochs": round(st.epoch - 1 + st.batch_in_epoch / max(len(batches), 1), 3),
               "time": round(time.time() - t_start, 1), "train_time": round(st.train_time, 1),
               "tokens_per_s": round(tps, 1), "params": params, "stopped": stop_reason,
               "interrupted": stop_reason == "interrupted"}
    if stop_reason == "interrupted":
        log.info(f"interrupted at step {st.step} (epoch {st.epoch}); saved {out_dir / 'last.pt'}")
    else:
        log.info(f"done: {stop_reason}; {st.step:,} updates, best BLEU {st.best_bleu:.2f}, "
                 f"{tps:,.0f} target tok/s, {summary['time']:.0f}s; "
                 f"best.pt and last.pt in {out_dir}")
    return summary


# ----------------------------------------------------------------------------- validation

def _validate(model, tok, corpus, pairs, recipe: Recipe, device, amp) -> dict:
    """Teacher-forced loss/perplexity and greedy BLEU on the validation split (rank 0 only).

    The training RNG state is put back afterwards, so validating never changes what training
    does next (a resumed run need not repeat validations to stay exact)."""
    from nmt.evaluation import score
    from nmt.prediction import teacher_forced_loss, translate_lines

    rng = _get_rng(device)
    model.eval()
    try:
        with torch.no_grad(), amp:
            nll, ppl = teacher_forced_loss(model, pairs, recipe.decode.batch_tokens, device)
            greedy = replace(recipe.decode, beam=1, nbest=1)
            hyps = translate_lines(model, tok, corpus.src, greedy, device)
        s = score(hyps, [corpus.tgt])
    finally:
        model.train()
        _set_rng(rng, device)
    return {"val_loss": round(nll, 5), "val_ppl": round(ppl, 3), "val_bleu": round(s["bleu"], 3),
            "bleu_signature": str(s["signatures"]["bleu"])}


# ----------------------------------------------------------------------------- run directory







def _resume_recipe(new: Recipe, saved: dict, where: Path) -> Recipe:
    """The run's own recipe is authoritative; only RESUMABLE fields may differ from it."""
    old = recipe_from_dict(saved, where=f"{where} (recipe)")
    a, b = rundir.flat(to_dict(old)), rundir.flat(to_dict(new))
    changed = sorted(k for k in a.keys() | b.keys() if k != "name" and a.get(k) != b.get(k))
    diff = lambda keys: "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys)  # noqa
    model = [k for k in changed if k.startswith("model.")]
    if model:
        raise NMTError(f"recipe mismatch: {where} was trained with another model ({diff(model)});"
                       f" resume with the recipe it was trained with, or train a new run in "
                       f"another --out")
    fixed = [k for k in changed if k not in RESUMABLE]
    if fixed:
        raise NMTError(f"recipe mismatch: --resume cannot change {diff(fixed)} (the run in "
                       f"{where.parent} was trained with the left values); only "
                       f"{', '.join(RESUMABLE)} may change. Train a new run in another --out "
                       f"to change the rest")
    for k in changed:
        section, key = k.split(".")
        setattr(getattr(old, section), key, getattr(getattr(new, section), key))
    return old


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records a killed run logged after its last checkpoint; the resumed run redoes them."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


def _keep_periodic(out_dir: Path, step: int, keep: int) -> None:
    """With keep_last K > 1, last.pt is also kept as step-N.pt, the newest K of them."""
    if keep <= 1:
        return
    target = out_dir / f"step-{step}.pt"
    target.unlink(missing_ok=True)
    try:
        os.link(out_dir / "last.pt", target)  # last.pt is replaced, never rewritten in place
    except OSError:
        shutil.copy2(out_dir / "last.pt", target)
    old = sorted(out_dir.glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    for p in old[:-keep]:
        p.unlink()


# ----------------------------------------------------------------------------- helpers

class RunLog:
    """Lines for the user (rank 0), mirrored into train.log; metric records into metrics.jsonl."""

    def __init__(self, out_dir: Path, main: bool):
        self.out_dir, self.main = out_dir, main
        self.console = Console(highlight=False, emoji=False)

    def info(self, msg: str, style: str | None = None) -> None:
        if not self.main:
            return
        self.console.print(msg, style=style, markup=False)
        with open(self.out_dir / "train.log", "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")

    def warn(self, msg: str) -> None:
        self.info(f"warning: {msg}", style="yellow")

    def record(self, rec: dict) -> None:
        if self.main:
            with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")


def _get_rng(device: torch.device) -> dict:
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_rng(s: dict, device: torch.device) -> None:
    random.setstate(s["python"])
    torch.set_rng_state(s["torch"])
    if s["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(s["cuda"], device)




def _to_device(b: Batch, device: torch.device) -> Batch:
    """Pinned host memory makes the copy asynchronous, overlapping it with queued GPU work."""
    if device.type != "cuda":
        return b
    move = lambda t: t.pin_memory().to(device, non_blocking=True)  # noqa: E731
    return Batch(move(b.src), move(b.src_len), move(b.tgt_in), move(b.tgt_out), b.ntokens,
                 b.index)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _describe(r: Recipe) -> str:
    m = r.model
    if m.arch == "transformer":
        return (f"Transformer {m.enc_layers}+{m.dec_layers} layers, d_model {m.d_model}, "
                f"{m.heads} heads, ff {m.ff_dim}")
    return (f"{m.rnn_type.upper()} {m.enc_layers}+{m.dec_layers} layers, hidden {m.hidden_size}, "
            f"attention {m.attention}")
