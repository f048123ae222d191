"""On a CUDA GPU: training speed (target tokens/s, MFU against the chip's measured bf16 matrix
rate, the seconds of one Multi30k epoch) and decoding speed by batch size, for the benchmark
models T and R (bench/measure.py) and the full recipes' Transformer and Bahdanau RNN.

    NMT_DATA_DIR=... python bench/gpu_bench.py train OUT.json
    NMT_DATA_DIR=... python bench/gpu_bench.py decode OUT.json RUN_DIR [RUN_DIR ...]

train: each model trains through epoch 1's real batches (Trainer.epoch_batches at the recipe's
budget of padded positions) with nmt.training.Trainer's update (forward, loss, backward, clip,
fused Adam, schedule) after 5 untimed updates, under bf16 autocast and in
float32 (TF32 matmuls, as `nmt train` sets on CUDA). An epoch that would outlast --cap seconds
is cut there and its time extrapolated from the updates done (marked "cut").
MFU = 6 * N * target tokens/s / peak, N the parameters that multiply (measure.matmul_parameters),
peak the bf16 (or TF32) rate of an 8192^3 torch.mm measured here on random data.

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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from measure import (BENCH_TRAIN, CONFIGS, SEED, matmul_parameters, tokenizer,  # noqa: E402
                     train_pairs)
from nmt.checkpoint import load_for_inference  # noqa: E402
from nmt.config import DataConfig, load_recipe  # noqa: E402
from nmt.data import load_split  # noqa: E402
from nmt.evaluation import score  # noqa: E402
from nmt.model import build_model  # noqa: E402
from nmt.prediction import translate_lines  # noqa: E402
from nmt.training import Trainer  # noqa: E402

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "multi30k-de-en"
SIZES = (1024, 4096, 16384, 65536)  # decode.batch_tokens to time (source tokens per batch)
DEV = torch.device("cuda")  # --device cpu: a smoke run of this script where no GPU is


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
            "T": (CONFIGS["T"], 2048), "R": (replace(CONFIGS["R"], tie_embeddings=True), 2048)}


def train_one(name, mcfg, tokens, bf16, pairs, tok, cap) -> dict:
    torch.manual_seed(SEED)
    model = build_model(mcfg, tok.src_vocab_size, tok.tgt_vocab_size, joint=tok.joint).to(DEV)
    trainer = Trainer(model.train(), replace(BENCH_TRAIN, batch_tokens=tokens), pairs,
                      amp=bf16)
    batches = trainer.epoch_batches(1)  # the batches `nmt train` would make at this budget
    losses = []
    for b in batches[-5:]:  # warm-up on the epoch's last batches, untimed
        trainer.update([b])
    sync()
    if DEV.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    done, ntok, t0 = 0, 0, time.perf_counter()
    for b in batches:
        r = trainer.update([b])
        if r.skipped:
            raise FloatingPointError(f"{name}: non-finite update")
        losses.append(r.loss / r.tokens)
        done, ntok = done + 1, ntok + r.tokens
        if time.perf_counter() - t0 > cap:
            break
    sync()
    dt = time.perf_counter() - t0
    return {"model": name, "bf16": bf16, "batch_tokens": tokens, "updates": done,
            "epoch_updates": len(batches), "cut": done < len(batches),
            "epoch_s": dt * len(batches) / done, "ms_update": 1e3 * dt / done,
            "tok_s": ntok / dt, "flop_params": matmul_parameters(model),
            "loss_first": losses[0], "loss_last": losses[-1],
            "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if DEV.type == "cuda" else 0}


def train_bench(out: Path, cap: float, names: list[str]) -> None:
    tok = tokenizer()
    pairs = train_pairs(tok)
    torch.backends.cuda.matmul.allow_tf32 = True  # what `nmt train` sets on CUDA ("high")
    peak = {"bf16": mm_peak(torch.bfloat16), "tf32": mm_peak(torch.float32)}
    print(f"{device_name()}: 8192^3 mm bf16 {peak['bf16']:.0f} TFLOP/s, "
          f"tf32 {peak['tf32']:.0f} TFLOP/s", flush=True)
    rows = []
    plan = [(n, bf16) for n in ("T-recipe", "R-recipe") for bf16 in (True, False)] + \
        [("T", True), ("R", True)]
    ms = models()
    for name, bf16 in [x for x in plan if x[0] in names]:
        mcfg, tokens = ms[name]
        try:
            row = train_one(name, mcfg, tokens, bf16, pairs, tok, cap)
        except Exception as e:  # a failure is a result: record it, measure the rest
            row = {"model": name, "bf16": bf16, "error": f"{type(e).__name__}: {e}"[:300]}
        if "tok_s" in row:
            p = peak["bf16" if bf16 else "tf32"]
            row["mfu"] = 6 * row["flop_params"] * row["tok_s"] / (p * 1e12)
            print(f"{name:9} {'bf16' if bf16 else 'fp32'} batch {row['batch_tokens']:5}: "
                  f"{row['tok_s']:9,.0f} tok/s  {row['ms_update']:6.1f} ms/update  epoch "
                  f"{row['epoch_s']:5.1f} s{' (cut, extrapolated)' if row['cut'] else ''}  "
                  f"MFU {100 * row['mfu']:.2f}%  loss {row['loss_first']:.2f}->"
                  f"{row['loss_last']:.2f}  peak {row['peak_gib']:.2f} GiB", flush=True)
        else:
            print(f"{name} bf16={bf16}: {row['error']}", flush=True)
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
    p.add_argument("--sizes", default="T-recipe,R-recipe,T,R", help="train: models to time")
    a = p.parse_args()
    global DEV
    DEV = torch.device(a.device)
    if DEV.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_bench: needs a CUDA GPU (torch.cuda.is_available() is False)")
    if a.what == "train":
        train_bench(a.out, a.cap, a.sizes.split(","))
    else:
        decode_bench(a.out, a.runs, a.lines)


if __name__ == "__main__":
    main()
