"""nmt beside JoeyNMT 2.3.0: the same two models trained in both toolkits on this machine,
with the same data, tokenizer, batch size, optimiser and number of updates (JoeyNMT's first
epoch); each toolkit's target tokens/s, s/update and peak memory, and the validation perplexity
of both at the same steps, so that a speed-up that skipped work (or learnt less per update) would
show. Both run in float32 (JoeyNMT has no bf16 on a CPU).

    make bench-joeynmt          # JoeyNMT 2.3.0 in .joey/ (made on first use), then this script

With --to-level BLEU, instead: JoeyNMT's time to a validation BLEU level (the first level of the
time-to-quality table, bench/time_to_quality.py) with the settings of the Transformer of
recipes/multi30k-de-en/time-cpu.yaml before it adopted peak lr 2e-3, which are those of
bench/levers.sh's baseline t-base (T; Adam (0.9, 0.98) at a peak 1e-3 with a 300-update linear
warm-up and inverse-square-root decay, label smoothing 0.1, ~1,730 real target tokens per
update, greedy validation every 200 updates): wall minutes from its first update to the first
validation at or above the level, or the --cap. Its validation hypotheses are scored again with
nmt's sacreBLEU settings, so that both toolkits' BLEU is one measure.

    .venv/bin/python bench/vs_joeynmt.py --joey-python .joey/bin/python --to-level 30 --cap 45

JoeyNMT is not a dependency of nmt: it runs from its own environment (`--joey-python`), on the
same torch, threads and CPU.

Held equal: Multi30k de-en train (29,000 pairs, pairs over 100 tokens dropped) and val (1,014,
scored only: perplexity needs no decoding); bench/run.py's joint 8k SentencePiece model, whose
pieces are JoeyNMT's vocabulary too, so both toolkits see the same token sequences and their
perplexities are per the same tokens; T and R as in bench/run.py (JoeyNMT's own modules
configured to the same sizes: pre-norm Transformer; bi-GRU 2 x 256 + GRU 512 with Bahdanau
attention and a bridge); Adam (0.9, 0.98) at a constant 5e-4, gradient-norm clip 1.0, dropout,
seed. Label smoothing is 0 in both so that training loss and validation perplexity are plain
per-token negative log-likelihood, defined the same way in both toolkits (JoeyNMT's smoothed
loss is a KL divergence, ours a smoothed cross-entropy: they differ by a constant).

Different by design, and printed: batching (JoeyNMT's 4,096-token batches count the longer side's
padded length; ours count padded positions per side, and bench/run.py calibrates our budget to
JoeyNMT's real target tokens per update), initialisation (each toolkit's default), where dropout
sits (JoeyNMT: embeddings, the decoder RNN's input and [h; c]; nmt: embeddings, the encoder
outputs and the attentional vector), and for R the network: see OURS.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import sentencepiece as spm
import yaml

import machine
import measure
import tables
from nmt.batching import token_batches
from nmt.config import DataConfig, ModelConfig, Recipe, TrainConfig, save_recipe
from nmt.data import load_split, multi30k_dir
from nmt.evaluation import score

WORK = measure.CACHE / "joeynmt"
LR, CLIP, SEED = 5e-4, 1.0, measure.SEED
JOEY_BATCH = 4096  # JoeyNMT's nominal token batch (its "4096 tokens")

# what nmt trains beside each JoeyNMT model: name -> (label, network, JoeyNMT's batching?).
# JoeyNMT's "bahdanau" RNN is Luong's decoder (attention after the RNN step, input feeding, the
# attentional vector tanh(W [h; c]) into the output layer) with Bahdanau's additive score; in nmt
# that network is luong-concat (v^T tanh(W [s; h]) is the additive score): 12.27M parameters
# against JoeyNMT's 12.26M. nmt's own R is the Bahdanau et al. 2015 decoder (attention from the
# previous state, before the RNN step; deep output), 10.03M: another network, shown, not judged.
# The first row of each model is the one whose loss curve is held against JoeyNMT's: the same
# network fed the same kind of batches, so only a shortcut could make it learn less per update.
R_JOEY = replace(measure.CONFIGS["R"], attention="luong-concat", input_feeding=True)
OURS = {"T": {"T": ("nmt", measure.CONFIGS["T"], False)},  # no worse even with nmt's batches
        "R": {"R-joey-batches": ("nmt, JoeyNMT's network and batching", R_JOEY, True),
              "R-joey": ("nmt, JoeyNMT's network (luong-concat)", R_JOEY, False),
              "R": ("nmt R (Bahdanau 2015 decoder)", measure.CONFIGS["R"], False)}}


def joey_model(k: str) -> dict:
    """JoeyNMT's `model:` section for bench/run.py's configuration k."""
    c = measure.CONFIGS[k]
    if k == "T":
        side = {"type": "transformer", "num_layers": c.enc_layers, "num_heads": c.heads,
                "embeddings": {"embedding_dim": c.d_model, "scale": True},
                "hidden_size": c.d_model, "ff_size": c.ff_dim, "dropout": c.dropout,
                "layer_norm": "pre" if c.pre_norm else "post"}
        return {"tied_embeddings": True, "tied_softmax": True, "encoder": side,
                "decoder": {**side, "num_layers": c.dec_layers}}
    emb = {"embedding_dim": c.emb_dim}
    # JoeyNMT applies `dropout` to the embeddings too (their own dropout defaults to it)
    return {"encoder": {"type": "recurrent", "rnn_type": c.rnn_type, "bidirectional": True,
                        "num_layers": c.enc_layers, "hidden_size": c.hidden_size // 2,
                        "embeddings": emb, "dropout": c.dropout},
            "decoder": {"type": "recurrent", "rnn_type": c.rnn_type, "attention": "bahdanau",
                        "num_layers": c.dec_layers, "hidden_size": c.hidden_size,
                        "embeddings": emb, "dropout": c.dropout, "hidden_dropout": c.dropout,
                        "init_hidden": "bridge", "input_feeding": True}}


def prepare() -> dict:
    """Plain-text Multi30k and a JoeyNMT vocabulary made of the bench SentencePiece pieces."""
    measure.tokenizer()
    data = WORK / "data"
    data.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train"), ("val", "dev")):
        for lang in ("de", "en"):
            out = data / f"{name}.{lang}"
            if not out.is_file():
                with gzip.open(multi30k_dir() / f"{split}.{lang}.gz", "rt", encoding="utf-8") as f:
                    out.write_text(f.read(), encoding="utf-8")
    sp = spm.SentencePieceProcessor(model_file=str(measure.TOK_DIR / "spm.model"))
    vocab = WORK / "vocab.txt"  # JoeyNMT puts its <unk> <pad> <s> </s> first and skips repeats
    vocab.write_text("".join(sp.id_to_piece(i) + "\n" for i in range(sp.get_piece_size())),
                     encoding="utf-8")
    side = lambda lang: {"lang": lang, "level": "bpe", "lowercase": False,
                         "normalize": False, "max_length": DataConfig().max_len,
                         "voc_file": str(vocab), "tokenizer_type": "sentencepiece",
                         "tokenizer_cfg": {"model_file": str(measure.TOK_DIR / "spm.model")}}
    return {"train": str(data / "train"), "dev": str(data / "dev"), "dataset_type": "plain",
            "src": side("de"), "trg": side("en")}


def joey_config(k: str, data: dict, valid_every: int) -> Path:
    """One epoch exactly: JoeyNMT prints its epoch summary (tokens, seconds) only when an epoch
    ends, and nmt then trains the same number of updates."""
    return _write_joey_config(
        k, data, valid_every,
        # JoeyNMT's validation always decodes as well; 2 tokens keep that from costing
        # minutes (perplexity is teacher-forced, decoding does not change it)
        testing={"max_output_length": 2, "eval_metrics": []},
        # JoeyNMT needs a schedule: exponential with gamma 1 keeps LR constant
        training={"learning_rate": LR, "scheduling": "exponential", "decrease_factor": 1.0,
                  "label_smoothing": 0.0, "epochs": 1, "early_stopping_metric": "ppl"})


def _write_joey_config(name: str, data: dict, valid_every: int, testing: dict,
                       training: dict) -> Path:
    """WORK/NAME.yaml: JoeyNMT's T or R (joey_model of NAME's first letter) trained into
    WORK/run-NAME with Adam (0.9, 0.98), nmt's gradient clip and seed, JOEY_BATCH-token
    batches and a log line per update; `testing` and `training` add or override keys."""
    cfg = {"name": f"bench-{name}", "joeynmt_version": "2.3.0", "use_cuda": False,
           "fp16": False, "random_seed": SEED, "data": data,
           "testing": {"batch_size": JOEY_BATCH, "batch_type": "token", **testing},
           "training": {"model_dir": str(WORK / f"run-{name}"), "overwrite": True,
                        "optimizer": "adam", "adam_betas": [0.9, 0.98], "clip_grad_norm": CLIP,
                        "loss": "crossentropy", "normalization": "tokens",
                        "batch_size": JOEY_BATCH, "batch_type": "token",
                        "validation_freq": valid_every, "logging_freq": 1, "shuffle": True,
                        "num_workers": 0, "keep_best_ckpts": 1, "print_valid_sents": [],
                        **training},
           "model": joey_model(name[0])}
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"{name}.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(cfg)), sort_keys=False), encoding="utf-8")
    return path


LOG_STEP = re.compile(r"Epoch\s+\d+, Step:\s+(\d+), Batch Loss:\s+([\d.]+)")
LOG_EPOCH = re.compile(r"Epoch\s+1, total training loss: [\d.]+, num. of seqs: \d+, "
                       r"num. of tokens: (\d+), ([\d.]+)\[sec\]")
LOG_PARAMS = re.compile(r"Total params: (\d+)")


# runs a command and reports that command's own peak RSS (the parent's RUSAGE_CHILDREN would
# mix the runs)
_PEAK = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[2:]).returncode; "
         "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN)"
         ".ru_maxrss)); sys.exit(rc)")


def child(cmd: list[str], timeout: float) -> tuple[float, float, str]:
    """Run cmd; (wall seconds, its peak RSS in GB, stdout). Raises with stderr on failure."""
    peak = WORK / "peak_kib"
    t0 = time.time()
    # cwd: `python -m joeynmt` must not find a joeynmt.py of ours first
    p = subprocess.run([sys.executable, "-c", _PEAK, str(peak), *cmd], capture_output=True,
                       text=True, timeout=timeout, cwd=WORK)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({p.returncode}): {p.stderr[-3000:]}")
    return time.time() - t0, int(peak.read_text()) / 2**20, p.stdout


def run_joey(python: str, cfg: Path, k: str, timeout: float) -> dict:
    """Train with JoeyNMT (its own process, environment and log) and read back its numbers:
    loss per update, validation NLL, and epoch 1's target tokens, updates and seconds."""
    wall, peak, _ = child([python, "-m", "joeynmt", "train", str(cfg), "--skip-test"], timeout)
    out = WORK / f"run-{k}"
    log = (out / "train.log").read_text(encoding="utf-8")
    steps = {int(s): float(loss) for s, loss in LOG_STEP.findall(log)}
    valid = {}
    for line in (out / "validations.txt").read_text(encoding="utf-8").splitlines():
        f = dict(x.split(": ", 1) for x in line.split("\t") if ": " in x)
        valid[int(f["Steps"])] = math.log(float(f["ppl"]))
    epoch = LOG_EPOCH.search(log)
    if not epoch or not steps:
        raise RuntimeError(f"no epoch summary in {out / 'train.log'}: JoeyNMT stopped early")
    n_upd = max(steps)  # logging_freq is 1: every update is logged
    tokens, seconds = int(epoch.group(1)), float(epoch.group(2))
    params = LOG_PARAMS.search(log)
    return {"loss": steps, "valid_nll": valid, "wall": wall, "peak_gb": peak,
            "params": int(params.group(1)) if params else None, "tok_s": tokens / seconds,
            "s_update": seconds / n_upd, "real_per_update": tokens / n_upd, "updates": n_upd}


def joey_level_config(data: dict, valid_every: int) -> Path:
    """T with time-cpu.yaml's training settings in JoeyNMT's terms, greedy BLEU validation."""
    return _write_joey_config(
        "T-level", data, valid_every,
        testing={"beam_size": 1, "max_output_length": 100, "eval_metrics": ["bleu"],
                 "sacrebleu_cfg": {"tokenize": "13a"}},
        training={"learning_rate": 1e-3, "scheduling": "warmupinversesquareroot",
                  "learning_rate_warmup": 300, "learning_rate_min": 1e-6,
                  "label_smoothing": 0.1, "epochs": 1000, "early_stopping_metric": "bleu"})


def joey_time_to_level(python: str, cfg: Path, level: float, cap_min: float) -> dict:
    """Train JoeyNMT until a validation's BLEU (rescored by nmt) reaches `level` or `cap_min`
    minutes have passed since its first update, then stop it. Times come from watching its files:
    the first update's log line starts the clock, each new line of validations.txt is a
    validation (JoeyNMT writes it when the validation ends)."""
    out = WORK / "run-T-level"
    # a log or validations left by an earlier run would start the clock and score at once
    shutil.rmtree(out, ignore_errors=True)
    refs = load_split(DataConfig(), "val").tgt
    # JoeyNMT logs every update to stderr too: into a file, since a pipe nobody reads while
    # it trains fills up and stops it
    errors = WORK / "T-level.stderr"
    with errors.open("w") as sink:  # the child holds its own copy of the file
        proc = subprocess.Popen([python, "-m", "joeynmt", "train", str(cfg), "--skip-test"],
                                cwd=WORK, stdout=subprocess.DEVNULL, stderr=sink)
    t_first, curve, reached = None, [], None
    try:
        while proc.poll() is None:
            time.sleep(1)
            now = time.time()
            log, vals = out / "train.log", out / "validations.txt"
            if t_first is None and log.is_file() and LOG_STEP.search(log.read_text("utf-8")):
                t_first = now
            if t_first is None:
                continue
            lines = vals.read_text("utf-8").splitlines() if vals.is_file() else []
            for line in lines[len(curve):]:
                f = dict(x.split(": ", 1) for x in line.split("\t") if ": " in x)
                step = int(f["Steps"])
                hyps = out / f"{step}.hyps"
                bleu = (score(hyps.read_text("utf-8").splitlines(), [refs])["bleu"]
                        if hyps.is_file() else float(f.get("bleu", "nan")))
                curve.append({"step": step, "minutes": (now - t_first) / 60, "bleu": bleu,
                              "joey_bleu": float(f.get("bleu", "nan"))})
                print(f"    JoeyNMT step {step}: BLEU {bleu:.2f} after "
                      f"{curve[-1]['minutes']:.1f} min", flush=True)
                if reached is None and bleu >= level:
                    reached = curve[-1]
            if reached or (now - t_first) / 60 >= cap_min:
                break
        if proc.poll() is not None and proc.returncode:
            raise RuntimeError(f"JoeyNMT failed ({proc.returncode}): "
                               f"{errors.read_text('utf-8')[-1000:]}")
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(60)
    return {"level": level, "cap": cap_min, "reached": reached, "curve": curve,
            "best": max((c["bleu"] for c in curve), default=None)}


def level_section(jv: list[str], hw: dict, res: dict, started: str) -> list[str]:
    r, level = res, res["level"]
    if "error" in r:
        got = f"failed: {r['error']}"
    elif r["reached"]:
        got = f"{r['reached']['minutes']:.1f} min (step {r['reached']['step']})"
    else:
        got = f"not reached in {r['cap']:g} min (best {fmt_bleu(r['best'])})"
    steps = "; ".join(f"{c['step']}: {c['bleu']:.1f} at {c['minutes']:.1f} min"
                      for c in r.get("curve", []))
    return [f"## {started}: JoeyNMT {jv[0]}'s time to {level:g} validation BLEU, CPU, "
            f"{jv[2]} threads", "",
            f"- Machine: {hw['cpu']}, {hw['cores']} cores, {hw['mem_gib']:.1f} GiB; torch "
            f"{jv[1]}, Python {hw['python']}.",
            f"- Command: `{' '.join(['bench/vs_joeynmt.py', *sys.argv[1:]])}`: T with the "
            f"Transformer settings of recipes/multi30k-de-en/time-cpu.yaml (see the docstring); "
            f"minutes from its first update, its greedy validations included; BLEU of its "
            f"validation hypotheses rescored with nmt's sacreBLEU (13a).", "",
            f"JoeyNMT T to {level:g} validation BLEU: **{got}**.", "",
            f"Its validations: {steps or 'none'}."]


def fmt_bleu(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def run_ours(name: str, model: ModelConfig, budget: int, updates: int, valid_every: int,
             timeout: float, per_batch: int = 0) -> dict:
    """`nmt train`'s loop (nmt.training.train, in a child process) with the same settings.
    per_batch > 0: JoeyNMT's batching instead of nmt's (bench/measure.py's random_batches)."""
    out = WORK / f"ours-{name}"
    tr = replace(TrainConfig(), seed=SEED, batch_tokens=budget, lr=LR, schedule="constant",
                 clip_norm=CLIP, label_smoothing=0.0, max_steps=updates, max_epochs=0,
                 valid_every=valid_every, log_every=1, patience=0)
    recipe_file = WORK / f"ours-{name}.yaml"
    save_recipe(Recipe(name=f"bench-{name}", model=model, train=tr), recipe_file)
    code = (f"import sys; sys.path.insert(0, {str(measure.BENCH)!r}); import vs_joeynmt; "
            "vs_joeynmt.child_train(*sys.argv[1:])")
    wall, peak, stdout = child([sys.executable, "-c", code, str(recipe_file), str(out),
                                str(per_batch)], timeout)
    summary = json.loads(stdout.strip().splitlines()[-1])
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {"loss": {r["step"]: r["loss"] for r in recs if r["kind"] == "train"},
            "valid_nll": {r["step"]: r["val_loss"] for r in recs if r["kind"] == "valid"},
            "wall": wall, "peak_gb": peak, "params": summary["params"],
            "tok_s": summary["tokens_per_s"], "s_update": summary["train_time"] / updates,
            "real_per_update": None}


def child_train(recipe_file: str, out: str, per_batch: str) -> None:
    """The child of run_ours: train, print the summary as JSON."""
    from nmt.config import load_recipe
    from nmt.tokenizer import Tokenizer
    from nmt.training import train

    batcher = joey_batches(int(per_batch)) if int(per_batch) else token_batches
    summary = train(load_recipe(recipe_file), Path(out), overwrite=True, quiet=True,
                    tokenizer=Tokenizer.load(measure.TOK_DIR), batcher=batcher)
    print(json.dumps(summary))


def joey_batches(per_batch: int):
    """An epoch's batches as JoeyNMT makes them (measure.random_batches, `per_batch` pairs a
    batch), a pure function of (seed, epoch) as nmt's resumable training needs; the batcher
    nmt.training.train takes in place of token_batches."""
    def batches(src_lens, tgt_lens, max_tokens, seed, epoch):
        return measure.random_batches(len(src_lens), per_batch, [seed, epoch])
    return batches


def smooth(loss: dict[int, float], at: int, window: int = 20) -> float:
    """Mean training loss over the `window` updates up to `at`: one batch's loss is noisy."""
    xs = [loss[s] for s in range(at - window + 1, at + 1) if s in loss]
    return float(np.mean(xs)) if xs else math.nan


def table(rows: list[dict], checkpoints: list[int]) -> list[str]:
    head = ("| model | toolkit | params | real tgt tok/update | **tok/s** | s/update | peak RSS | "
            + " | ".join(f"val ppl @{s}" for s in checkpoints)
            + " | train loss (mean of 20) @" + str(checkpoints[-1]) + " |")
    out = [head, "|" + "---|" * (8 + len(checkpoints))]
    for r in rows:
        m = r["m"]
        if "error" in m:
            out.append(f"| {r['config']} | {r['toolkit']} | failed: {m['error']} |")
            continue
        ppl = " | ".join(fmt_ppl(m["valid_nll"].get(s)) for s in checkpoints)
        params = tables.fmt(m["params"] / 1e6 if m["params"] else None, ".2f")
        out.append(f"| {r['config']} | {r['toolkit']} | {params}M | "
                   f"{m['real_per_update']:,.0f} | **{m['tok_s']:,.0f}** | {m['s_update']:.2f} | "
                   f"{m['peak_gb']:.2f} GB | {ppl} | {smooth(m['loss'], checkpoints[-1]):.3f} |")
    return out


def fmt_ppl(nll: float | None) -> str:
    return "n/a" if nll is None else f"{math.exp(nll):.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--joey-python", required=True, help="python of an environment with joeynmt")
    p.add_argument("--configs", default="T,R")
    p.add_argument("--valid-every", type=int, default=60)
    p.add_argument("--timeout", type=float, default=1800, help="seconds per training run")
    p.add_argument("--log-dir", type=Path, default=tables.LOG, help="where the run's log goes")
    p.add_argument("--dry-run", action="store_true", help="print the section, write nothing")
    p.add_argument("--to-level", type=float, default=0,
                   help="instead: JoeyNMT T's minutes to this validation BLEU (see docstring)")
    p.add_argument("--cap", type=float, default=30, help="--to-level: give up after N minutes")
    a = p.parse_args()

    configs = [c for c in a.configs.split(",") if c]
    a.joey_python = os.path.abspath(a.joey_python)  # the runs start in WORK; no symlink resolving:
    # a venv's python finds its packages through the link
    hw = machine.hardware()
    data = prepare()
    jv = subprocess.run([a.joey_python, "-c", "import joeynmt, torch; print(joeynmt.__version__,"
                         " torch.__version__, torch.get_num_threads())"],
                        capture_output=True, text=True, check=True).stdout.split()
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    if a.to_level:
        cfg = joey_level_config(data, valid_every=200)
        res = _try(lambda: joey_time_to_level(a.joey_python, cfg, a.to_level, a.cap))
        res.setdefault("level", a.to_level)
        res.setdefault("cap", a.cap)
        sec = level_section(jv, hw, res, started)
        print("\n" + "\n".join(sec))
        if not a.dry_run:
            print(f"\nwritten to {tables.write_results(sec, 'joeynmt-level', a.log_dir)}")
        return
    pairs = measure.train_pairs(measure.tokenizer())
    rows = []
    for k in configs:
        cfg = joey_config(k, data, a.valid_every)
        print(f"JoeyNMT {k}: {cfg}", flush=True)
        joey = _try(lambda: run_joey(a.joey_python, cfg, k, a.timeout))
        rows.append({"config": k, "toolkit": f"JoeyNMT {jv[0]}", "m": joey})
        print("   ", _brief(joey), flush=True)
        real = joey.get("real_per_update") or 1730
        updates = joey.get("updates") or 270  # JoeyNMT's epoch 1, or about that if it failed
        _, info = measure.make_batches(pairs, round(real), bucketing=True)
        _, mixed = measure.make_batches(pairs, round(real), bucketing=False)  # JoeyNMT's kind
        print(f"nmt {k}: budget {info['budget']} padded tokens = {info['epoch_mean']:.0f} real; "
              f"JoeyNMT's batching: {mixed['per_batch']} pairs", flush=True)
        for name, (label, model, like_joey) in OURS[k].items():
            ours = _try(lambda: run_ours(name, model, info["budget"], updates, a.valid_every,
                                         a.timeout, mixed["per_batch"] if like_joey else 0))
            if "error" not in ours:
                ours["real_per_update"] = (mixed if like_joey else info)["epoch_mean"]
            rows.append({"config": k, "toolkit": label, "m": ours})
            print("   ", _brief(ours), flush=True)

    done = [r["m"]["valid_nll"] for r in rows if "error" not in r["m"]]
    # validation steps that every run reached (nmt also validates after its last update)
    checkpoints = sorted(set.intersection(*(set(v) for v in done))) if done else [a.valid_every]
    n_updates = sorted({r["m"]["updates"] for r in rows if "updates" in r["m"]})
    sec = [f"## {started}: beside JoeyNMT {jv[0]}, CPU, {jv[2]} threads", "",
           f"- Machine: {hw['cpu']}, {hw['cores']} cores, {hw['mem_gib']:.1f} GiB; torch "
           f"{hw['torch']} in both environments (JoeyNMT's: {jv[1]}), Python {hw['python']}.",
           f"- Command: `{' '.join(['bench/vs_joeynmt.py', *sys.argv[1:]])}`; one JoeyNMT epoch "
           f"({'/'.join(map(str, n_updates)) or '?'} updates) and as many nmt updates, "
           f"validation every {a.valid_every}; held equal and different by design: see the "
           f"docstring of bench/vs_joeynmt.py. tok/s and s/update: each toolkit's whole run "
           f"(JoeyNMT: its epoch 1 summary), validation excluded; peak RSS of the training "
           f"process. Perplexity: per target token incl. EOS, the same 8k pieces, no smoothing.",
           "", *table(rows, checkpoints)]
    for k in configs:
        j, *ours = [r for r in rows if r["config"] == k]
        for i, o in enumerate(ours):
            jm, om = j["m"], o["m"]
            if "error" in jm or "error" in om:
                continue
            line = (f"\n{k}, {o['toolkit']}: {om['tok_s'] / jm['tok_s']:.1f}x JoeyNMT's tokens/s, "
                    f"{om['peak_gb'] / jm['peak_gb']:.2f}x its peak memory")
            if i == 0:  # the same network and batches as JoeyNMT's: no worse, or a shortcut
                worse = [s for s in checkpoints if om["valid_nll"].get(s, math.inf) >
                         jm["valid_nll"].get(s, math.inf) + 0.02]
                line += "; validation perplexity " + (
                    "no worse at every step compared." if not worse else f"WORSE at steps {worse}.")
            sec.append(line + ("" if i == 0 else "."))
    print("\n" + "\n".join(sec))
    if not a.dry_run:
        print(f"\nwritten to {tables.write_results(sec, 'vs-joeynmt', a.log_dir)}")
        # for bench/run.py's tables: JoeyNMT as measured on this CPU
        train = {r["config"]: {f: r["m"][f] for f in ("tok_s", "s_update", "peak_gb")}
                 for r in rows if r["toolkit"].startswith("JoeyNMT") and "error" not in r["m"]}
        if train:
            tables.JOEY_HERE.write_text(json.dumps({"cpu": hw["cpu"], "date": started[:10],
                                                   "train": train}))


def _try(fn) -> dict:
    try:
        return fn()
    except Exception as e:  # a failed run is a result to print, not a crash of the others
        return {"error": f"{type(e).__name__}: {e}"[:3000]}


def _brief(m: dict) -> dict:
    return {k: v for k, v in m.items() if k not in ("loss",)}


if __name__ == "__main__":
    main()
