"""The `nmt` command line. Thin: each command parses its options and calls into `nmt`."""
from __future__ import annotations

import errno
import os
import sys
from functools import wraps
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from nmt import __version__, layout
from nmt.allocator import keep_freed_memory
from nmt.atomic import check_parent
from nmt.errors import NMTError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train, decode, score and compare neural machine translation models.")
err = Console(stderr=True)


# what the file system answers about a path the user gave (a name over 255 bytes, a file where
# a directory is needed, a symlink loop): the path is wrong, not the code
PATH_ERRORS = (errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.ELOOP)


def error_line(message: str) -> None:
    """One error line on stderr; the message is escaped, so `nmt[ctranslate2]` or a path with
    `[run]` in it is printed as it is, not read as rich markup."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)


def user_errors(fn):
    """Print an NMTError as one clear line and exit 2; bugs keep their tracebacks."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NMTError as e:
            error_line(str(e))
            raise typer.Exit(2)
        except OSError as e:  # the disk, not the code: say which file, keep it to one line
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
                error_line(f"{e.filename or 'writing output'}: {e.strerror}; free space or fix "
                           f"permissions, then run the command again (training: with --resume)")
            elif e.errno in PATH_ERRORS and e.filename:
                error_line(f"{e.filename}: {e.strerror}; choose another path")
            else:
                raise
            raise typer.Exit(2)
    return wrapper


def _output_file(path: Path | str, option: str) -> None:
    """Check an output file's path before any work is done, so a typo costs nothing. The one
    rule of every command that writes a file (translate, average, attention): its directory
    must exist; a missing one is an error, never created (a typo would hide the output)."""
    path = Path(path)
    if path.is_dir():
        raise NMTError(f"{option} {path}: is a directory; give a file name")
    check_parent(path, f"{option} {path}")


def _version(value: bool):
    if value:
        print(f"nmt {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")):
    """Train, decode, score and compare neural machine translation models."""
    keep_freed_memory()  # every step's large tensors reuse the process's memory (allocator.py)


# ---- data and tokenizer commands ----

data_app = typer.Typer(no_args_is_help=True, help="Inspect a recipe's parallel data.")
tokenizer_app = typer.Typer(no_args_is_help=True, help="Build and try SentencePiece tokenizers.")
app.add_typer(data_app, name="data")
app.add_typer(tokenizer_app, name="tokenizer")


# your corpus on the command line (nmt.data.cli_data maps them onto data.* fields)
DATA = typer.Option(None, "--data", help="Your corpus, over the recipe's data: a .tsv/.csv/"
                    ".jsonl file (.gz ok), a folder of {split}.{lang} or {split}.tsv files, a "
                    "Hugging Face save_to_disk or Parquet folder, or a hub name (with --format "
                    "hf). Splits it lacks are held out of train. Needs --src and --tgt.")
SRC_LANG = typer.Option(None, "--src", help="Source language code of --data, e.g. en.")
TGT_LANG = typer.Option(None, "--tgt", help="Target language code of --data, e.g. fr.")
FORMAT = typer.Option(None, "--format", help="Format of --data: tsv, csv, jsonl, files or hf "
                      "(default: told by its name or contents).")
SRC_FILE = typer.Option(None, "--src-file", help="Instead of --data: the source side as a "
                        "plain text file, one sentence a line (any name, .gz ok).")
TGT_FILE = typer.Option(None, "--tgt-file", help="With --src-file: the target side, aligned.")


def _data_sets(data, src, tgt, fmt, src_file, tgt_file) -> List[str]:
    """--data and friends as --set items, to go before the user's own --set."""
    from nmt.data import cli_data, data_overrides
    return data_overrides(cli_data(data, src, tgt, fmt, src_file, tgt_file))


def _data_recipe(recipe: Optional[Path], overrides: List[str]):
    """The recipe file with overrides, or the defaults (Multi30k de-en) when none is given."""
    from nmt.config import load_recipe, recipe_from_dict
    if recipe is not None:
        return load_recipe(recipe, overrides)
    return recipe_from_dict({}, where="default recipe", overrides=overrides)


@data_app.command("stats")
@user_errors
def data_stats(
        recipe: Optional[Path] = typer.Argument(None, help="Recipe YAML (default: Multi30k "
                                                "de-en)."),
        set_: List[str] = typer.Option([], "--set", help="section.key=value, e.g. "
                                       "data.src_lang=fr."),
        tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Tokenizer directory: "
                                                 "count subword tokens, not whitespace words."),
        data: Optional[str] = DATA, src: Optional[str] = SRC_LANG, tgt: Optional[str] = TGT_LANG,
        fmt: Optional[str] = FORMAT, src_file: Optional[str] = SRC_FILE,
        tgt_file: Optional[str] = TGT_FILE):
    """Print pairs, length percentiles, filter drops and batch padding for each split."""
    from rich.table import Table

    from nmt.data import PERCENTILES, held_out, holdout, load_split, split_stats
    from nmt.tokenizer import Tokenizer

    r = _data_recipe(recipe, _data_sets(data, src, tgt, fmt, src_file, tgt_file) + set_)
    d = r.data
    if held_out(d):
        Console().print(holdout(d).summary(), highlight=False, markup=False)
    tok = Tokenizer.load(tokenizer) if tokenizer else None
    limits = {d.train: d.max_train_pairs, d.valid: d.max_valid_pairs}
    splits = list(dict.fromkeys([d.train, d.valid, *d.test]))
    stats = [split_stats(load_split(d, split, limits.get(split, 0)), d, tok, r.train.batch_tokens)
             for split in splits]
    unit = "subword tokens" if tok else "whitespace words (give --tokenizer for subwords)"
    out = Console()
    where = " ".join(filter(None, (d.source, d.path, d.src_file, d.hf_config)))
    pairs = Table(title=f"{where} {d.src_lang}-{d.tgt_lang}: pairs, and drops by the training "
                        f"filters (max_len {d.max_len}, max_ratio {d.max_ratio:g})",
                  caption=f"lengths in {unit}; valid/test are never filtered"
                          + (f"; pad % of {r.train.batch_tokens}-token batches" if tok else ""))
    for col in ("split", "pairs", "empty", "too long", "bad ratio", "kept"):
        pairs.add_column(col, justify="left" if col == "split" else "right")
    if tok:
        pairs.add_column("pad %", justify="right")
    for split, s in zip(splits, stats):
        f = s.filters
        row = [split, f"{s.pairs:,}", f"{f.empty:,}", f"{f.too_long:,}", f"{f.bad_ratio:,}",
               f"{f.kept:,}"]
        pairs.add_row(*row, *([f"{100 * s.padding:.1f}"] if tok else []))
    ps = "/".join("max" if p == 100 else f"p{p}" for p in PERCENTILES)
    lengths = Table(title=f"sentence lengths ({ps})")
    for col in ("split", "side", "characters", "tokens" if tok else "words"):
        lengths.add_column(col, justify="left" if col in ("split", "side") else "right")
    for split, s in zip(splits, stats):
        for side, chars, toks in ((d.src_lang, s.src_chars, s.src_tokens),
                                  (d.tgt_lang, s.tgt_chars, s.tgt_tokens)):
            lengths.add_row(split, side, "/".join(map(str, chars)), "/".join(map(str, toks)))
    out.print(pairs)
    out.print(lengths)
    if tok is not None and tok.info:  # how the tokenizer was built (tokenizer.json)
        from nmt.tokenizer import describe
        out.print(escape(describe(tok.info)))


@tokenizer_app.command("build")
@user_errors
def tokenizer_build(
        out: Path = typer.Option(..., "--out", help="Directory for spm.model (joint) or "
                                 "src.model + tgt.model."),
        src: Optional[str] = typer.Option(None, "--src", help="Source sentences, one per line "
                                          "(.gz ok); with --data or --src-file: the source "
                                          "language code."),
        tgt: Optional[str] = typer.Option(None, "--tgt", help="Target sentences, aligned; with "
                                          "--data or --src-file: the target language code."),
        recipe: Optional[Path] = typer.Option(None, "--recipe", help="Use its tokenizer settings "
                                              "and (without --src/--tgt) its training split."),
        vocab_size: Optional[int] = typer.Option(None, "--vocab-size", help="Pieces per model."),
        model_type: Optional[str] = typer.Option(None, "--model-type", help="unigram | bpe"),
        separate: bool = typer.Option(False, "--separate", help="One model per language "
                                      "instead of a joint one."),
        character_coverage: Optional[float] = typer.Option(None, "--character-coverage",
                                                           help="Share of characters covered."),
        data: Optional[str] = DATA, fmt: Optional[str] = FORMAT,
        src_file: Optional[str] = SRC_FILE, tgt_file: Optional[str] = TGT_FILE):
    """Train a SentencePiece tokenizer on parallel text or a recipe's training split."""
    import time

    from nmt.data import load_split, read_parallel
    from nmt.tokenizer import Tokenizer

    if out.exists() and not out.is_dir():
        raise NMTError(f"--out {out}: is a file; give a directory for the tokenizer model(s)")
    corpus_given = data is not None or src_file is not None or tgt_file is not None
    if (src is None) != (tgt is None) and not corpus_given:
        raise NMTError("tokenizer build: give both --src and --tgt, or neither (then the "
                       "recipe's training split is used)")
    given = {"vocab_size": vocab_size, "model_type": model_type,
             "character_coverage": character_coverage, "joint": False if separate else None}
    data_sets = _data_sets(data, src, tgt, fmt, src_file, tgt_file) if corpus_given else []
    r = _data_recipe(recipe, data_sets + [f"tokenizer.{k}={v}" for k, v in given.items()
                                          if v is not None])
    if src is not None and not corpus_given:
        src_lines, tgt_lines = read_parallel(Path(src), Path(tgt))
        what = f"{src} + {tgt}"
    else:
        corpus = load_split(r.data, r.data.train, r.data.max_train_pairs)
        src_lines, tgt_lines, what = corpus.src, corpus.tgt, corpus.name
    t = r.tokenizer
    start = time.perf_counter()
    tok = Tokenizer.train(src_lines, tgt_lines, out, t)
    took = time.perf_counter() - start
    sizes = (f"{tok.src_vocab_size} pieces" if tok.joint
             else f"{tok.src_vocab_size} + {tok.tgt_vocab_size} pieces")
    print(f"{'joint' if tok.joint else 'separate'} {t.model_type} tokenizer, {sizes}, from "
          f"{len(src_lines):,} pairs of {what} in {took:.1f} s -> {out}")
    for note in tok.notes:  # a smaller vocabulary than asked: what the corpus allows
        print(note)


def _tokenizer_side(side: str) -> str:
    if side not in ("src", "tgt"):
        raise NMTError(f"--side must be src or tgt, got {side!r}")
    return side


@tokenizer_app.command("encode")
@user_errors
def tokenizer_encode(
        text: str = typer.Argument(..., help="Sentence to encode."),
        model: Path = typer.Option(..., "--model", help="Tokenizer directory."),
        side: str = typer.Option("src", "--side", help="src | tgt (same model when joint).")):
    """Print the pieces and ids of one sentence."""
    from nmt.tokenizer import Tokenizer

    side = _tokenizer_side(side)
    tok = Tokenizer.load(model)
    if side == "src":
        ids, pieces = tok.encode_src([text])[0], tok.src_pieces(text)
    else:
        ids = tok.encode_tgt([text])[0]
        pieces = tok.tgt_pieces(ids)
    print("pieces:", " ".join(pieces))
    print("ids:   ", " ".join(map(str, ids)))


@tokenizer_app.command("decode")
@user_errors
def tokenizer_decode(
        ids: List[int] = typer.Argument(..., help="Target token ids."),
        model: Path = typer.Option(..., "--model", help="Tokenizer directory.")):
    """Print the detokenized text of target ids (PAD/BOS/EOS dropped)."""
    from nmt.tokenizer import Tokenizer

    print(Tokenizer.load(model).decode_tgt([ids])[0])


# ---- train ----

@app.command("train")
@user_errors
def train_cmd(recipe: Optional[Path] = typer.Argument(None, help="Recipe YAML (with --resume "
                                                    "not needed: the run's own recipe is used)."),
              set_: List[str] = typer.Option([], "--set", help="section.key=value, e.g. "
                                             "train.max_steps=1000 (repeatable)."),
              out: Optional[Path] = typer.Option(None, "--out", help="Run directory "
                                                 "(default runs/<recipe name>)."),
              resume: bool = typer.Option(False, "--resume", help="Continue the run in --out "
                                          f"from its {layout.LAST}, with the recipe stored there "
                                          "(--set may change only when to stop and the "
                                          "device)."),
              overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run "
                                             "already in --out."),
              quiet: bool = typer.Option(False, "--quiet", help="No progress bar (for scripts "
                                         "and logs)."),
              device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda "
                                                   "(overrides train.device)."),
              init_from: Optional[Path] = typer.Option(None, "--init-from", help="Fine-tune: "
                                                       f"start from this run's {layout.BEST} (or a "
                                                       ".pt file) and its tokenizer; optimizer, "
                                                       "schedule and steps start fresh."),
              data: Optional[str] = DATA, src: Optional[str] = SRC_LANG,
              tgt: Optional[str] = TGT_LANG, fmt: Optional[str] = FORMAT,
              src_file: Optional[str] = SRC_FILE, tgt_file: Optional[str] = TGT_FILE):
    """Train a model: best.pt, last.pt, metrics.jsonl and recipe.yaml go into the run directory.

    For several GPUs: torchrun --nproc_per_node=N cli.py train RECIPE ..."""
    from nmt.config import load_recipe, recipe_from_dict
    from nmt.finetune import load_init
    from nmt.rundir import resume_command
    from nmt.training import train

    if init_from is not None and resume:
        raise NMTError("--resume continues the run in --out, --init-from starts a new one from "
                       "a checkpoint's weights; pick one")
    data_sets = _data_sets(data, src, tgt, fmt, src_file, tgt_file)
    sets = data_sets + set_ + ([f"train.device={device}"] if device else [])
    if resume and data_sets:
        raise NMTError("--resume continues with the run's own data; drop --data/--src/--tgt")
    # with --resume the recipe is the run's own: training reads it from last.pt once it holds
    # the run directory's lock, and applies `sets` to it
    r = None
    if resume:
        if out is None and recipe is None:
            raise NMTError("--resume needs --out RUN_DIR: the run to continue")
        out = out or Path("runs") / load_recipe(recipe).name
    elif recipe is None and data_sets:  # the default recipe (a Transformer) on your data
        r = recipe_from_dict({}, where="default recipe", overrides=sets)
        r.name = Path(data or src_file or "default").name.split(".")[0] or "default"
    elif recipe is None:
        raise NMTError("give a recipe file to train, or --data PATH --src LANG --tgt LANG (or "
                       "--resume --out RUN_DIR to continue a run)")
    else:
        r = load_recipe(recipe, sets)
    out = out or Path("runs") / r.name
    init = load_init(init_from, r) if init_from is not None and r is not None else None
    if init is not None:
        err.print(f"fine-tuning from {init.path} (step {init.step}): its weights and "
                  "tokenizer; optimizer, schedule and step count start fresh",
                  highlight=False, markup=False)
    summary = train(r, out, resume=resume, overwrite=overwrite, quiet=quiet,
                    tokenizer=init.tokenizer if init else None,
                    init_weights=init.weights if init else None,
                    overrides=sets if resume else None)
    if summary["interrupted"]:
        # one plain line, never wrapped, so it can be copied whole; the checkpoint holds the
        # recipe, so it needs no recipe file and no --set
        print(f"resume with: {resume_command(out)}", file=sys.stderr, flush=True)
        raise typer.Exit(130)



@app.command("average")
@user_errors
def average_cmd(
        run: Optional[Path] = typer.Argument(None, help="Run directory (with --last K), or the "
                                             "first of the .pt files."),
        files: List[Path] = typer.Argument(None, help="More .pt files to average."),
        last: Optional[int] = typer.Option(None, "--last", help="Average the run's last K "
                                           "periodic checkpoints "
                                           f"({layout.PERIODIC.format(step='N')}; train with "
                                           "train.keep_last >= K)."),
        out: Path = typer.Option(..., "-o", "--out", help="The averaged checkpoint (.pt).")):
    """Average the weights of checkpoints of one model into one that translate, eval and
    attention accept: nmt average RUN --last 5 -o avg.pt, or nmt average a.pt b.pt -o avg.pt."""
    from nmt.average import average

    _output_file(out, "-o")
    paths = average(run, list(files or []), last, out)
    print(f"averaged {len(paths)} checkpoint{'s' * (len(paths) != 1)} "
          f"({', '.join(p.name for p in map(Path, paths))}) -> {out}")


# ---- translate and eval ----

# decoding controls shared by translate and eval --checkpoint
BATCH_TOKENS = typer.Option(None, "--batch-tokens", min=1, help="Source tokens per decoding "
                            "batch (default: the recipe's; its auto is 4,096 on a CPU, 16,384 "
                            "on a GPU).")
ALPHA = typer.Option(None, "--alpha", min=0.0, help="GNMT length penalty ((5+|y|)/6)^alpha "
                     "(default: the recipe's decode.alpha).")
MAX_LEN = typer.Option(None, "--max-len", help="Longest output: N tokens, or a ratio of the "
                       "source length: 1.5x, or 1.5x+10.")
SAMPLE = typer.Option(False, "--sample", help="Draw one translation per line from the model "
                      "instead of searching (e.g. for back-translation).")
TEMPERATURE = typer.Option(None, "--temperature", help="With --sample: divide the logits by "
                           "this (> 0; < 1 sharper, > 1 flatter).")
TOP_K = typer.Option(None, "--top-k", min=0, help="With --sample: draw only from the k likeliest "
                     "tokens (0 = all).")
TOP_P = typer.Option(None, "--top-p", help="With --sample: draw only from the likeliest tokens "
                     "holding probability p (nucleus, 0 < p <= 1).")
SEED = typer.Option(None, "--seed", help="With --sample: the seed (same seed and input, same "
                    "output).")
AMP = typer.Option(None, "--amp", help="Search under bf16 autocast: auto (where it pays: CPUs "
                   "with AVX512-BF16 but no AMX; on CUDA float32 with TF32 is faster), bf16 "
                   "(always) or false (float32; default: the recipe's decode.amp).")
SHORTLIST = typer.Option(None, "--shortlist", min=0, help="Vocabulary shortlist: compute the "
                         "output layer only for the K target pieces that co-occur best with "
                         "each source piece of a batch in the training data, plus the most "
                         "frequent ones (built once from the training data, saved beside the "
                         f"checkpoint as {layout.SHORTLIST}); 0 = the full softmax (default: the "
                         "recipe's decode.shortlist).")
SHORTLIST_FREQUENT = typer.Option(None, "--shortlist-frequent", min=0, help="With --shortlist: "
                                  "the N most frequent target pieces are always allowed "
                                  "(default: the recipe's decode.shortlist_frequent).")
ENSEMBLE = typer.Option([], "--ensemble", help="Another checkpoint (run or .pt, same tokenizer) "
                        "to decode together with --checkpoint, averaging log-probabilities "
                        "per step (repeatable; RNN and Transformer may mix).")


def _decode_options(beam: Optional[int], batch_tokens: Optional[int], nbest: int,
                    alpha: Optional[float], max_len: Optional[str], sample: bool,
                    temperature: Optional[float], top_k: Optional[int], top_p: Optional[float],
                    seed: Optional[int], amp: Optional[str], shortlist: Optional[int],
                    shortlist_frequent: Optional[int]):
    """The decoding options as given (None: the checkpoint recipe's); nmt.decode_options
    applies and checks them, as it does the Python API's."""
    from nmt.decode_options import DecodeOptions

    return DecodeOptions(beam=beam, nbest=nbest, batch_tokens=batch_tokens, alpha=alpha,
                         max_len=max_len, sample=sample, temperature=temperature, top_k=top_k,
                         top_p=top_p, seed=seed, amp=amp, shortlist=shortlist,
                         shortlist_frequent=shortlist_frequent)


def _load_for_decoding(checkpoint: Path, device: str, ensemble: Optional[List[Path]] = None):
    """(model, tokenizer, recipe, device), loaded as the Python API's Translator loads them."""
    from nmt.api import Translator

    t = Translator.load(checkpoint, device, ensemble=ensemble or ())
    return t.model, t.tok, t.recipe, t.device


@app.command("translate", epilog="N-best output: with --nbest N each input line gives N lines "
             "(one for an empty line) of tab-separated fields: input line number (from 1), "
             "rank (from 1), score (log-probability / GNMT length penalty; higher is better), "
             "translation. Typed at a terminal (no input file, stdin not redirected), each "
             "line is translated as soon as it is entered; Ctrl-D ends.")
@user_errors
def translate_cmd(
        input: str = typer.Argument("-", help="UTF-8 text, one sentence per line; - = stdin."),
        checkpoint: Path = typer.Option(..., "--checkpoint", help=f"Run directory (its "
                                        f"{layout.BEST}) or a .pt file."),
        output: str = typer.Option("-", "-o", "--output", help="Output file; - = stdout."),
        beam: Optional[int] = typer.Option(None, "--beam", min=1, help="Beam size; 1 = greedy "
                                           "(default: the recipe's decode.beam)."),
        nbest: int = typer.Option(1, "--nbest", min=1, help="Write the N best translations "
                                  "per line as TSV (see below)."),
        batch_tokens: Optional[int] = BATCH_TOKENS,
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
        alpha: Optional[float] = ALPHA, max_len: Optional[str] = MAX_LEN,
        sample: bool = SAMPLE, temperature: Optional[float] = TEMPERATURE,
        top_k: Optional[int] = TOP_K, top_p: Optional[float] = TOP_P,
        seed: Optional[int] = SEED, ensemble: List[Path] = ENSEMBLE,
        amp: Optional[str] = AMP, shortlist: Optional[int] = SHORTLIST,
        shortlist_frequent: Optional[int] = SHORTLIST_FREQUENT):
    """Translate text: exactly one output line per input line, in order (empty in, empty out;
    a line too long for the model is truncated, with a warning on stderr)."""
    from nmt.prediction import translate_file
    from nmt.shortlist import use_shortlist

    from nmt.export import is_ctranslate2_dir

    if input != "-" and not Path(input).is_file():
        raise NMTError(f"{input}: input file not found")
    if output != "-":
        _output_file(output, "-o")
        if input != "-" and Path(output).exists() and os.path.samefile(input, output):
            raise NMTError(f"-o {output} is the input file; translating it would overwrite "
                           f"it. Choose another -o")
    options = _decode_options(beam, batch_tokens, nbest, alpha, max_len, sample, temperature,
                              top_k, top_p, seed, amp, shortlist, shortlist_frequent)
    if is_ctranslate2_dir(checkpoint):
        return _translate_ctranslate2(checkpoint, input, output, options, ensemble, device)
    model, tok, recipe, dev = _load_for_decoding(checkpoint, device, ensemble)
    dcfg = options.apply(recipe.decode)
    use_shortlist(model, checkpoint, tok, recipe, dcfg)
    # a person typing at a terminal sees each translation at once; piped input is batched
    interactive = input == "-" and sys.stdin.isatty()
    try:
        translate_file(model, tok, input, output, dcfg, dev, nbest,
                       progress=sys.stderr.isatty() and not interactive, interactive=interactive)
    except BrokenPipeError:  # `nmt translate ... | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(1)


def _translate_ctranslate2(path: Path, input: str, output: str, options, ensemble,
                           device: str) -> None:
    """`nmt translate --checkpoint DIR` on a directory written by `nmt export`."""
    from nmt.distributed import resolve_device
    from nmt.export import CT2Model
    from nmt.prediction import translate_file

    options = options.for_ctranslate2(path, ensemble)  # before the model is loaded
    ct = CT2Model(path, resolve_device(device).type)
    dcfg = options.apply(ct.decode_config())
    interactive = input == "-" and sys.stdin.isatty()
    try:
        translate_file(None, ct.tok, input, output, dcfg, "cpu", dcfg.nbest,
                       progress=sys.stderr.isatty() and not interactive,
                       interactive=interactive, decoder=lambda lines, first: ct.translate(
                           lines, dcfg))
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(1)


@app.command("export")
@user_errors
def export_cmd(
        checkpoint: Path = typer.Argument(..., help=f"Run directory (its {layout.BEST}) or .pt "
                                          "file."),
        to: str = typer.Option("ctranslate2", "--to", help="Target format: ctranslate2."),
        out: Path = typer.Option(..., "-o", "--out", help="Directory to write."),
        quantization: str = typer.Option("float32", "--quantization", help="CTranslate2 "
                                         "weight type: float32, int8, int16, float16, ..."),
        force: bool = typer.Option(False, "--force", help="Replace a non-empty --out.")):
    """Export a trained Transformer for serving with CTranslate2 (the SentencePiece model
    goes beside it); nmt translate --checkpoint DIR then decodes with CTranslate2."""
    from nmt.export import export_ctranslate2

    if to != "ctranslate2":
        raise NMTError(f"--to {to}: the only export format is ctranslate2")
    export_ctranslate2(checkpoint, out, quantization, force)
    print(f"exported {checkpoint} to {out} (CTranslate2, {quantization})")


@app.command("eval")
@user_errors
def eval_cmd(
        hyp: List[Path] = typer.Option([], "--hyp", help="Hypothesis file (repeat to compare "
                                       "systems: paired bootstrap against the first)."),
        ref: List[Path] = typer.Option([], "--ref", help="Reference file (repeat for several "
                                       "references)."),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Translate --src "
                                                  "with this run or .pt instead of --hyp."),
        src: Optional[Path] = typer.Option(None, "--src", help="Source file (with --checkpoint)."),
        beam: Optional[int] = typer.Option(None, "--beam", min=1, help="Beam size (with "
                                           "--checkpoint; default: the recipe's)."),
        batch_tokens: Optional[int] = BATCH_TOKENS,
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
        json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
        alpha: Optional[float] = ALPHA, max_len: Optional[str] = MAX_LEN,
        sample: bool = SAMPLE, temperature: Optional[float] = TEMPERATURE,
        top_k: Optional[int] = TOP_K, top_p: Optional[float] = TOP_P,
        seed: Optional[int] = SEED, ensemble: List[Path] = ENSEMBLE,
        amp: Optional[str] = AMP, shortlist: Optional[int] = SHORTLIST,
        shortlist_frequent: Optional[int] = SHORTLIST_FREQUENT,
        tokenize: str = typer.Option("auto", "--tokenize", help="sacreBLEU's BLEU tokenizer: "
                                     "13a, intl, zh, char, none, ja-mecab, ko-mecab, spm, "
                                     "flores101, flores200, or auto: the one for --tgt-lang "
                                     "(ja-mecab for ja, zh for zh, ko-mecab for ko, char for "
                                     "th/lo/km/my, else 13a), with --checkpoint its recipe's "
                                     "eval.tokenize, else 13a."),
        tgt_lang: Optional[str] = typer.Option(None, "--tgt-lang", help="The references' "
                                               "language, for --tokenize auto (default: the "
                                               "checkpoint recipe's data.tgt_lang)."),
        lowercase: bool = typer.Option(False, "--lowercase", help="Score BLEU and chrF "
                                       "case-insensitively, as papers that score lower-cased "
                                       "text do (with --checkpoint also when its recipe's "
                                       "eval.lowercase says so).")):
    """Score translations with sacreBLEU: BLEU (tokenized for the target language, see
    --tokenize; cased unless asked), chrF and TER, with signatures.

    nmt eval --hyp H --ref R; several --hyp: paired bootstrap vs the first. nmt eval
    --checkpoint RUN --src S --ref R: translate S, score it, and report the teacher-forced
    perplexity of R given S."""
    import json

    from nmt.evaluation import (metrics, read_aligned, read_text, resolve_tokenize, score_systems,
                                score_table)

    if tokenize != "auto" or checkpoint is None:  # else the checkpoint's recipe says, below
        tokenize = resolve_tokenize(tokenize, tgt_lang or "")
        metrics(tokenize, lowercase)  # a bad --tokenize fails before anything is decoded
    result: dict = {"refs": [str(p) for p in ref]}
    options = _decode_options(beam, batch_tokens, 1, alpha, max_len, sample, temperature, top_k,
                              top_p, seed, amp, shortlist, shortlist_frequent)
    if checkpoint is not None:
        if hyp or src is None:
            raise NMTError("with --checkpoint, give --src and --ref (and no --hyp)")
        from nmt.api import Translator

        src_lines = read_text(src, "source")
        _, refs = read_aligned([], [str(p) for p in ref])
        if len(src_lines) != len(refs[0]):
            raise NMTError(f"{src} has {len(src_lines)} lines but {ref[0]} has "
                           f"{len(refs[0])}; source and references must be line-aligned")
        got = Translator.load(checkpoint, device, ensemble=ensemble or ()).evaluate(
            src_lines, refs, options, tokenize, tgt_lang or "", lowercase,
            progress=sys.stderr.isatty())
        tokenize, lowercase = got.pop("tokenize"), got.pop("lowercase")
        hyps = {str(checkpoint): got.pop("translations")}
        result.update(checkpoint=str(checkpoint), src=str(src), **got,
                      ensemble=[str(p) for p in ensemble])
    else:
        if not hyp or src is not None:
            raise NMTError("give --hyp FILE and --ref FILE (or --checkpoint RUN --src FILE "
                           "--ref FILE to translate first)")
        stray = options.given(ensemble)
        if stray:
            raise NMTError(f"{', '.join(stray)} control decoding, which needs --checkpoint RUN "
                           "--src FILE; --hyp files are scored as they are")
        hyps, refs = read_aligned([str(p) for p in hyp], [str(p) for p in ref])
    result["tokenize"] = tokenize
    result.update(score_systems(hyps, refs, tokenize, lowercase))
    if json_out:
        print(json.dumps(result, indent=2))
        return
    scores = score_table(result)
    out = Console()
    out.print(scores.table)
    if scores.perplexity:
        out.print(scores.perplexity, highlight=False)
    for line in scores.signatures:
        out.print(line, highlight=False, soft_wrap=True)


# ---- compare and attention ----

@app.command()
@user_errors
def compare(recipe: Path = typer.Argument(..., help="Comparison recipe (YAML with `systems:`)."),
            out: Optional[Path] = typer.Option(None, "--out", help="Output directory "
                                               "(default runs/<recipe name>)."),
            only: List[str] = typer.Option([], "--only", help="Run only these systems."),
            set_: List[str] = typer.Option([], "--set", help="section.key=value for every system."),
            device: str = typer.Option("auto", help="auto | cpu | cuda"),
            quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
            retrain: bool = typer.Option(False, "--retrain", help="Train again the systems (and "
                                         "the tokenizer) whose recipe changed since they were "
                                         "trained in --out; without it such a change is an "
                                         "error."),
            seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="Train every "
                                                "system N times, with train.seed + k (k = 0.."
                                                "N-1): mean ± sd over seeds in the report "
                                                "(default: the recipe's seeds, else 1)."),
            jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Train N systems at once, "
                                     "each in its own process with its share of the CPU cores "
                                     "(on one GPU, all of compare.yaml's six at once)."),
            data: Optional[str] = DATA, src: Optional[str] = SRC_LANG,
            tgt: Optional[str] = TGT_LANG, fmt: Optional[str] = FORMAT,
            src_file: Optional[str] = SRC_FILE, tgt_file: Optional[str] = TGT_FILE):
    """Train, decode and score every system of a comparison, then write its report.

    Re-running continues where it stopped and reuses only what matches the recipe now."""
    from nmt.compare import load_comparison, run

    sets = _data_sets(data, src, tgt, fmt, src_file, tgt_file) + set_
    cmp = load_comparison(recipe, sets, seeds=seeds)
    run(cmp, out or Path("runs") / cmp.name, only=only, device=device, quiet=quiet,
        retrain=retrain, jobs=jobs)


IMAGE_TYPES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


@app.command()
@user_errors
def attention(checkpoint: Path = typer.Option(..., "--checkpoint", help="Run directory or .pt."),
              text: str = typer.Option(..., "--text", help="Source sentence to translate."),
              out: Path = typer.Option(Path("attention.png"), "-o", "--out", help="PNG to write.")):
    """Translate one sentence and draw its attention heatmap."""
    from nmt.checkpoint import load_for_inference
    from nmt.plots import heatmaps, sentence_attention

    if not text.strip():
        raise NMTError("--text is empty; give a sentence to translate")
    if out.suffix.lower() not in IMAGE_TYPES:
        raise NMTError(f"-o {out}: the picture is written as PNG, PDF, SVG or JPEG; end the name "
                       f"in {', '.join(IMAGE_TYPES)}")
    _output_file(out, "-o")
    model, tok, _ = load_for_inference(checkpoint, "cpu")
    src, hyp, maps, translation = sentence_attention(model, tok, text)
    print(translation)
    if not maps:
        raise NMTError(f"{checkpoint}: this model has no attention to draw (attention: none)")
    heatmaps(maps, src, hyp, out, title=text)
    err.print(f"wrote {out}", markup=False)


# the help is rich markup: the backslash before [serve] keeps the brackets shown
@app.command()
@user_errors
def serve(runs: List[str] = typer.Argument(..., help="Run directories (or .pt files) to serve, "
                                           "each named by its folder, or NAME=RUN."),
          host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: "
                                   "every interface; the API has no authentication)."),
          port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
          device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
          threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads "
                                                "for decoding (default: torch's, one per "
                                                "core)."),
          max_texts: int = typer.Option(64, "--max-texts", min=1, help="Texts per request."),
          max_chars: int = typer.Option(2000, "--max-chars", min=1, help="Characters per text."),
          window_ms: float = typer.Option(5.0, "--window-ms", min=0.0, help="How long a lone "
                                          "request waits for others to be decoded with it.")):
    """Serve trained runs over HTTP, with a page at / that shows each system's translation and
    attention (pip install 'nmt\\[serve]'). POST /translate, GET /systems, GET /health."""
    from nmt.serve import Limits, require_serve
    from nmt.serve import serve as run_server

    require_serve()  # before minutes of loading; user_errors prints it escaped (nmt[serve])
    if threads:
        import torch

        torch.set_num_threads(threads)
    run_server(runs, host, port, device, Limits(max_texts=max_texts, max_chars=max_chars,
                                                window_ms=window_ms))


# Typer's command lists keep the docstrings' line breaks ("... into one that / translate, eval
# and / attention accept"); each command's summary there is its first paragraph on one line
for typer_app in (app, data_app, tokenizer_app):
    for command in typer_app.registered_commands:
        first = (command.help or command.callback.__doc__ or "").split("\n\n")[0]
        command.short_help = command.short_help or " ".join(first.split())

if __name__ == "__main__":
    app()
