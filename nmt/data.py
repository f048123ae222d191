"""Parallel text in, token-id pairs out.

`load_split` reads one split from any source (Multi30k, plain/gzip files, TSV, JSONL, Hugging Face
datasets) into aligned, validated sentence lists; `encode_pairs` tokenizes them and, for training
only, drops the pairs that would hurt it. Bad input is an NMTError that names the file, the line
when there is one, and what to do.
"""
from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nmt.batching import padding_fraction, token_batches
from nmt.config import DataConfig
from nmt.errors import NMTError
from nmt import identity
from nmt.identity import cache_root
from nmt.multi30k import multi30k_dir, split_files
from nmt.tokenizer import Tokenizer


@dataclass
class Corpus:            # raw parallel text of one split, aligned, validated
    src: list[str]
    tgt: list[str]
    name: str            # like "multi30k:train" or a file path
    # absolute paths of the files load_split read for this split (empty for a Hugging Face hub
    # dataset): what its content identity is computed from (nmt/identity.py)
    files: tuple[str, ...] = ()


@dataclass
class FilterReport:
    total: int
    empty: int           # either side empty
    too_long: int        # more than max_len tokens on a side
    bad_ratio: int       # longer side / shorter side > max_ratio
    kept: int


# ----------------------------------------------------------------------------- reading

def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file, gzip-compressed if it ends in .gz; only the newline (and a
    CR before it) is removed."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NMTError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise NMTError(f"{path}: is a directory, not a text file") from None
    except OSError as e:
        raise NMTError(f"{path}: cannot read it ({e.strerror or e})") from None
    if path.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise NMTError(f"{path}: not a readable gzip file ({e}); it may be truncated or "
                           f"corrupt: delete it and download or compress it again") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise NMTError(f"{path}: line {line} is not valid UTF-8 ({e.reason}); convert the file "
                       f"to UTF-8, e.g. with iconv") from None
    lines = text.removeprefix("\ufeff").split("\n")  # not splitlines(): it also splits on \x85
    if lines[-1] == "":
        lines.pop()
    return [s.removesuffix("\r") for s in lines]


def _find(path: Path) -> Path:
    """path, or path.gz when only the compressed file exists."""
    gz = path.with_name(path.name + ".gz")
    if path.is_dir():
        raise NMTError(f"{path}: is a directory, not a text file; check data.path and the split "
                       f"and language names")
    if not path.is_file() and gz.is_file():
        return gz
    if not path.is_file():
        raise NMTError(f"{path}: file not found (nor {gz.name}); check data.path and the "
                       f"split and language names")
    return path


def read_parallel(src_path: Path, tgt_path: Path) -> tuple[list[str], list[str]]:
    src = [s.strip() for s in read_lines(src_path)]
    tgt = [s.strip() for s in read_lines(tgt_path)]
    for path, lines in ((src_path, src), (tgt_path, tgt)):
        if not any(lines):
            raise NMTError(f"{path}: holds no text ({'only blank lines' if lines else 'empty'}); "
                           f"check that it is the right file")
    if len(src) != len(tgt):
        raise NMTError(f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; line i "
                       f"of one must translate line i of the other")
    return src, tgt


def _fields(cfg: DataConfig) -> tuple[str, str]:
    # tsv/jsonl without named fields use the language codes as column names
    return cfg.src_field or cfg.src_lang, cfg.tgt_field or cfg.tgt_lang


def _text(value, where: str, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise NMTError(f"{where}: field {field!r} is {type(value).__name__}, expected text")
    return value.strip()


def _tsv(path: Path, cfg: DataConfig) -> tuple[list[str], list[str]]:
    lines = read_lines(path)
    if not lines:
        raise NMTError(f"{path}: empty; a TSV needs a header row naming its columns")
    header = lines[0].split("\t")
    cols = []
    for f in _fields(cfg):
        if f not in header:
            raise NMTError(f"{path}: no column {f!r} in the header ({', '.join(header)}); "
                           f"set data.src_field / data.tgt_field")
        cols.append(header.index(f))
    src, tgt = [], []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        row = line.split("\t")
        if len(row) != len(header):
            raise NMTError(f"{path}: line {n} has {len(row)} tab-separated fields, the header "
                           f"has {len(header)} (a tab inside a sentence?)")
        src.append(row[cols[0]].strip())
        tgt.append(row[cols[1]].strip())
    return src, tgt


def _jsonl(path: Path, cfg: DataConfig) -> tuple[list[str], list[str]]:
    fs, ft = _fields(cfg)
    src, tgt = [], []
    for n, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise NMTError(f"{path}: line {n} is not valid JSON ({e.msg})") from None
        where = f"{path}: line {n}"
        if not isinstance(obj, dict) or fs not in obj or ft not in obj:
            raise NMTError(f"{where}: expected an object with fields {fs!r} and {ft!r}; "
                           f"set data.src_field / data.tgt_field")
        src.append(_text(obj[fs], where, fs))
        tgt.append(_text(obj[ft], where, ft))
    return src, tgt


def _hf(cfg: DataConfig, split: str, limit: int) -> tuple[list[str], list[str], str]:
    """A Hugging Face dataset: a `save_to_disk` directory, else anything `load_dataset` takes (a
    hub name, a local folder of data files). Pairs come from a `translation` column of
    {lang: text} dicts (as in wmt14) or from two named columns (as in bentrevett/multi30k)."""
    try:
        import datasets  # slow to import; only this source needs it
    except ImportError:
        raise NMTError(f"data.source hf needs the `datasets` package, which is not "
                       f"installed (pip install datasets); or save {cfg.path!r} as files, tsv "
                       f"or jsonl and set data.source to match") from None

    name = f"hf:{cfg.path}" + (f"/{cfg.hf_config}" if cfg.hf_config else "") + f":{split}"
    saved = Path(cfg.path)
    if (saved / "dataset_dict.json").is_file() or (saved / "state.json").is_file():
        try:
            ds = datasets.load_from_disk(cfg.path)
        except (FileNotFoundError, ValueError) as e:
            raise NMTError(f"{cfg.path}: cannot read this save_to_disk dataset ({e})") from None
        if not isinstance(ds, datasets.DatasetDict):
            raise NMTError(f"{cfg.path}: holds a single Dataset; save a DatasetDict with "
                           f"{split!r} among its splits")
        if split not in ds:
            raise NMTError(f"{cfg.path}: no split {split!r}; it has {', '.join(ds)}; "
                           f"set data.train / data.valid / data.test")
        ds = ds[split]
    else:
        try:
            ds = datasets.load_dataset(cfg.path, cfg.hf_config or None, split=split)
        except Exception as e:  # network, unknown name/config/split: all the user's to fix
            raise NMTError(f"{name}: load_dataset failed ({type(e).__name__}: {e})") from None
    if limit:
        ds = ds.select(range(min(limit, len(ds))))
    if not cfg.src_field:
        if "translation" not in ds.column_names:
            raise NMTError(f"{name}: no `translation` column (columns: "
                           f"{', '.join(ds.column_names)}); set data.src_field / data.tgt_field")
        src, tgt = [], []
        for n, pair in enumerate(ds["translation"]):
            if not isinstance(pair, dict) or cfg.src_lang not in pair or cfg.tgt_lang not in pair:
                keys = ", ".join(pair) if isinstance(pair, dict) else type(pair).__name__
                raise NMTError(f"{name}: row {n}: translation has {keys}, not "
                               f"{cfg.src_lang!r} and {cfg.tgt_lang!r}; check data.src_lang / "
                               f"data.tgt_lang")
            src.append(_text(pair[cfg.src_lang], f"{name}: row {n}", cfg.src_lang))
            tgt.append(_text(pair[cfg.tgt_lang], f"{name}: row {n}", cfg.tgt_lang))
        return src, tgt, name
    fs, ft = _fields(cfg)
    for f in (fs, ft):
        if f not in ds.column_names:
            raise NMTError(f"{name}: no column {f!r} (columns: {', '.join(ds.column_names)})")
    src = [_text(v, f"{name}: row {n}", fs) for n, v in enumerate(ds[fs])]
    tgt = [_text(v, f"{name}: row {n}", ft) for n, v in enumerate(ds[ft])]
    return src, tgt, name


def load_split(cfg: DataConfig, split: str, limit: int = 0) -> Corpus:
    """One split of the configured source, aligned and validated, each sentence stripped of
    surrounding whitespace; the first `limit` pairs if limit > 0. Nothing is filtered here (see
    encode_pairs)."""
    src_lang, tgt_lang = cfg.src_lang, cfg.tgt_lang
    if cfg.source == "multi30k":
        files = split_files(split, (src_lang, tgt_lang))
        d = multi30k_dir(files=files)  # only this split's two languages are fetched
        src, tgt = read_parallel(d / files[0], d / files[1])
        name = f"multi30k:{split}"
        read = (d / files[0], d / files[1])
    elif cfg.source == "files":
        d = Path(cfg.path)
        read = (_find(d / f"{split}.{src_lang}"), _find(d / f"{split}.{tgt_lang}"))
        src, tgt = read_parallel(*read)
        name = f"{d / split}.{{{src_lang},{tgt_lang}}}"
    elif cfg.source in ("tsv", "jsonl"):
        path = _find(Path(cfg.path) / f"{split}.{cfg.source}")
        src, tgt = (_tsv if cfg.source == "tsv" else _jsonl)(path, cfg)
        name = str(path)
        read = (path,)
    elif cfg.source == "hf":
        src, tgt, name = _hf(cfg, split, limit)
        read = ()  # a hub dataset's identity is its text (nmt/identity.py)
    else:  # validate() rejects this already; here for recipes built without it
        raise NMTError(f"data.source: unknown source {cfg.source!r}")
    if limit:
        src, tgt = src[:limit], tgt[:limit]
    for side, lines in ((src_lang, src), (tgt_lang, tgt)):
        if not any(lines):  # a blank-only split would train, validate or score on nothing
            raise NMTError(f"{name}: the {side} side holds no text (empty or blank lines only); "
                           f"check data.path, the split names and the fields")
    return Corpus(src, tgt, name, tuple(str(Path(p).absolute()) for p in read))


def absolute_path(cfg: DataConfig) -> str:
    """data.path made absolute where it names a local file or folder (files/tsv/jsonl always; hf
    when one exists there), else as it is (a hub name, or empty for multi30k)."""
    if not cfg.path or (cfg.source == "hf" and not Path(cfg.path).exists()):
        return cfg.path
    return os.path.abspath(cfg.path)


# ----------------------------------------------------------------------------- encoding

def _filter(s: np.ndarray, t: np.ndarray, cfg: DataConfig) -> tuple[np.ndarray, FilterReport]:
    """filter_pairs on arrays of lengths: the kept indices as an array."""
    s, t = np.asarray(s, dtype=np.int64), np.asarray(t, dtype=np.int64)
    empty = (s == 0) | (t == 0)
    too_long = ~empty & ((s > cfg.max_len) | (t > cfg.max_len))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(s, t) / np.minimum(s, t)  # IEEE division, as max(s, t) / min(s, t)
    bad_ratio = ~empty & ~too_long & (ratio > cfg.max_ratio)
    keep = np.flatnonzero(~(empty | too_long | bad_ratio))
    return keep, FilterReport(len(s), int(empty.sum()), int(too_long.sum()),
                              int(bad_ratio.sum()), len(keep))


def filter_pairs(src_lens: list[int], tgt_lens: list[int],
                 cfg: DataConfig) -> tuple[list[int], FilterReport]:
    """Indices of the pairs training keeps, and why the others go: an empty side, more than
    max_len tokens on a side, or a length ratio above max_ratio (likely misaligned)."""
    keep, report = _filter(np.asarray(src_lens), np.asarray(tgt_lens), cfg)
    return keep.tolist(), report


def encode_pairs(corpus: Corpus, tok: Tokenizer, cfg: DataConfig,
                 train: bool) -> tuple[list[tuple[list[int], list[int]]], FilterReport]:
    """Token ids (no BOS/EOS) per pair. train=True filters (see filter_pairs); train=False keeps
    every pair, so output i is input line i, as scoring against references needs."""
    src, tgt = tok.encode_src(corpus.src), tok.encode_tgt(corpus.tgt)
    if not train:
        n = len(src)
        return list(zip(src, tgt)), FilterReport(n, 0, 0, 0, n)
    keep, report = filter_pairs([len(x) for x in src], [len(y) for y in tgt], cfg)
    return [(src[i], tgt[i]) for i in keep], report


# ----------------------------------------------------------------------------- large corpora

class EncodedPairs:
    """The token ids of many pairs in four flat arrays (ids and offsets per side), in memory or
    memory-mapped from the encoded-corpus cache: no Python object per pair. pairs[i] is
    (source ids, target ids) as lists, as `collate` reads them; lengths are arrays."""

    def __init__(self, src: np.ndarray, src_off: np.ndarray, tgt: np.ndarray,
                 tgt_off: np.ndarray):
        self.src, self.src_off, self.tgt, self.tgt_off = src, src_off, tgt, tgt_off

    def __len__(self) -> int:
        return len(self.src_off) - 1

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:
        so, to = self.src_off, self.tgt_off
        return (self.src[so[i]:so[i + 1]].tolist(), self.tgt[to[i]:to[i + 1]].tolist())

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def src_lens(self) -> np.ndarray:   # (N,) int64
        return np.diff(self.src_off)

    @property
    def tgt_lens(self) -> np.ndarray:   # (N,) int64
        return np.diff(self.tgt_off)

    def select(self, keep: np.ndarray) -> "EncodedPairs":
        """The pairs at `keep` (ascending indices, as filtering gives), copied into new arrays.
        A mask of one byte per token picks their ids: no index array as long as the ids."""
        mask = np.zeros(len(self), dtype=bool)
        mask[keep] = True

        def side(ids: np.ndarray, off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            lens = np.diff(off)
            new_off = np.zeros(len(keep) + 1, dtype=np.int64)
            np.cumsum(lens[keep], out=new_off[1:])
            return ids[np.repeat(mask, lens)], new_off
        return EncodedPairs(*side(self.src, self.src_off), *side(self.tgt, self.tgt_off))


def pair_lengths(pairs) -> tuple[np.ndarray, np.ndarray]:
    """(source lengths, target lengths) of a list of pairs or an EncodedPairs, as int64 arrays."""
    if isinstance(pairs, EncodedPairs):
        return pairs.src_lens, pairs.tgt_lens
    return (np.fromiter((len(s) for s, _ in pairs), np.int64, len(pairs)),
            np.fromiter((len(t) for _, t in pairs), np.int64, len(pairs)))


ENCODE_CHUNK = 20_000  # lines encoded at once: their lists of ids are the only per-line objects


def encode_lines(encode, lines: list[str], vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, offsets) of lines encoded by `encode` (which uses every core), chunk by chunk, so
    that at most ENCODE_CHUNK lines exist as lists of ids at once. ids are uint16 where the
    vocabulary fits, else int32."""
    dtype = np.uint16 if vocab_size <= 1 << 16 else np.int32
    lens = np.zeros(len(lines) + 1, dtype=np.int64)
    parts = []
    for a in range(0, len(lines), ENCODE_CHUNK):
        enc = encode(lines[a:a + ENCODE_CHUNK])
        n = np.fromiter(map(len, enc), np.int64, len(enc))
        lens[a + 1:a + 1 + len(enc)] = n
        parts.append(np.fromiter(itertools.chain.from_iterable(enc), dtype, int(n.sum())))
    return (np.concatenate(parts) if parts else np.zeros(0, dtype)), np.cumsum(lens)


def encode_train(corpus: Corpus, tok: Tokenizer, cfg: DataConfig
                 ) -> tuple[EncodedPairs, FilterReport]:
    """encode_pairs(train=True) into arrays: the same pairs in the same order."""
    src = encode_lines(tok.encode_src, corpus.src, tok.src_vocab_size)
    tgt = encode_lines(tok.encode_tgt, corpus.tgt, tok.tgt_vocab_size)
    pairs = EncodedPairs(*src, *tgt)
    keep, report = _filter(pairs.src_lens, pairs.tgt_lens, cfg)
    return (pairs if len(keep) == len(pairs) else pairs.select(keep)), report


def split_paths(cfg: DataConfig, split: str) -> list[Path] | None:
    """The files load_split would read for `split`, found without reading them (a Multi30k file
    is fetched and checked if missing); None where a source has none (a Hugging Face dataset),
    or they are not where expected (load_split then says why). What the encoded-corpus cache
    is looked up by before any text is read; it is stored under the files load_split did read,
    so a difference between the two misses the cache and is never a wrong hit."""
    try:
        if cfg.source == "multi30k":
            files = split_files(split, (cfg.src_lang, cfg.tgt_lang))
            d = multi30k_dir(files=files)
            return [d / f for f in files]
        if cfg.source == "files":
            d = Path(cfg.path)
            return [_find(d / f"{split}.{cfg.src_lang}"), _find(d / f"{split}.{cfg.tgt_lang}")]
        if cfg.source in ("tsv", "jsonl"):
            return [_find(Path(cfg.path) / f"{split}.{cfg.source}")]
    except NMTError:
        return None
    return None


# what changes the encoded training pairs besides the data and the tokenizer (data.path does
# not: the same content elsewhere is the same corpus)
ENCODING_FIELDS = ("source", "hf_config", "src_lang", "tgt_lang", "src_field", "tgt_field",
                   "max_train_pairs", "max_len", "max_ratio")
CACHE_VERSION = 1


def _cache_dir(data_identity: dict, tok: Tokenizer, cfg: DataConfig) -> Path:
    settings = {k: getattr(cfg, k) for k in ENCODING_FIELDS}
    return cache_root() / "encoded" / identity.key(
        CACHE_VERSION, identity.content(data_identity), tok.fingerprint(), settings)


def cached_train(data_identity: dict, tok: Tokenizer, cfg: DataConfig
                 ) -> tuple[EncodedPairs, FilterReport, str] | None:
    """The encoded training pairs of this (data, tokenizer, settings), memory-mapped from the
    cache folder, with their filter report and split name; None when not cached."""
    d = _cache_dir(data_identity, tok, cfg)
    try:
        meta = json.loads((d / "meta.json").read_text())
        arrays = [np.load(d / f"{n}.npy", mmap_mode="r")
                  for n in ("src", "src_off", "tgt", "tgt_off")]
    except (OSError, ValueError):
        return None  # not cached, or left incomplete by hand: encode again
    return EncodedPairs(*arrays), FilterReport(**meta["report"]), meta["name"]


def store_train(pairs: EncodedPairs, report: FilterReport, name: str, data_identity: dict,
                tok: Tokenizer, cfg: DataConfig) -> str | None:
    """Put encoded training pairs into the cache folder (identity.store_dir: atomic, safe for
    two processes at once); returns why they could not be stored, None when they were."""
    def fill(tmp: Path) -> None:
        for n, a in (("src", pairs.src), ("src_off", pairs.src_off), ("tgt", pairs.tgt),
                     ("tgt_off", pairs.tgt_off)):
            np.save(tmp / f"{n}.npy", np.ascontiguousarray(a))
        (tmp / "meta.json").write_text(json.dumps(
            {"name": name, "report": dataclasses.asdict(report), "data": data_identity,
             "tokenizer": tok.fingerprint(),
             "settings": {k: getattr(cfg, k) for k in ENCODING_FIELDS}}))
    return identity.store_dir(_cache_dir(data_identity, tok, cfg), fill)


# what the text a tokenizer is trained on depends on besides the files' content
TOKENIZER_DATA_FIELDS = ("source", "hf_config", "src_lang", "tgt_lang", "src_field",
                         "tgt_field", "max_train_pairs")


def tokenizer_cache_dir(data_identity: dict, tcfg, cfg: DataConfig) -> Path:
    """Where the tokenizer trained on this data with these settings is kept."""
    settings = {k: getattr(cfg, k) for k in TOKENIZER_DATA_FIELDS}
    return cache_root() / "tokenizers" / identity.key(
        CACHE_VERSION, identity.content(data_identity), dataclasses.asdict(tcfg), settings)


# ----------------------------------------------------------------------------- statistics

@dataclass
class SplitStats:
    name: str
    pairs: int
    src_chars: list[int]            # p50, p90, p99, max
    tgt_chars: list[int]
    src_tokens: list[int]           # subword tokens with a tokenizer, else whitespace words
    tgt_tokens: list[int]
    filters: FilterReport           # what the training filters would drop (on those tokens)
    padding: float | None           # padded share of token batches; None without a tokenizer


PERCENTILES = (50, 90, 99, 100)


def _percentiles(lengths: list[int]) -> list[int]:
    if len(lengths) == 0:
        return [0] * len(PERCENTILES)
    return [int(v) for v in np.percentile(lengths, PERCENTILES, method="higher")]


def split_stats(corpus: Corpus, cfg: DataConfig, tok: Tokenizer | None = None,
                max_tokens: int = 4096) -> SplitStats:
    if tok is None:
        src_lens = [len(s.split()) for s in corpus.src]
        tgt_lens = [len(t.split()) for t in corpus.tgt]
    else:  # chunk by chunk into arrays: no list of ids per sentence of a large corpus
        src_lens = np.diff(encode_lines(tok.encode_src, corpus.src, tok.src_vocab_size)[1])
        tgt_lens = np.diff(encode_lines(tok.encode_tgt, corpus.tgt, tok.tgt_vocab_size)[1])
    keep, report = filter_pairs(src_lens, tgt_lens, cfg)
    padding = None
    if tok is not None:
        kept_src = [int(src_lens[i]) for i in keep]
        kept_tgt = [int(tgt_lens[i]) for i in keep]
        batches = token_batches(kept_src, kept_tgt, max_tokens, seed=0, epoch=0)
        padding = padding_fraction(batches, kept_src, kept_tgt)
    return SplitStats(corpus.name, len(corpus.src),
                      _percentiles([len(s) for s in corpus.src]),
                      _percentiles([len(t) for t in corpus.tgt]),
                      _percentiles(src_lens), _percentiles(tgt_lens), report, padding)
