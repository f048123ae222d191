"""Translating text, and scoring it under teacher forcing.

Lines are decoded in length-sorted, token-budget batches (little padding, long sentences in
small batches) and put back in input order, so output line i always belongs to input line i:
an empty line gives an empty line, a line longer than the model can read is truncated (with a
warning on stderr), and no line is ever dropped. Files are streamed in chunks, so memory stays
bounded however long the input is.

Precision: every decoding and teacher-forced scoring (validation during training, translate,
eval, compare) runs under `decoding_precision`, whatever autocast the caller has on: the search
under bf16 autocast where decode.amp says so (by default where bf16 pays), else float32;
teacher-forced scoring always float32.
"""
from __future__ import annotations

import contextlib
import gzip
import math
import sys
import zlib
from pathlib import Path
from typing import IO, Iterator

import torch
import torch.nn.functional as F

from nmt.atomic import atomic_write
from nmt.batching import Prefetch, collate, token_batches
from nmt.config import DecodeConfig
from nmt.distributed import decode_batch_tokens, uses_bf16
from nmt.errors import NMTError
from nmt.search import decoding_generator, max_output_len, translate_batch
from nmt.special import PAD

CHUNK_LINES = 10_000   # lines read, sorted and decoded together when streaming a file
MAX_SRC_TOKENS = 1024  # source cap (incl. EOS) for models without a position table


@contextlib.contextmanager
def eval_mode(model):
    """Dropout off while decoding or scoring; the caller (e.g. training) gets its mode back."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def decoding_precision(device, amp: bool | str = False):
    """The one precision rule of decoding and scoring, whatever autocast the caller has on
    (training's bf16 autocast included): bf16 autocast where `amp` says so, else float32 (on
    CUDA with TF32 matmuls, as training sets for its float32 matmuls). So a validation BLEU is
    what `nmt translate` or `nmt compare` gives with the same settings, and perplexities
    compare between runs with and without train.amp. Validation, translate/eval and compare
    all decode through _decode and teacher_forced_loss, which apply it.

    The search passes decode.amp (read as train.amp: auto, the recipe default, where bf16 pays
    on `device`; bf16 always): the matrix products in bf16, the log-softmax and the hypothesis
    scores still in float32 (the models' `step`, search.py). Scoring under teacher forcing
    leaves `amp` False and stays float32."""
    device = torch.device(device)
    matmul = torch.get_float32_matmul_precision()
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(amp, device)):
            yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        # the weights' bf16 copies made while decoding (search.py) go with it, also when the
        # caller's autocast is still on and will update the weights before its own exit
        torch.clear_autocast_cache()


def source_cap(model) -> int:
    """Most source tokens (EOS included) the model is given."""
    positions = getattr(model, "max_positions", None)
    return min(MAX_SRC_TOKENS, int(positions)) if positions else MAX_SRC_TOKENS


def _progress(enabled: bool):
    """A bar on stderr (only when asked: the CLI asks when stderr is a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress("translating", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True, disable=not enabled)


def _search(model, pairs: list[tuple[list[int], list[int]]], idx: list[int], dcfg: DecodeConfig,
            device, out_cap: int | None, generator: torch.Generator | None,
            where: str) -> list[list[tuple[list[int], float]]]:
    """translate_batch over the sentences `idx` of `pairs`. A batch the GPU has no memory for is
    searched again as two halves (and so on down to one sentence): a sentence's search does not
    depend on the others in its batch, so the translations are the same (sampling draws its
    numbers in another order)."""
    b = collate(pairs, idx).to(device)  # the lengths stay on the CPU, where search reads
    try:
        return translate_batch(model, b.src, b.src_len, dcfg, out_cap, generator)
    except torch.OutOfMemoryError:
        pass  # retried below, once the exception and the failed search's tensors are gone
    del b
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()  # the failed batch's cached blocks, for the halves
    if len(idx) == 1:
        raise NMTError(f"{where}: one sentence does not fit in the GPU's memory for a beam of "
                       f"{dcfg.beam}; use a smaller --beam or --device cpu")
    half = len(idx) // 2
    print(f"warning: {where}: a batch of {len(idx)} sentences did not fit in memory; searching "
          f"it as two of {half} and {len(idx) - half} (a smaller --batch-tokens avoids this)",
          file=sys.stderr)
    return [h for part in (idx[:half], idx[half:])
            for h in _search(model, pairs, part, dcfg, device, out_cap, generator, where)]


def _decode(model, tok, lines: list[str], dcfg: DecodeConfig, device, where: str = "input",
            first_line: int = 1, advance=None,
            generator: torch.Generator | None = None) -> list[list[tuple[str, float]]]:
    """Per line its n-best (translation, score); an empty line gets [("", 0.0)]. Sampling
    draws from `generator`, created here from dcfg.seed when not given."""
    out: list[list[tuple[str, float]]] = [[("", 0.0)] for _ in lines]
    todo = [i for i, s in enumerate(lines) if s.strip()]
    if advance is not None:
        advance(len(lines) - len(todo))
    if not todo:
        return out
    ids = tok.encode_src([lines[i].strip() for i in todo])
    cap = source_cap(model) - 1  # room for the EOS collate appends
    for i, x in zip(todo, ids):
        if len(x) > cap:
            print(f"warning: {where}: line {first_line + i} has {len(x)} source tokens, more "
                  f"than the model reads ({cap}); truncated to the first {cap}", file=sys.stderr)
    pairs = [(x[:cap], []) for x in ids]
    lens = [len(x) for x, _ in pairs]
    out_cap = max_output_len(model)
    generator = generator or decoding_generator(dcfg, device)
    with eval_mode(model), decoding_precision(device, dcfg.amp):
        budget = decode_batch_tokens(dcfg.batch_tokens, device)
        for idx in token_batches(lens, lens, budget, 0, 0, shuffle=False):
            hyps = _search(model, pairs, idx, dcfg, device, out_cap, generator, where)
            texts = tok.decode_tgt([y for h in hyps for y, _ in h])
            k = 0
            for j, h in zip(idx, hyps):
                out[todo[j]] = [(texts[k + r], s) for r, (_, s) in enumerate(h)]
                k += len(h)
            if advance is not None:
                advance(len(idx))
    return out


def _warn_empty(where: str, empty: int, nonempty: int, beam: int) -> None:
    """Say so when real sentences got empty translations: a wide beam on a weak model prefers
    the short, high-probability "</s>" (validation during training stays quiet)."""
    if empty:
        print(f"warning: {where}: {empty} of {nonempty} non-empty lines got an empty "
              f"translation (beam {beam}); the model is likely under-trained: train it longer "
              f"or use a smaller --beam", file=sys.stderr)


def translate_lines(model, tok, lines: list[str], dcfg: DecodeConfig, device,
                    progress: bool = False, check=None) -> list[str]:
    """One translation per input line, in input order (the best of the n-best). `check()` is
    called after each batch and may raise to abandon the rest (training's validation does
    when a stop signal arrives)."""
    def advance(n: int) -> None:
        bar.advance(task, n)
        if check is not None:
            check()

    with _progress(progress) as bar:
        task = bar.add_task("translate", total=len(lines))
        nbest = _decode(model, tok, lines, dcfg, device, advance=advance)
    return [_one_line(h[0][0]) for h in nbest]


# every character str.splitlines() breaks a line at (tools reading the output may too: U+0085 is
# NEL, which SentencePiece keeps as a piece of cp1252 mojibake), and the TSV field separator
LINE_BREAKS = str.maketrans({c: " " for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029\t"})


def _one_line(text: str) -> str:
    """Nothing in a translation may split it into two output lines or TSV fields."""
    return text.translate(LINE_BREAKS)


def read_text_lines(source: str | Path, chunk: int = CHUNK_LINES) -> Iterator[list[str]]:
    """Chunks of lines from a UTF-8 file or stdin ("-"); a bad byte is an NMTError with the line
    number. Only a trailing newline (and CR) is removed."""
    name = "stdin" if str(source) == "-" else str(source)
    if name == "stdin":
        f = sys.stdin.buffer
        close = False
    else:
        try:
            f = gzip.open(source, "rb") if name.endswith(".gz") else open(source, "rb")
        except FileNotFoundError:
            raise NMTError(f"{name}: file not found") from None
        except OSError as e:
            raise NMTError(f"{name}: cannot read it ({e.strerror or e})") from None
        close = True
    try:
        buf: list[str] = []
        for n, raw in enumerate(f, 1):  # splits on b"\n" only, unlike str.splitlines
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise NMTError(f"{name}: line {n} is not valid UTF-8 ({e.reason}); convert the "
                               "file to UTF-8, e.g. with iconv") from None
            if n == 1:
                line = line.removeprefix("\ufeff")
            buf.append(line.removesuffix("\n").removesuffix("\r"))
            if len(buf) == chunk:
                yield buf
                buf = []
        if buf:
            yield buf
    except (OSError, EOFError, zlib.error) as e:  # gzip: not gzip, truncated, corrupt
        if isinstance(f, gzip.GzipFile):
            raise NMTError(f"{name}: not a readable gzip file ({e}); it may be truncated or "
                           f"corrupt") from None
        raise
    finally:
        if close:
            f.close()


@contextlib.contextmanager
def _open_output(output: str | Path | None) -> Iterator[IO[str]]:
    """stdout for None or "-"; a file is written beside its target and renamed when complete,
    so a crash never leaves a half translation that looks finished."""
    if output is None or str(output) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    path = Path(output)
    if not path.parent.is_dir():
        raise NMTError(f"{path}: directory {path.parent} does not exist")
    with atomic_write(path) as f:
        yield f


def translate_file(model, tok, source: str | Path, output: str | Path | None,
                   dcfg: DecodeConfig, device, nbest: int = 1, progress: bool = False,
                   interactive: bool = False, decoder=None) -> int:
    """Translate a file (or "-" for stdin) to `output` (a path, or None/"-" for stdout).

    Exactly one line per input line. With nbest > 1, N lines per input line (one for an empty
    line) of tab-separated `line number (from 1), rank (from 1), score, translation`, the
    score being log P(y|x) / lp(y) (higher is better). Returns the number of input lines.
    `interactive` (a person typing at a terminal): each line is translated and written as soon
    as it is read, instead of in batches of CHUNK_LINES. `decoder(lines, first_line) -> n-best
    per line` decodes with another engine (an exported CTranslate2 model) instead of `model`.
    """
    if not 1 <= nbest <= dcfg.beam:
        raise NMTError(f"--nbest {nbest} needs a beam at least that wide (beam is {dcfg.beam}); "
                       f"pass --beam {max(nbest, 1)}")
    dcfg = DecodeConfig(**{**vars(dcfg), "nbest": nbest})
    where = "stdin" if str(source) == "-" else str(source)
    generator = decoding_generator(dcfg, device)  # one stream for the whole input
    done = empty = nonempty = 0
    with _open_output(output) as out, _progress(progress) as bar:
        task = bar.add_task("translate", total=None)
        for chunk in read_text_lines(source, 1 if interactive else CHUNK_LINES):
            if decoder is None:
                hyps = _decode(model, tok, chunk, dcfg, device, where, done + 1,
                               lambda n: bar.advance(task, n), generator)
            else:
                hyps = decoder(chunk, done + 1)
                bar.advance(task, len(chunk))
            if nbest == 1:
                out.write("".join(_one_line(h[0][0]) + "\n" for h in hyps))
            else:
                out.write("".join(f"{done + i + 1}\t{r + 1}\t{s:.4f}\t{_one_line(t)}\n"
                                  for i, h in enumerate(hyps) for r, (t, s) in enumerate(h)))
            out.flush()
            done += len(chunk)
            nonempty += sum(1 for s in chunk if s.strip())
            empty += sum(1 for s, h in zip(chunk, hyps) if s.strip() and not h[0][0])
    _warn_empty(where, empty, nonempty, dcfg.beam)
    return done


@torch.inference_mode()
def teacher_forced_loss(model, pairs: list[tuple[list[int], list[int]]], batch_tokens: int | str,
                        device) -> tuple[float, float]:
    """(mean NLL per target token incl. EOS, perplexity = exp(NLL)).

    Plain cross-entropy of the reference under teacher forcing, no label smoothing, the same
    for every model, so RNN and Transformer perplexities compare. Sides longer than the model
    reads are cut, as translation cuts them. The sum stays on the device until the end (one
    read), and the next batch is prepared while the GPU computes the current one.
    """
    if not pairs:
        raise NMTError("no sentence pairs to score")
    cap_src, cap_tgt = source_cap(model) - 1, max_output_len(model) or MAX_SRC_TOKENS
    pairs = [(x[:cap_src], y[:cap_tgt]) for x, y in pairs]
    total, ntokens = torch.zeros((), dtype=torch.float64, device=device), 0
    src_lens = [len(x) for x, _ in pairs]
    tgt_lens = [len(y) for _, y in pairs]
    batches = token_batches(src_lens, tgt_lens, decode_batch_tokens(batch_tokens, device), 0, 0,
                            shuffle=False)
    stream = Prefetch(batches, lambda idx: collate(pairs, idx), device)
    with eval_mode(model), decoding_precision(device):
        for _, b in stream:
            logits, _ = model(b.src, b.src_len, b.tgt_in, attention=False)  # (B, T, V)
            total += F.cross_entropy(logits.float().flatten(0, 1), b.tgt_out.flatten(),
                                     ignore_index=PAD, reduction="sum")
            ntokens += b.ntokens
            stream.ahead()
    nll = total.item() / ntokens
    return nll, math.exp(min(nll, 700.0))  # exp overflows a float past ~709
