"""On a CUDA GPU: training speed (target tokens/s, MFU against the chip's measured bf16 matrix
rate, the seconds of one Multi30k epoch) and decoding speed by batch size, for the benchmark
models T and R (bench/measure.py), the full recipes' Transformer and Bahdanau RNN, and a
Transformer of base size on synthetic long batches.

    NMT_DATA_DIR=... python bench/gpu_bench.py train OUT.json [--plan MODEL:PREC:GRAPHS,...]
    NMT_DATA_DIR=... python bench/gpu_bench.py decode OUT.json RUN_DIR [RUN_DIR ...]

train: each model trains through epoch 1's real batches (Trainer.epoch_batches at the recipe's
budget of padded positions) with nmt.training.Trainer's update (forward, loss, backward, clip,
fused Adam, schedule) after 5 untimed updates, under bf16 autocast and in
float32 (TF32 matmuls, as `nmt train` sets on CUDA). An epoch that would outlast --cap seconds
is cut there and its time extrapolated from the updates done (marked "cut").
MFU = 6 * N * target tokens/s / peak, N the parameters that multiply (measure.matmul_parameters),
peak the bf16 (or TF32) rate of an 8192^3 torch.mm measured here on random data.
--plan names the rows: MODEL:bf16|fp32:off|on, the last part train.cuda_graphs (nmt/graphs.py).
With graphs on, a first untimed pass over the timed window's batches captures their bucket
shapes' graphs (its seconds and the graphs' count are recorded), then the same batches are
timed; tokens/s and MFU count real tokens, not padding (whose share is recorded). "base" is
d_model 512, 6+6 layers, 8 heads, ff 2048, tied, on random pairs of 100-127 tokens a side from
a 32,000-piece vocabulary, 16,384 tokens a batch: a model whose step is arithmetic, not launches.

decode: each trained run translates the 1,000 test_2016_flickr lines, greedy and beam 5, at
several source-token budgets per batch (decode.batch_tokens), under bf16 autocast and in
float32 (each at every size in SIZES); seconds after a warm-up, sentences/s and BLEU.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from measure import (BENCH_TRAIN, CONFIGS, SEED, matmul_parameters, tokenizer,  # noqa: E402
                     train_pairs)
from nmt.checkpoint import load_for_inference  # noqa: E402
from nmt.config import DataConfig, ModelConfig, load_recipe  # noqa: E402
from nmt.data import load_split  # noqa: E402
from nmt.evaluation import score  # noqa: E402
from nmt.graphs import bucket  # noqa: E402
from nmt.model import build_model  # noqa: E402
from nmt.prediction import translate_lines  # noqa: E402
from nmt.training import Trainer  # noqa: E402

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "multi30k-de-en"
SIZES = (1024, 4096, 16384, 65536)  # decode.batch_tokens to time (source tokens per batch)
DEV = torch.device("cuda")  # --device cpu: a smoke run of this script where no GPU is
# Transformer base (Vaswani et al. 2017, Table 3) on synthetic long batches
BASE = ModelConfig(arch="transformer", d_model=512, heads=8, ff_dim=2048, enc_layers=6,
                   dec_layers=6, dropout=0.1, tie_embeddings=True)
SYNTHETIC_VOCAB = 32000
SYNTHETIC_LENGTHS = (100, 127)  # tokens a side: with EOS at most 128, one bucket length
# the rows bench/gpu_check.sh's train-speed step times (model, bf16, cuda_graphs)
DEFAULT_PLAN = [(n, bf16, False) for n in ("T-recipe", "R-recipe") for bf16 in (True, False)] + \
    [("T", True, False), ("R", True, False)]


def sync() -> None:
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def device_name() -> str:
    return torch.cuda.get_device_name() if DEV.type == "cuda" else "cpu"


def mm_peak(dtype: torch.dtype, n: int = 8192, reps: int = 10) -> float:
    """TFLOP/s of an n^3 matrix product on random data (mean of `reps` after 3 warm-ups)."""
    n = n if DEV.type == "cuda" else 512
    a, b = (torch.randn(n, n, device=DEV, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12


def models() -> dict:
    """name: (model config, batch_tokens of the recipe it stands for)."""
    return {"T-recipe": (load_recipe(RECIPES / "transformer.yaml").model, 4096),
            "R-recipe": (load_recipe(RECIPES / "bahdanau.yaml").model, 4096),
            "T": (CONFIGS["T"], 2048), "R": (replace(CONFIGS["R"], tie_embeddings=True), 2048),
            "base": (BASE, 16384)}


def synthetic_pairs(n: int, seed: int = SEED) -> list[tuple[list[int], list[int]]]:
    """n random pairs, each side 100-127 ids drawn from the synthetic vocabulary (4 and up:
    the special ids stay out)."""
    rng = np.random.default_rng(seed)
    lo, hi = SYNTHETIC_LENGTHS
    ids = rng.integers(4, SYNTHETIC_VOCAB, size=(n, 2, hi)).tolist()
    lens = rng.integers(lo, hi + 1, size=(n, 2)).tolist()
    return [(s[:a], t[:b]) for (s, t), (a, b) in zip(ids, lens)]


def padding_extra(batches: list[list[int]], pairs) -> float:
    """How many more positions the bucket shapes of nmt/graphs.py hold than the batches'
    own padded tensors (both sides)."""
    plain = padded = 0
    for b in batches:
        S = max(len(pairs[i][0]) for i in b) + 1
        T = max(len(pairs[i][1]) for i in b) + 1
        plain += len(b) * (S + T)
        padded += bucket(len(b)) * (bucket(S) + bucket(T))
    return padded / plain - 1


def timed(trainer: Trainer, batches: list[list[int]], cap: float) -> tuple[int, int, float, list]:
    """Updates on `batches` until they are done or `cap` seconds are spent: (updates, target
    tokens, seconds, loss per token of each)."""
    losses, done, ntok = [], 0, 0
    sync()
    t0 = time.perf_counter()
    for b in batches:
        r = trainer.update([b])
        if r.skipped:
            raise FloatingPointError("non-finite update")
        losses.append(r.loss / r.tokens)
        done, ntok = done + 1, ntok + r.tokens
        if time.perf_counter() - t0 > cap:
            break
    sync()
    return done, ntok, time.perf_counter() - t0, losses


def train_one(name, mcfg, tokens, bf16, pairs, vocab, cap, graphs=False) -> dict:
    torch.manual_seed(SEED)
    model = build_model(mcfg, *vocab).to(DEV)
    trainer = Trainer(model.train(), replace(BENCH_TRAIN, batch_tokens=tokens,
                                             cuda_graphs=graphs), pairs, amp=bf16)
    if graphs and trainer.graphs is None:
        raise RuntimeError("train.cuda_graphs gave no graphs on this device")
    batches = trainer.epoch_batches(1)  # the batches `nmt train` would make at this budget
    for b in batches[-5:]:  # warm-up on the epoch's last batches, untimed
        trainer.update([b])
    row = {}
    if graphs:  # capture the timed window's shapes first, untimed
        done, _, dt, _ = timed(trainer, batches, cap)
        batches = batches[:done]
        if trainer.graphs is None:
            raise RuntimeError(f"graphs turned off: {trainer.no_graphs_reason}")
        row = {"graphs_captured": trainer.graphs.captured, "capture_pass_s": dt,
               "capture_s": trainer.graphs.capture_seconds,
               "padding_extra": padding_extra(batches, pairs)}
    if DEV.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    done, ntok, dt, losses = timed(trainer, batches, cap)
    if graphs and trainer.graphs is None:
        raise RuntimeError(f"graphs turned off: {trainer.no_graphs_reason}")
    epochs = len(trainer.epoch_batches(1))
    real = name != "base"  # a Multi30k epoch; the synthetic pairs are no corpus
    return {"model": name, "bf16": bf16, "graphs": graphs, "batch_tokens": tokens,
            "updates": done, "epoch_updates": epochs if real else None,
            "cut": real and done < epochs,
            "epoch_s": dt * epochs / done if real else None, "ms_update": 1e3 * dt / done,
            "tok_s": ntok / dt, "flop_params": matmul_parameters(model),
            "loss_first": losses[0], "loss_last": losses[-1], **row,
            "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if DEV.type == "cuda" else 0}


def parse_plan(text: str) -> list[tuple[str, bool, bool]]:
    """"T-recipe:fp32:on,base:bf16:off" -> [("T-recipe", False, True), ("base", True, False)]."""
    rows = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, prec, graphs = item.split(":")
        if prec not in ("bf16", "fp32") or graphs not in ("on", "off"):
            raise SystemExit(f"gpu_bench: --plan {item!r}: want MODEL:bf16|fp32:on|off")
        rows.append((name, prec == "bf16", graphs == "on"))
    return rows


def train_bench(out: Path, cap: float, plan: list[tuple[str, bool, bool]]) -> None:
    ms = models()
    unknown = [n for n, _, _ in plan if n not in ms]
    if unknown:
        raise SystemExit(f"gpu_bench: unknown model {unknown[0]!r}; use {', '.join(ms)}")
    tok = corpus = synthetic = None
    if any(n != "base" for n, _, _ in plan):
        tok = tokenizer()
        corpus = train_pairs(tok)
    if any(n == "base" for n, _, _ in plan):
        synthetic = synthetic_pairs(40000 if DEV.type == "cuda" else 200)
    torch.backends.cuda.matmul.allow_tf32 = True  # what `nmt train` sets on CUDA ("high")
    peak = {"bf16": mm_peak(torch.bfloat16), "tf32": mm_peak(torch.float32)}
    print(f"{device_name()}: 8192^3 mm bf16 {peak['bf16']:.0f} TFLOP/s, "
          f"tf32 {peak['tf32']:.0f} TFLOP/s", flush=True)
    rows = []
    for name, bf16, graphs in plan:
        mcfg, tokens = ms[name]
        pairs, vocab = (synthetic, (SYNTHETIC_VOCAB, SYNTHETIC_VOCAB, True)) if name == "base" \
            else (corpus, (tok.src_vocab_size, tok.tgt_vocab_size, tok.joint))
        try:
            row = train_one(name, mcfg, tokens, bf16, pairs, vocab, cap, graphs)
        except Exception as e:  # a failure is a result: record it, measure the rest
            row = {"model": name, "bf16": bf16, "graphs": graphs,
                   "error": f"{type(e).__name__}: {e}"[:300]}
        label = f"{name:9} {'bf16' if bf16 else 'fp32'} graphs {'on ' if graphs else 'off'}"
        if "tok_s" in row:
            p = peak["bf16" if bf16 else "tf32"]
            row["mfu"] = 6 * row["flop_params"] * row["tok_s"] / (p * 1e12)
            epoch = "" if row["epoch_s"] is None else \
                f"  epoch {row['epoch_s']:5.1f} s{' (cut, extrapolated)' if row['cut'] else ''}"
            captured = f"  {row['graphs_captured']} graphs in {row['capture_s']:.1f} s, " \
                f"padding +{100 * row['padding_extra']:.0f}%" if graphs else ""
            print(f"{label} batch {row['batch_tokens']:5}: {row['tok_s']:9,.0f} tok/s  "
                  f"{row['ms_update']:6.1f} ms/update{epoch}  MFU {100 * row['mfu']:.2f}%  "
                  f"loss {row['loss_first']:.2f}->{row['loss_last']:.2f}  peak "
                  f"{row['peak_gib']:.2f} GiB{captured}", flush=True)
        else:
            print(f"{label}: {row['error']}", flush=True)
        rows.append(row)
    out.write_text(json.dumps({"device": device_name(),
                               "torch": torch.__version__, "peak_tflops": peak, "train": rows},
                              indent=1))


def decode_bench(out: Path, runs: list[str], lines: int) -> None:
    test = load_split(DataConfig(), "test_2016_flickr", limit=lines)
    rows = []
    for run in runs:
        model, tok, recipe = load_for_inference(run, DEV)
        for beam in (1, 5):
            for amp in ("bf16", False):
                for bt in SIZES:
                    dcfg = replace(recipe.decode, beam=beam, nbest=1, batch_tokens=bt, amp=amp)
                    translate_lines(model, tok, test.src[:64], dcfg, DEV)  # warm-up
                    sync()
                    t0 = time.perf_counter()
                    hyps = translate_lines(model, tok, test.src, dcfg, DEV)
                    sync()
                    dt = time.perf_counter() - t0
                    row = {"run": run, "beam": beam, "amp": amp, "batch_tokens": bt,
                           "seconds": dt, "sent_s": len(hyps) / dt,
                           "bleu": score(hyps, [test.tgt])["bleu"]}
                    print(f"{Path(run).name:12} beam {beam} {amp or 'fp32':4} batch {bt:6}: "
                          f"{dt:6.2f} s {row['sent_s']:7.0f} sent/s BLEU {row['bleu']:.2f}",
                          flush=True)
                    rows.append(row)
    out.write_text(json.dumps({"device": device_name(), "decode": rows}, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["train", "decode"])
    p.add_argument("out", type=Path)
    p.add_argument("runs", nargs="*", help="decode: run directories of trained models")
    p.add_argument("--cap", type=float, default=20, help="train: seconds per epoch at most")
    p.add_argument("--lines", type=int, default=0, help="decode: the first N test lines (0: all)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--sizes", default="T-recipe,R-recipe,T,R",
                   help="train: models of the default plan to time")
    p.add_argument("--plan", default="", help="train: the rows, MODEL:bf16|fp32:on|off,... "
                   "(the last part: train.cuda_graphs); replaces --sizes' default plan")
    a = p.parse_args()
    global DEV
    DEV = torch.device(a.device)
    if DEV.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_bench: needs a CUDA GPU (torch.cuda.is_available() is False)")
    if a.what == "train":
        names = a.sizes.split(",")
        plan = parse_plan(a.plan) if a.plan else [x for x in DEFAULT_PLAN if x[0] in names]
        train_bench(a.out, a.cap, plan)
    else:
        decode_bench(a.out, a.runs, a.lines)


if __name__ == "__main__":
    main()
