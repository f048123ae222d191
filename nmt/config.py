"""Recipes: YAML files loaded into one typed dataclass per concern.

Every field's default lives here, once, with a short comment. Unknown keys, wrong types and
impossible values are errors that name the field (and, for unknown keys, the closest valid one),
so a typo in a recipe never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from nmt.errors import NMTError
from nmt.registry import ARCHS, ATTENTIONS

INIT_STEPS = ("zero_bias", "xavier", "orthogonal", "identity_general")  # nmt/initialization.py
SHORTLIST_MAX = 100  # decode.shortlist: most candidates per source piece (nmt/shortlist.py)
SOURCES = ("multi30k", "files", "tsv", "csv", "jsonl", "hf")  # data.source, read by nmt/data.py


@dataclass
class DataConfig:
    source: str = "multi30k"        # multi30k | files | tsv | csv | jsonl | hf (docs/own-data.md)
    # files: a directory of {split}.{lang}[.gz]; tsv/csv/jsonl: one file (the whole corpus,
    # valid/test held out) or a directory of {split}.tsv etc.; hf: hub name, save_to_disk
    # directory, or a Parquet file or folder
    path: str = ""
    # files: two aligned plain files with any names (the whole corpus, valid/test held out),
    # instead of path
    src_file: str = ""
    tgt_file: str = ""              # files: the target side of src_file, line by line
    hf_config: str = ""             # hf: dataset config name (e.g. "de-en" for wmt14)
    src_lang: str = "de"            # source language code (also the file suffix for `files`)
    tgt_lang: str = "en"            # target language code
    # tsv/csv/jsonl/hf column of the source: a name (text) or, for tsv/csv, a 1-based column
    # number (an integer: src_field: 1); "" = the column named src_lang if the header has one,
    # else tsv/csv column 1 (hf: the `translation` column)
    src_field: int | str = ""
    tgt_field: int | str = ""       # likewise for the target; "" = tgt_lang's column, else 2
    # tsv/csv: is the first row a header? auto = yes when it holds the columns asked for by name
    # (for numbered or default columns: both language codes, e.g. `en<TAB>fr`)
    header: bool | str = "auto"
    train: str = "train"            # split names; files: {path}/{split}.{lang}[.gz]
    valid: str = "val"              # the validation split (early stopping, best.pt)
    # test splits a comparison scores
    test: list[str] = field(default_factory=lambda: ["test_2016_flickr"])
    max_train_pairs: int = 0        # use only the first N training pairs (0 = all); for smoke runs
    max_valid_pairs: int = 0        # likewise for validation (0 = all)
    max_test_pairs: int = 0         # likewise for each test set (0 = all)
    max_len: int = 100              # drop training pairs with more tokens than this on either side
    max_ratio: float = 3.0          # drop training pairs whose token-length ratio exceeds this
    # a corpus without a valid or test split (one file, or a directory with only train): hold out
    # this many pairs for each missing split, at most holdout_share of the corpus each, chosen
    # with holdout_seed; duplicates and sources seen in training are removed from them
    holdout: int = 1000
    holdout_share: float = 0.05     # share of the corpus each held-out split may take at most
    holdout_seed: int = 1234        # same seed and corpus, same held-out pairs


@dataclass
class TokenizerConfig:
    model_type: str = "unigram"     # unigram | bpe (SentencePiece)
    vocab_size: int = 8000          # per model; joint by default, so shared by both sides
    joint: bool = True              # one model over both languages (allows tied embeddings)
    # auto: 0.9995 for a CJK corpus (rare characters become <unk>), else 1.0 (every character)
    character_coverage: float | str = "auto"
    # SentencePiece trains on a seeded sample this big (0: all): its memory grows with the
    # sample; this many keep the data path within its memory target (bench/RESULTS.md)
    sample_sentences: int = 300_000


@dataclass
class ModelConfig:
    arch: str = "transformer"       # transformer | rnn (a family of nmt/registry.py)
    # --- RNN (Bahdanau/Luong family) ---
    # an attention kind of nmt/registry.py (none, bahdanau, luong-dot, ...: docs/architecture.md);
    # `none` is the Cho/Sutskever baseline
    attention: str = "bahdanau"
    rnn_type: str = "gru"           # gru | lstm
    emb_dim: int = 256              # RNN token embedding size
    hidden_size: int = 512          # RNN decoder size; a bidirectional encoder splits it in two
    bidirectional: bool = True      # bidirectional encoder
    input_feeding: bool = True      # Luong: feed the attentional state into the next step
    local_window: int = 5           # Luong local-p: half-width D of the window
    readout: int = 0                # RNN readout width (deep output, ~h_t); 0 = hidden_size
    # RNN initialisation steps (nmt/initialization.py; chosen by bench/init_sweep.py, results in
    # bench/RESULTS.md); [] keeps torch's defaults
    init: list[str] = field(default_factory=lambda: ["zero_bias", "xavier"])
    # --- Transformer (Vaswani et al. 2017) ---
    d_model: int = 256              # model (embedding) width
    heads: int = 4                  # attention heads per layer (divides d_model)
    ff_dim: int = 1024              # feed-forward inner width
    pre_norm: bool = True           # LayerNorm before each sublayer (stabler than post-norm)
    learned_pos: bool = False       # learned positions instead of sinusoidal
    max_positions: int = 1024       # longest sequence the position table covers
    # --- shared ---
    enc_layers: int = 3             # encoder layers (RNN or Transformer)
    dec_layers: int = 3             # decoder layers
    dropout: float = 0.1            # dropout on embeddings and between layers
    tie_embeddings: bool = True     # share src/tgt/output embeddings (needs a joint vocabulary)


@dataclass
class TrainConfig:
    seed: int = 1234                # every random stream (data order, init, dropout)
    batch_tokens: int = 4096        # padded positions per side per batch (Multi30k: ~3,400 real)
    batching: str = "bucket"        # bucket (pairs of similar length together) | mixed (random)
    accum_steps: int = 1            # batches per update
    optimizer: str = "adam"         # adam | adamw
    lr: float = 5e-4                # peak learning rate
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])  # Adam beta1, beta2
    weight_decay: float = 0.0       # L2 (adam) or decoupled (adamw) weight decay
    schedule: str = "inverse_sqrt"  # inverse_sqrt | plateau | constant
    warmup: int = 4000              # inverse_sqrt: linear warm-up updates
    plateau_factor: float = 0.5     # plateau: lr multiplier when validation stops improving
    plateau_patience: int = 2       # plateau: validations without improvement before decaying
    plateau_metric: str = "bleu"    # plateau: bleu | loss
    min_lr: float = 1e-6            # the learning rate never falls below this
    clip_norm: float = 1.0          # gradient-norm clip (0 = off)
    label_smoothing: float = 0.1    # share of the target mass spread over the vocabulary
    max_steps: int = 0              # stop after this many updates (0 = no limit)
    max_epochs: int = 30            # stop after this many epochs (0 = no limit)
    max_minutes: float = 0          # stop after this many wall minutes, validations included
    valid_every: int = 0            # validate every N updates (0 = once per epoch)
    log_every: int = 50             # updates between metric records
    patience: int = 5               # early stopping: validations without BLEU gain (0 = off)
    keep_last: int = 1              # also keep the last K periodic checkpoints (1 = only `last`)
    average_last: int = 0           # at the end, average the last K periodic ones (<= keep_last)
    progress_every: int = 0         # without a terminal: a progress line every N updates (0 = off)
    progress_seconds: float = 60.0  # ... and/or every N seconds (0 = off)
    # TensorBoard events in RUN_DIR/tensorboard: auto = when tensorboard is installed (silently
    # none when not), true = also warn when it is missing, false = never
    tensorboard: bool | str = "auto"
    checkpoint_every: int = 0       # write `last` every N updates (0 = at each validation)
    max_bad_steps: int = 5          # consecutive non-finite losses before the run stops
    device: str = "auto"            # auto | cpu | cuda
    threads: int = 0                # CPU threads (0 = all cores)
    # bf16 autocast for training updates (decoding follows decode.amp instead): auto = where it
    # pays (CPUs with AVX512-BF16 and no AMX; not CUDA, where these small models run float32
    # with TF32 matmuls faster: distributed.bf16_pays), bf16 = on any device, false = float32;
    # true, as older recipes say, reads as auto
    amp: bool | str = "auto"
    # deterministic kernels only (torch.use_deterministic_algorithms, cuDNN without autotuning,
    # CUBLAS_WORKSPACE_CONFIG): on CUDA a resumed run can then end bit-identical to one never
    # interrupted, for some speed; CPU training is bit-exact either way (README, Guarantees)
    deterministic: bool = False
    # CUDA graphs for updates (nmt/graphs.py): each batch padded to a bucket shape, and its
    # forward and backward replayed as one captured graph per shape, not launched kernel by
    # kernel; auto = on a single CUDA device (not under DDP), true = the same, warning where it
    # cannot be, false = off. A shape that cannot be captured: one warning, eager updates. No-op
    # on the CPU
    cuda_graphs: bool | str = False


@dataclass
class DecodeConfig:
    beam: int = 5                   # 1 = greedy
    alpha: float = 0.6              # GNMT length penalty ((5+|y|)/6)^alpha
    max_len_a: float = 1.5          # max output length = a * source length + b
    max_len_b: int = 10             # (b of max_len_a)
    nbest: int = 1                  # translations per input (<= beam)
    # source tokens per decoding batch; auto = 4,096 on a CPU, 16,384 on a GPU
    # (distributed.decode_batch_tokens)
    batch_tokens: int | str = "auto"
    sample: bool = False            # draw one translation per line instead of searching
    temperature: float = 1.0        # sample: divide the logits by this (> 0)
    top_k: int = 0                  # sample: only from the k likeliest tokens (0 = all)
    top_p: float = 1.0              # sample: only from the smallest set holding mass p (nucleus)
    seed: int = 0                   # sample: same seed, same input -> same translations
    # search under bf16 autocast (scores stay float32): auto = where it pays, as train.amp;
    # bf16 = on any device; false = float32 (slower where bf16 pays, at the same BLEU:
    # bench/RESULTS.md, "Decoding")
    amp: bool | str = "auto"
    # vocabulary shortlist for translate and eval --checkpoint (nmt.shortlist): the output
    # layer computes only, per batch, the K target pieces that co-occur best (Dice) with each
    # of its source pieces, plus the shortlist_frequent most frequent ones and EOS; 0 = off
    # (the full softmax; validation and compare always decode so)
    shortlist: int = 0
    shortlist_frequent: int = 100   # with shortlist: the N most frequent target pieces too


@dataclass
class EvalConfig:
    # sacreBLEU's BLEU tokenizer for validation (early stopping, best.pt), test scores,
    # significance tests and BLEU by length: auto = by data.tgt_lang (ja-mecab for ja, zh for zh,
    # ko-mecab for ko, char for th/lo/km/my/bo/dz, 13a for the rest: evaluation.AUTO_TOKENIZE;
    # docs/scoring.md), or one of sacreBLEU's names (13a, intl, zh, char, ja-mecab, ...)
    tokenize: str = "auto"
    lowercase: bool = False         # score BLEU and chrF case-insensitively


@dataclass
class Recipe:
    name: str = ""                  # free label for reports; defaults to the file name
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ----------------------------------------------------------------------------- validation

def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise NMTError(f"{where}: {msg}")


Check = Callable[[bool, str, str], None]  # (condition, field, message): an error if false


def validate(r: Recipe, where: str = "recipe", set_keys: frozenset[str] = frozenset()) -> Recipe:
    """Impossible values are errors naming the field; checked after every override. A field in
    `set_keys` (given with --set) is blamed on --set, not on the recipe file."""

    def c(cond: bool, name: str, msg: str) -> None:
        cli = "--set/--data" if name.startswith("data.") else "--set"  # --data sets data.*
        _check(cond, f"{cli if name in set_keys else where}: {name}", msg)

    for sec in dataclasses.fields(r):  # no NaN or infinity anywhere: every range test is false
        section = getattr(r, sec.name)
        for f in dataclasses.fields(section) if dataclasses.is_dataclass(section) else ():
            value = getattr(section, f.name)
            if isinstance(value, float):
                c(math.isfinite(value), f"{sec.name}.{f.name}",
                  f"must be a finite number, got {value}")
    _check_data(r.data, r.tokenizer, c)
    _check_model(r.model, c)
    _check_train(r.train, c)
    _check_decode(r.decode, c)
    _check_eval(r.eval, c)
    return r


def _check_data(d: DataConfig, t: TokenizerConfig, c: Check) -> None:
    c(d.source in SOURCES, "data.source",
      f"unknown source {d.source!r}; use {', '.join(SOURCES)}")
    two_files = bool(d.src_file or d.tgt_file)
    c(not two_files or d.source == "files", "data.src_file",
      f"src_file/tgt_file are read by source files, not {d.source!r}")
    c(not two_files or (d.src_file and d.tgt_file), "data.tgt_file" if d.src_file else
      "data.src_file", "give both src_file and tgt_file")
    c(not two_files or not d.path, "data.path", "give either path or src_file/tgt_file")
    c(d.source == "multi30k" or d.path or two_files, "data.path",
      f"source {d.source!r} needs a path")
    c(not two_files or d.src_file != d.tgt_file, "data.tgt_file",
      f"is data.src_file ({d.src_file!r}): both sides would be the same text")
    for name in ("src_field", "tgt_field"):
        v = getattr(d, name)
        c(not isinstance(v, int) or (v >= 1 and d.source in ("tsv", "csv")), f"data.{name}",
          f"a column number must be >= 1 and is for tsv/csv only, got {v!r}")
    c(d.src_field == "" or d.src_field != d.tgt_field, "data.tgt_field",
      f"is data.src_field ({d.src_field!r}): both sides would read the same column and the "
      f"model would learn to copy")
    # the same language on both sides reads the same text unless two fields or files are named
    # (a monolingual task such as simplification names them: then it is meant)
    distinct = two_files or (d.src_field != "" and d.tgt_field != "")
    c(d.src_lang != d.tgt_lang or distinct, "data.tgt_lang",
      f"is data.src_lang ({d.src_lang!r}): both sides would read the same text and the model "
      f"would learn to copy; for a monolingual task name two columns (src_field/tgt_field) or "
      f"files (src_file/tgt_file)")
    c(d.header in (True, False, "auto"), "data.header",
      f"must be auto, true or false, got {d.header!r}")
    c(d.holdout >= 1, "data.holdout", f"must be >= 1, got {d.holdout}")
    c(0 < d.holdout_share < 0.5, "data.holdout_share",
      f"must be in (0, 0.5), got {d.holdout_share}")
    for name in ("max_train_pairs", "max_valid_pairs", "max_test_pairs"):
        c(getattr(d, name) >= 0, f"data.{name}", "must be >= 0 (0 = all)")
    c(d.max_len > 0, "data.max_len", "must be > 0")
    c(d.max_ratio >= 1, "data.max_ratio", "must be >= 1")
    c(t.model_type in ("unigram", "bpe"), "tokenizer.model_type", "must be unigram or bpe")
    c(t.vocab_size >= 16, "tokenizer.vocab_size", f"must be >= 16, got {t.vocab_size}")
    cov = t.character_coverage
    c(cov == "auto" or (isinstance(cov, float) and 0 < cov <= 1), "tokenizer.character_coverage",
      f"must be auto or a number in (0, 1], got {cov!r}")
    c(t.sample_sentences >= 0, "tokenizer.sample_sentences", "must be >= 0 (0 = all)")


def _check_model(m: ModelConfig, c: Check) -> None:
    c(m.arch in ARCHS, "model.arch", f"must be {' or '.join(ARCHS)}")
    c(m.attention in ATTENTIONS, "model.attention",
      f"unknown attention {m.attention!r}; use one of {', '.join(ATTENTIONS)}")
    c(m.rnn_type in ("gru", "lstm"), "model.rnn_type", "must be gru or lstm")
    for name in ("emb_dim", "hidden_size", "d_model", "heads", "ff_dim", "enc_layers",
                 "dec_layers", "max_positions", "local_window"):
        c(getattr(m, name) > 0, f"model.{name}", f"must be > 0, got {getattr(m, name)}")
    c(m.readout >= 0, "model.readout", f"must be >= 0 (0 = hidden_size), got {m.readout}")
    bad = [x for x in m.init if x not in INIT_STEPS]
    c(not bad, "model.init",
      f"unknown step {bad[0] if bad else ''}; use any of {', '.join(INIT_STEPS)}")
    c(m.d_model % m.heads == 0, "model.heads", f"d_model {m.d_model} is not divisible by {m.heads}")
    c(not (m.bidirectional and m.arch == "rnn" and m.hidden_size % 2), "model.hidden_size",
      "must be even with a bidirectional encoder")
    c(0 <= m.dropout < 1, "model.dropout", f"must be in [0, 1), got {m.dropout}")


def _check_train(tr: TrainConfig, c: Check) -> None:
    c(tr.batch_tokens > 0, "train.batch_tokens", "must be > 0")
    c(tr.batching in ("bucket", "mixed"), "train.batching",
      f"must be bucket or mixed, got {tr.batching!r}")
    c(tr.accum_steps >= 1, "train.accum_steps", "must be >= 1")
    c(tr.optimizer in ("adam", "adamw"), "train.optimizer", "must be adam or adamw")
    c(tr.lr > 0, "train.lr", "must be > 0")
    c(len(tr.betas) == 2 and all(0 <= b < 1 for b in tr.betas), "train.betas",
      "must be two numbers in [0, 1)")
    c(tr.schedule in ("inverse_sqrt", "plateau", "constant"), "train.schedule",
      "must be inverse_sqrt, plateau or constant")
    c(tr.plateau_metric in ("bleu", "loss"), "train.plateau_metric", "must be bleu or loss")
    c(tr.warmup >= 0, "train.warmup", "must be >= 0")
    c(0 < tr.plateau_factor < 1, "train.plateau_factor",
      f"must be in (0, 1) (the lr is multiplied by it), got {tr.plateau_factor}")
    c(tr.plateau_patience >= 0, "train.plateau_patience", "must be >= 0")
    c(tr.min_lr >= 0, "train.min_lr", "must be >= 0")
    c(tr.min_lr <= tr.lr, "train.min_lr", f"must not exceed train.lr ({tr.lr})")
    c(0 <= tr.label_smoothing < 1, "train.label_smoothing", "must be in [0, 1)")
    c(tr.clip_norm >= 0, "train.clip_norm", "must be >= 0")
    for name in ("max_steps", "max_epochs", "valid_every", "patience", "checkpoint_every",
                 "threads", "weight_decay"):
        c(getattr(tr, name) >= 0, f"train.{name}", "must be >= 0")
    c(tr.tensorboard in (True, False, "auto"), "train.tensorboard",
      f"must be true, false or auto, got {tr.tensorboard!r}")
    _check_amp(tr.amp, "train.amp", c)
    c(tr.cuda_graphs in (True, False, "auto"), "train.cuda_graphs",
      f"must be auto, true or false, got {tr.cuda_graphs!r}")
    c(tr.max_minutes >= 0, "train.max_minutes", "must be >= 0 (0 = no time limit)")
    c(tr.max_steps > 0 or tr.max_epochs > 0 or tr.max_minutes > 0, "train.max_steps",
      "set max_steps, max_epochs or max_minutes, or training never ends")
    for name in ("log_every", "keep_last", "max_bad_steps"):
        c(getattr(tr, name) >= 1, f"train.{name}", "must be >= 1")
    c(tr.device in ("auto", "cpu", "cuda") or tr.device.startswith("cuda:"), "train.device",
      "must be auto, cpu or cuda")
    c(tr.progress_every >= 0 and tr.progress_seconds >= 0, "train.progress_every",
      "progress_every and progress_seconds must be >= 0 (0 = that trigger off)")
    c(tr.average_last == 0 or 2 <= tr.average_last <= tr.keep_last, "train.average_last",
      f"must be 0 (off) or between 2 and train.keep_last ({tr.keep_last}), the periodic "
      f"checkpoints kept to average; got {tr.average_last}")


def _check_decode(dc: DecodeConfig, c: Check) -> None:
    c(dc.beam >= 1, "decode.beam", "must be >= 1")
    c(1 <= dc.nbest <= dc.beam, "decode.nbest", "must be between 1 and the beam size")
    c(dc.alpha >= 0, "decode.alpha", "must be >= 0 (0 = no length penalty)")
    c(dc.max_len_a >= 0, "decode.max_len_a", "must be >= 0")
    c(dc.max_len_b >= 0, "decode.max_len_b", "must be >= 0")
    c(dc.max_len_a > 0 or dc.max_len_b > 0, "decode.max_len_b",
      "max_len_a and max_len_b are both 0: every translation would be empty")
    c(dc.batch_tokens == "auto" or (isinstance(dc.batch_tokens, int) and dc.batch_tokens > 0),
      "decode.batch_tokens", f"must be auto or a number > 0, got {dc.batch_tokens!r}")
    c(dc.temperature > 0, "decode.temperature", f"must be > 0, got {dc.temperature}")
    c(dc.top_k >= 0, "decode.top_k", f"must be >= 0 (0 = no limit), got {dc.top_k}")
    c(0 < dc.top_p <= 1, "decode.top_p", f"must be in (0, 1], got {dc.top_p}")
    c(not (dc.sample and dc.nbest > 1), "decode.nbest", "sampling draws one translation per "
      "line; use nbest 1")
    _check_amp(dc.amp, "decode.amp", c)
    c(0 <= dc.shortlist <= SHORTLIST_MAX, "decode.shortlist",
      f"must be 0 (off) or candidates per source piece, 1 to {SHORTLIST_MAX}, got "
      f"{dc.shortlist}")
    c(dc.shortlist_frequent >= 0, "decode.shortlist_frequent",
      f"must be >= 0, got {dc.shortlist_frequent}")


def _check_eval(e: EvalConfig, c: Check) -> None:
    """A tokenizer's packages are checked where scoring starts (evaluation.scoring), not here:
    a recipe read for translating needs none of them."""
    from sacrebleu.metrics import BLEU  # here only, as config is imported by everything

    names = ("auto", *BLEU.TOKENIZERS)
    c(e.tokenize in names, "eval.tokenize",
      f"unknown tokenizer {e.tokenize!r}; use one of {', '.join(names)}")


def _check_amp(amp: bool | str, name: str, c: Check) -> None:
    """train.amp and decode.amp take the same values (distributed.uses_bf16 reads both); true,
    as older recipes say, means auto."""
    c(amp in (True, False, "auto", "bf16"), name, f"must be auto, bf16 or false, got {amp!r}")


# ----------------------------------------------------------------------------- loading

def coerce(value: Any, tp: Any, name: str, where: str) -> Any:
    """Check a YAML value against a field's annotation; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin is types.UnionType:  # e.g. bool | str: the first type that takes the value
        for option in typing.get_args(tp):
            try:
                return coerce(value, option, name, where)
            except NMTError:
                pass
        kinds = " or ".join(t.__name__ for t in typing.get_args(tp))
        _check(False, where, f"{name} must be a {kinds}, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        _check(isinstance(value, list), where, f"{name} must be a list, got {value!r}")
        return [coerce(v, item, name, where) for v in value]
    if tp is bool:
        _check(isinstance(value, bool), where, f"{name} must be true or false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `3e-4` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        _check(ok, where, f"{name} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        _check(ok, where, f"{name} must be an integer, got {value!r}")
        return value
    if tp is str:
        # YAML 1.1 reads unquoted no/yes/on/off/true/false as booleans: `src_lang: no` (Norwegian)
        hint = (f"; YAML reads an unquoted no, yes, on, off, true or false as {value}: quote "
                f"it, e.g. {name}: \"no\" (on the command line: --set '{name}=\"no\"')"
                if isinstance(value, bool) else "")
        _check(isinstance(value, str), where, f"{name} must be a string, got {value!r}{hint}")
        return value
    raise TypeError(f"unsupported field type {tp}")  # a bug in this file, not in a recipe


def _fill(obj: Any, values: dict, prefix: str, where: str) -> None:
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    _check(isinstance(values, dict), where,
           f"{prefix.rstrip('.') or 'recipe'} must be a mapping of fields, got {values!r}")
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else \
                f"; valid keys: {', '.join(names)}"
            raise NMTError(f"{where}: unknown key {full!r}{hint}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            # only an empty section (`data:`) means defaults; `data: 0` or `[]` is a mistake
            _fill(current, {} if value is None else value, f"{full}.", where)
        else:
            setattr(obj, key, coerce(value, hints[key], full, where))


def recipe_from_dict(values: dict, where: str = "recipe",
                     overrides: list[str] | None = None) -> Recipe:
    """A validated Recipe from `values` with `section.key=value` overrides on top; an error in
    an override names --set, one in `values` names `where`."""
    if overrides:
        _fill(Recipe(), apply_overrides({}, overrides), "", "--set")  # unknown keys and types
        values = apply_overrides(values or {}, overrides)
    r = Recipe()
    _fill(r, values or {}, "", where)
    return validate(r, where, frozenset(_set_keys(overrides or [])))


def _set_keys(overrides: list[str]) -> list[str]:
    return [item.partition("=")[0].strip() for item in overrides]


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load a recipe file and apply `section.key=value` overrides (values parsed as YAML)."""
    path = Path(path)
    r = recipe_from_dict(read_yaml(path), where=str(path), overrides=overrides)
    r.name = r.name or path.stem
    return r


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys: a repeated key would silently win otherwise."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be repeated
            continue
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, typing.Hashable):
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be a name, not a {type(key).__name__}",
                key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_yaml(path: Path) -> dict:
    if path.is_dir():
        raise NMTError(f"{path}: is a directory; give a recipe file (.yaml)")
    if not path.is_file():
        raise NMTError(f"{path}: recipe not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise NMTError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the recipe "
                       f"as UTF-8") from None
    except OSError as e:
        raise NMTError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        values = yaml.load(text, Loader=_StrictLoader) or {}
    except yaml.YAMLError as e:
        raise NMTError(f"{path}: not valid YAML: {e}") from None
    except RecursionError:
        raise NMTError(f"{path}: nested too deeply to be a recipe (thousands of levels of "
                       f"brackets or indentation); a recipe is sections of fields") from None
    _check(isinstance(values, dict), str(path), "a recipe must be a mapping of sections")
    return values


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """`--set train.lr=3e-4` style overrides, applied to the raw mapping before typing."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        _check(bool(sep) and bool(key), "--set", f"expected section.key=value, got {item!r}")
        node = values
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            _check(isinstance(node, dict), "--set", f"{key}: {p} is not a section")
        try:
            node[leaf] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise NMTError(f"--set {item}: the value is not valid YAML ({problem}); quote it, "
                           f"e.g. --set '{key}=\"...\"', or fix the brackets") from None
    return values


def to_dict(r: Any) -> dict:
    return dataclasses.asdict(r)


def save_recipe(r: Recipe, path: str | Path) -> None:
    """Write the fully resolved recipe (every field, defaults included)."""
    Path(path).write_text(yaml.safe_dump(to_dict(r), sort_keys=False), encoding="utf-8")
