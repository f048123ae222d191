"""The measurements of bench/run.py (how each is made: see its docstring): the two benchmark
models, their data and batches, the spec of each measurement, the workers that time training
and decoding in a fresh process each, and the speed levers."""
from __future__ import annotations

import multiprocessing as mp
import time
import traceback
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional  # noqa: F401  (its import cost is paid before any timing)

from machine import CpuWindow, matmul_peak, peak_rss_gb
from nmt.allocator import keep_freed_memory
from nmt.batching import padding_fraction, token_batches
from nmt.checkpoint import load_for_inference
from nmt.config import DataConfig, ModelConfig, Recipe, TokenizerConfig, TrainConfig
from nmt.data import encode_pairs, load_split
from nmt.evaluation import score
from nmt.model import build_model
from nmt.prediction import translate_lines
from nmt.seq2seq import count_parameters
from nmt.tokenizer import Tokenizer
from nmt.training import Trainer, train

BENCH = Path(__file__).resolve().parent
CACHE = BENCH / ".cache"
TOK_DIR = CACHE / "spm8k"
SEED = 1234

CONFIGS = {
    # Transformer 3+3, d 256, 4 heads, ff 1024, tied: JoeyNMT's 7.6M reference model
    "T": ModelConfig(arch="transformer", d_model=256, heads=4, ff_dim=1024, enc_layers=3,
                     dec_layers=3, dropout=0.1, tie_embeddings=True),
    # 1-layer bi-GRU (2 x 256) + 1-layer GRU 512 decoder, Bahdanau, untied, as JoeyNMT's 12.3M
    # RNN; ours has fewer parameters because its deep output (and so the output matrix) is
    # emb_dim 256 wide where JoeyNMT's is hidden 512 wide
    "R": ModelConfig(arch="rnn", attention="bahdanau", rnn_type="gru", emb_dim=256,
                     hidden_size=512, bidirectional=True, enc_layers=1, dec_layers=1,
                     dropout=0.2, tie_embeddings=False),
}
# the update of nmt.training with TrainConfig's loss/optimizer defaults (label smoothing 0.1,
# Adam (0.9, 0.98), clip 1.0); constant lr, see bench/run.py's docstring
BENCH_TRAIN = TrainConfig(lr=5e-4, schedule="constant")


# ----------------------------------------------------------------------------- data

def tokenizer() -> Tokenizer:
    """One joint 8k unigram SentencePiece model over Multi30k de+en train, built once."""
    if (TOK_DIR / "spm.model").is_file():
        return Tokenizer.load(TOK_DIR)
    print(f"building the 8k joint SentencePiece model into {TOK_DIR}", flush=True)
    train = load_split(DataConfig(), "train")
    return Tokenizer.train(train.src, train.tgt, TOK_DIR, TokenizerConfig())


def train_pairs(tok: Tokenizer) -> list[tuple[list[int], list[int]]]:
    return encode_pairs(load_split(DataConfig(), "train"), tok, DataConfig(), train=True)[0]


def make_batches(pairs, real_tokens: int, bucketing: bool) -> tuple[list[list[int]], dict]:
    """Epoch-1 batches whose mean real target tokens (incl. EOS) is about `real_tokens`.

    Bucketed: token_batches with a padded-position budget found by bisection. Unbucketed (the
    lever): random pairs, a fixed count per batch with the same mean real tokens, so the two
    differ only in padding."""
    src = [len(s) for s, _ in pairs]
    tgt = [len(t) for _, t in pairs]
    ntok = np.asarray(tgt) + 1

    def mean_real(batches):
        return float(np.mean([ntok[b].sum() for b in batches]))

    if bucketing:
        lo, hi = real_tokens, 4 * real_tokens
        while hi - lo > 1:  # mean real tokens grows with the budget
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if mean_real(token_batches(src, tgt, mid, SEED, 1)) < \
                real_tokens else (lo, mid)
        cand = [token_batches(src, tgt, b, SEED, 1) for b in (lo, hi)]
        err = [abs(mean_real(c) - real_tokens) for c in cand]
        budget, batches = ((lo, cand[0]) if err[0] <= err[1] else (hi, cand[1]))
    else:
        per = max(1, round(real_tokens / ntok.mean()))
        batches = random_batches(len(pairs), per, SEED)
        budget = None
    info = {"budget": budget, "epoch_mean": mean_real(batches), "n_batches": len(batches),
            "padding": padding_fraction(batches, src, tgt),
            "per_batch": None if bucketing else per}
    return batches, info


def random_batches(n: int, per: int, seed) -> list[list[int]]:
    """n pairs shuffled and cut into batches of `per` as they come, so every batch mixes
    lengths: JoeyNMT's batching (its TokenBatchSampler has "no bucketing implemented")."""
    order = np.random.default_rng(seed).permutation(n).tolist()
    return [order[i:i + per] for i in range(0, n, per)]


# ----------------------------------------------------------------------------- specs
# What each worker measures; a worker runs in a fresh spawned process and returns a dict (or
# {"error": ...}).

@dataclass(frozen=True)
class TrainSpec:
    """Training throughput of one config at one batch size."""
    config: str                  # T or R (CONFIGS)
    tokens: int                  # real (non-pad) target tokens per update to aim at
    warmup: int                  # untimed updates first
    steps: int                   # timed updates
    threads: int
    bf16: bool = False           # bf16 autocast
    compile: bool = False        # torch.compile(dynamic=True)
    bucketing: bool = True       # nmt's length-bucketed batches (False: random batches)
    keep_memory: bool = True     # allocator.keep_freed_memory, as the CLI does


@dataclass(frozen=True)
class BriefTrainSpec:
    """A few hundred updates of `nmt train`'s loop, for a model that decodes like a trained one."""
    config: str
    updates: int
    threads: int
    out: str                     # run directory


@dataclass(frozen=True)
class DecodeSpec:
    """Decoding speed and BLEU of one trained model."""
    checkpoint: str              # run directory or .pt
    config: str | None           # T or R to check the checkpoint against; None: any model
    threads: int
    batch_tokens: int            # source tokens per decoding batch
    beams: tuple[int, ...] = (1, 5)
    engine: str = "nmt"          # nmt, or the model exported to CTranslate2: ct2 | ct2-int8
    keep_memory: bool = True     # allocator.keep_freed_memory, as the CLI does
    bf16: bool = False           # search under bf16 autocast (decode.amp: bf16)


# ----------------------------------------------------------------------------- workers

def matmul_parameters(model: torch.nn.Module) -> int:
    """Parameters that cost 2 flops per token forward: all but lookup-only embedding tables."""
    lookups = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    lookups -= {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    return sum(p.numel() for p in model.parameters() if id(p) not in lookups)


def train_worker(spec: TrainSpec) -> dict:
    """Time `warmup + steps` real updates of one config at one batch size."""
    torch.set_num_threads(spec.threads)
    if spec.keep_memory:
        keep_freed_memory()
    tok = tokenizer()
    pairs = train_pairs(tok)
    batches, binfo = make_batches(pairs, spec.tokens, spec.bucketing)
    n = spec.warmup + spec.steps
    if len(batches) < n:
        raise ValueError(f"only {len(batches)} batches for {n} updates")
    batches = batches[:n]

    torch.manual_seed(SEED)
    model = build_model(CONFIGS[spec.config], tok.src_vocab_size, tok.tgt_vocab_size,
                        joint=tok.joint)
    params = count_parameters(model)
    flop_params = matmul_parameters(model)
    # nmt's own update (fused Adam, clipping, schedule), one batch per update
    trainer = Trainer(model.train(), BENCH_TRAIN, pairs, amp=spec.bf16, compile=spec.compile)

    def update(idx: list[int]) -> tuple[float, int]:
        r = trainer.update([idx])
        if r.skipped:
            raise FloatingPointError("non-finite loss or gradient norm")
        return r.loss / r.tokens, r.tokens

    warm_times = []
    for idx in batches[:spec.warmup]:
        t0 = time.perf_counter()
        update(idx)
        warm_times.append(time.perf_counter() - t0)
    times, losses, toks = [], [], []
    with CpuWindow() as cpu:
        for idx in batches[spec.warmup:]:
            t0 = time.perf_counter()
            loss, ntok = update(idx)
            times.append(time.perf_counter() - t0)
            losses.append(loss)
            toks.append(ntok)
    peak = matmul_peak()
    tps = sum(toks) / sum(times)
    return {"params": params, "tok_s": tps, "s_update": float(np.mean(times)),
            "s_update_median": float(np.median(times)), "timed_mean_tokens": float(np.mean(toks)),
            "first_update_s": warm_times[0] if warm_times else None,
            "loss_first": losses[0], "loss_last": losses[-1], "peak_gb": peak_rss_gb(),
            "peak_gflops": peak, "flop_params": flop_params,
            "mfu": 6 * flop_params * tps / (peak * 1e9),
            "other_cpu": cpu.other, "own_cores": cpu.own_cores, **binfo}


def brief_train_worker(spec: BriefTrainSpec) -> dict:
    """Train a config for a few hundred updates with `nmt train`'s own loop, so that decoding is
    measured on a model that emits EOS like a trained one (an untrained model runs every
    hypothesis to the length limit)."""
    torch.set_num_threads(spec.threads)
    k, steps = spec.config, spec.updates
    tr = replace(TrainConfig(), max_steps=steps, max_epochs=0, valid_every=steps, patience=0,
                 batch_tokens=4096, lr=1e-3, threads=spec.threads,
                 schedule="inverse_sqrt" if k == "T" else "constant", warmup=max(steps // 4, 1))
    recipe = Recipe(name=f"bench-{k}", model=CONFIGS[k], train=tr)
    t0 = time.time()
    summary = train(recipe, Path(spec.out), overwrite=True, quiet=True,
                    tokenizer=Tokenizer.load(TOK_DIR))
    return {"seconds": time.time() - t0, "best_bleu": summary.get("best_bleu"),
            "tokens_per_s": summary.get("tokens_per_s")}


def decode_worker(spec: DecodeSpec) -> dict:
    """Translate the 1,000 test_2016_flickr lines, greedy and beam 5, timed; BLEU of each."""
    torch.set_num_threads(spec.threads)
    if spec.keep_memory:
        keep_freed_memory()
    device = torch.device("cpu")
    model, tok, recipe = load_for_inference(spec.checkpoint, device)
    # tied or untied embeddings compute the same decoding steps: the check is on the sizes
    if spec.config and replace(recipe.model, tie_embeddings=False) != \
            replace(CONFIGS[spec.config], tie_embeddings=False):
        raise ValueError(f"{spec.checkpoint} is not configuration {spec.config}: "
                         f"{recipe.model}")
    test = load_split(DataConfig(), "test_2016_flickr")
    translate = ct2_translator(spec) if spec.engine != "nmt" else \
        partial(translate_lines, model, tok, device=device)  # translate(lines, dcfg)
    out = {}
    for beam in spec.beams:
        dcfg = replace(recipe.decode, beam=beam, nbest=1, batch_tokens=spec.batch_tokens,
                       amp="bf16" if spec.bf16 else False)
        translate(test.src[:32], dcfg)  # warm-up, untimed
        with CpuWindow() as cpu:
            t0 = time.perf_counter()
            hyps = translate(test.src, dcfg)
            dt = time.perf_counter() - t0
        s = score(hyps, [test.tgt])
        ratio = sum(len(h.split()) for h in hyps) / sum(len(r.split()) for r in test.tgt)
        out[beam] = {"seconds": dt, "sent_s": len(hyps) / dt, "bleu": s["bleu"],
                     "len_ratio": ratio, "other_cpu": cpu.other, "alpha": dcfg.alpha}
    src_lens = [len(x) + 1 for x in tok.encode_src(test.src)]
    n_batches = len(token_batches(src_lens, src_lens, spec.batch_tokens, 0, 0, shuffle=False))
    return {"beams": out, "peak_gb": peak_rss_gb(), "sent_per_batch": len(test.src) / n_batches,
            "params": sum(p.numel() for p in model.parameters())}


def ct2_translator(spec: DecodeSpec):
    """The checkpoint exported by `nmt export` (float32, or int8 for ct2-int8; cached beside the
    bench's other files) and a translate(lines, dcfg) that decodes with CTranslate2 as `nmt
    translate --checkpoint DIR` does."""
    from nmt.export import CT2Model, export_ctranslate2  # optional package: only this worker

    quant = {"ct2": "float32", "ct2-int8": "int8"}[spec.engine]
    out = CACHE / "ct2" / f"{Path(spec.checkpoint).resolve().as_posix().strip('/')}-{quant}"
    export_ctranslate2(spec.checkpoint, out, quant, force=True)
    ct2 = CT2Model(out, threads=spec.threads)
    return lambda lines, dcfg: [n[0][0] for n in ct2.translate(lines, dcfg)]


def _call(fn, spec) -> dict:
    try:
        return fn(spec)
    except Exception as e:  # a failing lever is a result to record, not a crash
        return {"error": f"{type(e).__name__}: {e}".splitlines()[0][:300],
                "traceback": traceback.format_exc()}


def in_process(fn, spec, timeout: float | None = None) -> dict:
    """Run fn(spec) in a fresh spawned process (ru_maxrss is its own peak, thread settings and
    compile caches do not leak); a timeout or a crash is returned as an error."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        job = pool.apply_async(_call, (fn, spec))
        try:
            return job.get(timeout)
        except mp.TimeoutError:
            pool.terminate()
            return {"error": f"gave up after {timeout:.0f}s"}
        except Exception as e:
            return {"error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}


# ----------------------------------------------------------------------------- levers

LEVERS = {  # name: (label, change to the measurement spec, configs it applies to)
    "threads1": ("1 thread (vs all cores)", {"threads": 1}, "TR"),
    "bf16": ("bf16 autocast", {"bf16": True}, "TR"),
    "compile": ("torch.compile(dynamic=True)", {"compile": True}, "TR"),
    "nobucket": ("no length bucketing (random batches)", {"bucketing": False}, "TR"),
    # glibc's default allocator behaviour, which `nmt` (allocator.py) changes at start
    "osmem": ("freed memory back to the OS (glibc default)", {"keep_memory": False}, "TR"),
    # decoding only: the Transformer exported to CTranslate2 (`nmt export`), another engine
    "ct2": ("CTranslate2 float32", {"engine": "ct2"}, "T"),
    "ct2int8": ("CTranslate2 int8", {"engine": "ct2-int8"}, "T"),
}


def lever(names: str) -> tuple[str, dict, str]:
    """`a+b` combines levers a and b."""
    label, change, where = [], {}, "TR"
    for n in names.split("+"):
        if n not in LEVERS:
            raise SystemExit(f"unknown lever {n!r}; use {', '.join(LEVERS)} (or a+b)")
        lab, ch, w = LEVERS[n]
        label.append(lab)
        change = {**change, **ch}
        where = "".join(c for c in where if c in w)
    return " + ".join(label), change, where
