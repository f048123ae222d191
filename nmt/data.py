"""Parallel text in, token-id pairs out.

`load_split` reads one split from any source (Multi30k, plain/gzip files, TSV, CSV, JSONL, Hugging
Face datasets and Parquet) into aligned, validated sentence lists, holding valid and test pairs out
of a corpus that has no such splits (`holdout`); `cli_data` maps `--data PATH --src L --tgt L`
onto the data.* fields; `encode_pairs` tokenizes them and, for training
only, drops the pairs that would hurt it. Bad input is an NMTError that names the file, the line
when there is one, and what to do.
"""
from __future__ import annotations

import csv
import dataclasses
import errno
import gzip
import io
import itertools
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nmt.atomic import atomic_write
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
    # absolute paths of the files read for this split (for a held-out split: the whole corpus's);
    # empty for a Hugging Face hub dataset, whose identity is its fingerprint/revision
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
        if e.errno == errno.ELOOP:
            raise NMTError(f"{path}: is a symbolic link loop (it points back at itself); "
                           f"point it at the data file") from None
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
    if "\n" not in text and "\r" in text.rstrip("\r"):
        raise NMTError(f"{path}: its lines end in CR alone (old Mac line endings), so it reads "
                       f"as one line; convert it, e.g. tr '\\r' '\\n' < {path.name} > new")
    lines = text.removeprefix("\ufeff").split("\n")  # not splitlines(): it also splits on \x85
    if lines[-1] == "":
        lines.pop()
    return [s.removesuffix("\r") for s in lines]


def _no_bad_link(path: Path) -> None:
    """A symbolic link that leads nowhere is named as such, not as a missing file."""
    if path.is_symlink() and not path.exists():
        try:
            path.resolve(strict=True)
        except RuntimeError:  # Python 3.11-3.12 report a loop so
            raise NMTError(f"{path}: is a symbolic link loop (it points back at itself); "
                           f"point it at the data file") from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise NMTError(f"{path}: is a symbolic link loop (it points back at itself); "
                               f"point it at the data file") from None
            raise NMTError(f"{path}: is a symbolic link to {os.readlink(path)}, which does not "
                           f"exist") from None


def _find(path: Path) -> Path:
    """path, or path.gz when only the compressed file exists; both is an error, as they may
    differ and reading one silently would hide the other."""
    gz = path.with_name(path.name + ".gz")
    _no_bad_link(path)
    _no_bad_link(gz)
    if path.is_dir():
        raise NMTError(f"{path}: is a directory, not a text file; check data.path and the split "
                       f"and language names")
    if path.is_file() and gz.is_file():
        raise NMTError(f"{path} and {gz} both exist and may differ; remove or rename one so "
                       f"that it is clear which to read")
    if not path.is_file() and gz.is_file():
        return gz
    if not path.is_file():
        raise NMTError(f"{path}: file not found (nor {gz.name}); check data.path and the "
                       f"split and language names")
    return path


def _exists(path: Path) -> bool:
    gz = path.with_name(path.name + ".gz")
    return path.is_file() or gz.is_file() or path.is_symlink() or gz.is_symlink()


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
    # jsonl/hf without named fields use the language codes as column names
    return cfg.src_field or cfg.src_lang, cfg.tgt_field or cfg.tgt_lang


def _text(value, where: str, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise NMTError(f"{where}: field {field!r} is {type(value).__name__}, expected text")
    return value.strip()


def _rows(path: Path, delimiter: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank row. TSV splits on tabs alone, so quotes are
    text (sentences quote speech); CSV goes through the csv module (quoted fields may hold
    commas, quotes and newlines; a newline inside a field becomes a space)."""
    lines = read_lines(path)
    if delimiter == "\t":
        return [(n, line.split("\t")) for n, line in enumerate(lines, 1) if line.strip()]
    rows, n = [], 1
    reader = csv.reader(io.StringIO("\n".join(lines) + "\n"), strict=True)
    try:
        for row in reader:
            if any(c.strip() for c in row):
                rows.append((n, [c.replace("\n", " ") for c in row]))
            n = reader.line_num + 1
    except csv.Error as e:
        raise NMTError(f"{path}: line {reader.line_num} is not valid CSV ({e}); quote a field "
                       f"that holds a comma or a quote, doubling the quotes inside it") from None
    return rows


def _table(path: Path, cfg: DataConfig, delimiter: str) -> tuple[list[str], list[str]]:
    """Two columns of a TSV or CSV file, chosen by name (from a header) or by number."""
    kind = "tab" if delimiter == "\t" else "comma"
    rows = _rows(path, delimiter)
    if not rows:
        raise NMTError(f"{path}: holds no rows; check that it is the right file")
    first_n, first = rows[0]
    cells = [c.strip() for c in first]
    named = [f for f in (cfg.src_field, cfg.tgt_field) if isinstance(f, str) and f]
    wanted = named or [cfg.src_lang, cfg.tgt_lang]
    header = all(w in cells for w in wanted) if cfg.header == "auto" else cfg.header
    cols = []
    for f, lang, default in ((cfg.src_field, cfg.src_lang, 1), (cfg.tgt_field, cfg.tgt_lang, 2)):
        if isinstance(f, int):
            cols.append(f - 1)
        elif f and not header:
            how = ("data.header is false" if cfg.header is False else
                   f"line {first_n} ({', '.join(cells)}) does not name it, so it is no header")
            raise NMTError(f"{path}: no column {f!r}: {how}; set data.src_field / "
                           f"data.tgt_field to a header's column name, or to a column number "
                           f"(1 = the first) for a file without a header")
        elif f and f not in cells:
            raise NMTError(f"{path}: no column {f!r} in the header ({', '.join(cells)}); set "
                           f"data.src_field / data.tgt_field")
        else:
            cols.append(cells.index(f or lang) if header and (f or lang) in cells else
                        default - 1)
    width = len(first)
    for which, col in zip(("src_field", "tgt_field"), cols):
        if col >= width:
            raise NMTError(f"{path}: data.{which} is column {col + 1}, but line {first_n} has "
                           f"{width} {kind}-separated field{'s' * (width > 1)}")
    src, tgt = [], []
    for n, row in rows[1:] if header else rows:
        if len(row) != width:
            what = "the header" if header else f"line {first_n}"
            raise NMTError(f"{path}: line {n} has {len(row)} {kind}-separated fields, {what} has "
                           f"{width}" + (" (a tab inside a sentence?)" if kind == "tab" else
                                         " (an unquoted comma or quote?)"))
        src.append(row[cols[0]].strip())
        tgt.append(row[cols[1]].strip())
    return src, tgt


def _tsv(path: Path, cfg: DataConfig) -> tuple[list[str], list[str]]:
    return _table(path, cfg, "\t")


def _csv(path: Path, cfg: DataConfig) -> tuple[list[str], list[str]]:
    return _table(path, cfg, ",")


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
        except RecursionError:
            raise NMTError(f"{path}: line {n} is nested too deeply to read (thousands of "
                           f"brackets); each line is an object of text fields") from None
        where = f"{path}: line {n}"
        if not isinstance(obj, dict) or fs not in obj or ft not in obj:
            raise NMTError(f"{where}: expected an object with fields {fs!r} and {ft!r}; "
                           f"set data.src_field / data.tgt_field")
        src.append(_text(obj[fs], where, fs))
        tgt.append(_text(obj[ft], where, ft))
    return src, tgt


READERS = {"tsv": _tsv, "csv": _csv, "jsonl": _jsonl}


def _import_datasets(cfg: DataConfig):
    try:
        import datasets  # slow to import; only this source needs it
    except ImportError:
        raise NMTError(f"data.source hf needs the `datasets` package, which is not "
                       f"installed (pip install datasets); or save {cfg.path!r} as files, tsv "
                       f"or jsonl and set data.source to match") from None
    return datasets


def _parquet_splits(path: Path, train: str) -> dict[str, list[Path]]:
    """Local Parquet files by split: a file's split is its name up to the first '-' or '.'
    (train.parquet, data/train-00000-of-00002.parquet as the hub lays them out). Without a
    file of the training split, every file is one corpus, read as `train`."""
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    groups: dict[str, list[Path]] = {}
    for f in files:
        groups.setdefault(f.name.split("-")[0].split(".")[0], []).append(f)
    return groups if train in groups else {train: files}


def _is_parquet(cfg: DataConfig) -> bool:
    p = Path(cfg.path)
    return p.suffix == ".parquet" and p.is_file() or p.is_dir() and not (
        (p / "dataset_dict.json").is_file() or (p / "state.json").is_file()) and any(
        p.rglob("*.parquet"))


def _hf(cfg: DataConfig, split: str, limit: int) -> tuple[list[str], list[str], str, tuple]:
    """A Hugging Face dataset: a `save_to_disk` directory, local Parquet files, else anything
    `load_dataset` takes (a hub name, a local folder of data files). Pairs come from a
    `translation` column of {lang: text} dicts (as in wmt14) or from two named columns (as in
    bentrevett/multi30k; without src_field/tgt_field, the columns named by the languages)."""
    datasets = _import_datasets(cfg)
    name = f"hf:{cfg.path}" + (f"/{cfg.hf_config}" if cfg.hf_config else "") + f":{split}"
    saved, files = Path(cfg.path), ()
    if (saved / "dataset_dict.json").is_file() or (saved / "state.json").is_file():
        try:
            ds = datasets.load_from_disk(cfg.path)
        except (FileNotFoundError, ValueError) as e:
            raise NMTError(f"{cfg.path}: cannot read this save_to_disk dataset ({e})") from None
        if not isinstance(ds, datasets.DatasetDict):
            ds = datasets.DatasetDict({cfg.train: ds})  # one Dataset: the whole corpus
        if split not in ds:
            raise NMTError(f"{cfg.path}: no split {split!r}; it has {', '.join(ds)}; "
                           f"set data.train / data.valid / data.test")
        ds = ds[split]
        files = tuple(str(p.resolve()) for p in sorted(saved.rglob("*.arrow")))
    elif _is_parquet(cfg):
        groups = _parquet_splits(saved, cfg.train)
        if split not in groups:
            raise NMTError(f"{cfg.path}: no Parquet files of split {split!r}; it has "
                           f"{', '.join(groups)}; set data.train / data.valid / data.test")
        try:  # read in memory: no cache files beside the user's data or in ~/.cache
            import pyarrow as pa
            import pyarrow.parquet as pq
            table = pa.concat_tables([pq.read_table(f) for f in groups[split]])
            ds = datasets.Dataset(datasets.table.InMemoryTable(table))
        except Exception as e:  # a broken or foreign file: the user's to fix
            raise NMTError(f"{cfg.path}: cannot read its Parquet files ({type(e).__name__}: "
                           f"{e})") from None
        files = tuple(str(f.resolve()) for f in groups[split])
    else:
        try:
            ds = datasets.load_dataset(cfg.path, cfg.hf_config or None, split=split)
        except Exception as e:  # network, unknown name/config/split: all the user's to fix
            if "scripts are no longer supported" in str(e):
                raise NMTError(
                    f"{name}: this dataset is a loading script, which datasets "
                    f"{datasets.__version__} no longer runs; use its Parquet files instead "
                    f"(many hub datasets have them on the refs/convert/parquet branch): "
                    f"download them and give the folder as data.path (--data FOLDER)") from None
            raise NMTError(f"{name}: load_dataset failed ({type(e).__name__}: {e})") from None
    if limit:
        ds = ds.select(range(min(limit, len(ds))))
    by_lang = {cfg.src_lang, cfg.tgt_lang} <= set(ds.column_names)  # columns named en, fr
    if not cfg.src_field and ("translation" in ds.column_names or not by_lang):
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
        return src, tgt, name, files
    fs, ft = _fields(cfg)
    for f in (fs, ft):
        if f not in ds.column_names:
            raise NMTError(f"{name}: no column {f!r} (columns: {', '.join(ds.column_names)})")
    src = [_text(v, f"{name}: row {n}", fs) for n, v in enumerate(ds[fs])]
    tgt = [_text(v, f"{name}: row {n}", ft) for n, v in enumerate(ds[ft])]
    return src, tgt, name, files


def _hf_splits(cfg: DataConfig) -> list[str] | None:
    """The split names of a local Hugging Face dataset (None: not known without the hub)."""
    p = Path(cfg.path)
    if (p / "dataset_dict.json").is_file():
        return list(json.loads((p / "dataset_dict.json").read_text())["splits"])
    if (p / "state.json").is_file():
        return [cfg.train]
    if _is_parquet(cfg):
        return list(_parquet_splits(p, cfg.train))
    if p.is_dir():
        try:
            return list(_import_datasets(cfg).get_dataset_split_names(str(p), cfg.hf_config or
                                                                      None))
        except Exception:  # load_split says what is wrong, if anything
            return None
    return None


def is_one_corpus(cfg: DataConfig) -> bool:
    """The source is one corpus (a single file or two aligned files): valid and test are
    held out of it."""
    return bool(cfg.src_file) or (cfg.source in READERS and cfg.path != "" and
                                  not Path(cfg.path).is_dir())


def held_out(cfg: DataConfig) -> list[str]:
    """The valid and test splits to hold out of the training split: all of them for one
    corpus, or for a directory or dataset that holds the training split alone. One that holds
    other splits too holds out nothing: a split name it lacks is then more likely a typo (val
    for validation) and reads as an error naming the splits it has."""
    wanted = list(dict.fromkeys([cfg.valid, *cfg.test]))
    if is_one_corpus(cfg):
        return wanted
    d = Path(cfg.path)
    if cfg.source in ("files", *READERS) and d.is_dir():
        ext = cfg.src_lang if cfg.source == "files" else cfg.source
        have = {f.name.removesuffix(".gz").removesuffix(f".{ext}") for f in d.iterdir()
                if f.name.removesuffix(".gz").endswith(f".{ext}")}
    elif cfg.source == "hf":
        have = set(_hf_splits(cfg) or ())
    else:
        return []
    return wanted if have == {cfg.train} else []


def _read(cfg: DataConfig, split: str, limit: int) -> Corpus:
    """One split as the source holds it (no held-out splits here)."""
    src_lang, tgt_lang = cfg.src_lang, cfg.tgt_lang
    if cfg.source == "multi30k":
        files = split_files(split, (src_lang, tgt_lang))
        d = multi30k_dir(files=files)  # only this split's two languages are fetched
        paths = (d / files[0], d / files[1])
        src, tgt = read_parallel(*paths)
        name = f"multi30k:{split}"
    elif cfg.src_file:  # the whole corpus in two files: is_one_corpus
        paths = (_find(Path(cfg.src_file)), _find(Path(cfg.tgt_file)))
        src, tgt = read_parallel(*paths)
        name = f"{paths[0]} + {paths[1].name}"
    elif cfg.source == "files":
        d = Path(cfg.path)
        paths = (_find(d / f"{split}.{src_lang}"), _find(d / f"{split}.{tgt_lang}"))
        src, tgt = read_parallel(*paths)
        name = f"{d / split}.{{{src_lang},{tgt_lang}}}"
    elif cfg.source in READERS:
        p = Path(cfg.path)
        path = _find(p / f"{split}.{cfg.source}" if p.is_dir() else p)
        paths = (path,)
        src, tgt = READERS[cfg.source](path, cfg)
        name = str(path)
    elif cfg.source == "hf":
        src, tgt, name, paths = _hf(cfg, split, limit)
    else:  # validate() rejects this already; here for recipes built without it
        raise NMTError(f"data.source: unknown source {cfg.source!r}")
    return Corpus(src, tgt, name, tuple(str(Path(p).resolve()) for p in paths))


def load_split(cfg: DataConfig, split: str, limit: int = 0, heldout: Path | None = None) -> Corpus:
    """One split of the configured source, aligned and validated, each sentence stripped of
    surrounding whitespace; the first `limit` pairs if limit > 0. Nothing is filtered here (see
    encode_pairs). A valid or test split the source lacks is held out of its training split
    (holdout); `heldout` is the directory its files are written to (None: not written)."""
    missing = held_out(cfg)
    if split in missing or missing and split == cfg.train:
        c = holdout(cfg, heldout).parts[split]
    elif is_one_corpus(cfg):  # every configured split is held out, so this is none of them
        raise NMTError(f"{cfg.src_file or cfg.path}: no split {split!r}: this one corpus is "
                       f"split into {cfg.train}, {', '.join(missing)} (data.train / data.valid "
                       f"/ data.test)")
    else:
        c = _read(cfg, split, limit)
    if limit:
        c = Corpus(c.src[:limit], c.tgt[:limit], c.name, c.files)
    for side, lines in ((cfg.src_lang, c.src), (cfg.tgt_lang, c.tgt)):
        if not any(lines):  # a blank-only split would train, validate or score on nothing
            raise NMTError(f"{c.name}: the {side} side holds no text (empty or blank lines "
                           f"only); check data.path, the split names and the fields")
    return c


def absolute_data(cfg: DataConfig) -> DataConfig:
    """cfg with data.path, src_file and tgt_file made absolute where they name local files or
    folders (a hub name and multi30k's empty path stay as they are), so that a run resumes from
    any directory."""
    keep_path = not cfg.path or (cfg.source == "hf" and not Path(cfg.path).exists())
    return dataclasses.replace(
        cfg, path=cfg.path if keep_path else os.path.abspath(cfg.path),
        src_file=cfg.src_file and os.path.abspath(cfg.src_file),
        tgt_file=cfg.tgt_file and os.path.abspath(cfg.tgt_file))


# ----------------------------------------------------------------------------- held-out splits

@dataclass
class Holdout:
    """A corpus split into training and held-out valid/test parts (see holdout)."""
    parts: dict[str, Corpus]        # split name -> its pairs; cfg.train: what is left
    source: str                     # the corpus they came from
    total: int                      # pairs in the corpus
    per_split: int                  # pairs drawn for each held-out split
    duplicates: int                 # drawn pairs dropped: the same pair drawn already
    in_train: int                   # drawn pairs dropped: their source occurs in training
    seed: int
    written: Path | None            # the directory holding the held-out files, if written

    def summary(self) -> str:
        held = [s for s in self.parts if s != self.train]
        sizes = ", ".join(f"{s} {len(self.parts[s].src):,}" for s in held)
        where = f"; files in {self.written}" if self.written else ""
        return (f"held out of {self.source} ({self.total:,} pairs; seed {self.seed}): {sizes} "
                f"pairs ({self.per_split:,} drawn for each; removed {self.duplicates:,} exact "
                f"duplicate{'s' * (self.duplicates != 1)} and {self.in_train:,} whose source "
                f"also occurs in training); training keeps the other "
                f"{len(self.parts[self.train].src):,}{where}")

    @property
    def train(self) -> str:
        return next(iter(self.parts))


_HOLDOUTS: dict[str, tuple[tuple, Holdout]] = {}  # one split per corpus and settings a process


def _stat(files: tuple[str, ...]) -> tuple:
    out = []
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            return ()
        out.append((f, st.st_size, st.st_mtime_ns))
    return tuple(out)


def holdout(cfg: DataConfig, heldout: Path | None = None) -> Holdout:
    """Valid and test pairs held out of a corpus that has no such splits, the same for the same
    corpus, settings and holdout_seed: each missing split gets min(holdout, holdout_share of the
    corpus) pairs drawn at random. From those drawn, an exact repeat of a pair drawn before and
    a pair whose source sentence also occurs in the training part are removed (the first kind is
    dropped, the second goes back to training), so nothing scored was trained on; the training
    split is every pair not held out, in corpus order. With `heldout`, each held-out split is
    written there as {split}.{lang} plain files, with holdout.json saying how they were made."""
    missing = held_out(cfg)
    key = json.dumps([dataclasses.asdict(cfg)[k] for k in (
        "source", "path", "src_file", "tgt_file", "hf_config", "src_lang", "tgt_lang",
        "src_field", "tgt_field", "header", "train", "valid", "test", "holdout",
        "holdout_share", "holdout_seed")])
    cached = _HOLDOUTS.get(key)
    if cached and cached[0] and cached[0] == _stat(cached[1].parts[cfg.train].files):
        h = cached[1]
    else:
        h = _split_off(cfg, missing)
        _HOLDOUTS[key] = (_stat(h.parts[cfg.train].files), h)
    if heldout is not None:
        _write_heldout(h, cfg, Path(heldout))
        h = dataclasses.replace(h, written=Path(heldout))
    return h


def _split_off(cfg: DataConfig, missing: list[str]) -> Holdout:
    whole = _read(cfg, cfg.train, 0)
    n_pairs = len(whole.src)
    per_split = min(cfg.holdout, int(n_pairs * cfg.holdout_share))
    if per_split < 1:
        raise NMTError(f"{whole.name}: {n_pairs} pairs are too few to hold out "
                       f"{', '.join(missing)} ({cfg.holdout_share:g} of them is less than one "
                       f"pair); give a larger corpus or its own valid/test splits")
    order = np.random.default_rng(cfg.holdout_seed).permutation(n_pairs)
    drawn = order[:per_split * len(missing)]
    held = set(int(i) for i in drawn)
    train_src = {whole.src[i] for i in range(n_pairs) if i not in held}
    seen: set[tuple[str, str]] = set()
    chosen: dict[str, list[int]] = {s: [] for s in missing}
    duplicates = in_train = 0
    back: list[int] = []  # drawn pairs whose source is trained on anyway: training keeps them
    for k, i in enumerate(int(i) for i in drawn):
        pair = (whole.src[i], whole.tgt[i])
        if pair in seen:
            duplicates += 1
        elif pair[0] in train_src:
            in_train += 1
            back.append(i)
        else:
            seen.add(pair)
            chosen[missing[k // per_split]].append(i)
    dropped = held - set(back)
    train = [i for i in range(n_pairs) if i not in dropped]
    parts = {cfg.train: Corpus([whole.src[i] for i in train], [whole.tgt[i] for i in train],
                               f"{whole.name} (training part)", whole.files)}
    for s, idx in chosen.items():
        idx.sort()
        parts[s] = Corpus([whole.src[i] for i in idx], [whole.tgt[i] for i in idx],
                          f"{whole.name} (held out: {s})", whole.files)
    return Holdout(parts, whole.name, n_pairs, per_split, duplicates, in_train,
                   cfg.holdout_seed, None)


def _write_heldout(h: Holdout, cfg: DataConfig, d: Path) -> None:
    """Each held-out split as two plain files (rewritten only when they differ, so that
    concurrent runs of one comparison agree), and holdout.json."""
    d.mkdir(parents=True, exist_ok=True)
    for s, c in h.parts.items():
        if s == h.train:
            continue
        for lang, lines in ((cfg.src_lang, c.src), (cfg.tgt_lang, c.tgt)):
            text = "".join(x + "\n" for x in lines)
            path = d / f"{s}.{lang}"
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                with atomic_write(path) as f:
                    f.write(text)
    info = {"source": h.source, "files": list(h.parts[h.train].files), "pairs": h.total,
            "seed": h.seed, "drawn_per_split": h.per_split, "removed_duplicates": h.duplicates,
            "removed_source_in_training": h.in_train,
            "splits": {s: len(c.src) for s, c in h.parts.items()},
            "summary": h.summary()}
    text = json.dumps(info, indent=2, ensure_ascii=False) + "\n"
    path = d / "holdout.json"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        with atomic_write(path) as f:
            f.write(text)


# ----------------------------------------------------------------------------- the command line

FORMATS = ("tsv", "csv", "jsonl", "files", "hf")  # --format: a data.source other than multi30k


def detect_format(path: Path) -> str:
    """The data.source a path holds, from its name or (a directory) its files."""
    _no_bad_link(path)
    name = path.name.removesuffix(".gz")
    if path.is_file():
        ext = name.rpartition(".")[2]
        if ext in ("tsv", "csv", "jsonl"):
            return ext
        if ext == "json":
            return "jsonl"
        if name.endswith(".parquet"):
            return "hf"
        raise NMTError(f"--data {path}: cannot tell its format from the name; name it .tsv, "
                       f".csv, .jsonl or .parquet, or give --format tsv|csv|jsonl, or give two "
                       f"aligned plain files as --src-file and --tgt-file")
    if not path.is_dir():
        raise NMTError(f"--data {path}: not found (for a Hugging Face hub dataset, add "
                       f"--format hf)")
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file() or \
            any(path.rglob("*.parquet")):
        return "hf"
    names = [p.name.removesuffix(".gz") for p in path.iterdir() if p.is_file()]
    for ext in ("tsv", "csv", "jsonl"):
        if any(n.endswith(f".{ext}") for n in names):
            return ext
    if names:
        return "files"
    raise NMTError(f"--data {path}: an empty directory; it should hold {{split}}.{{lang}} "
                   f"files (train.en, train.fr), {{split}}.tsv files, or a Hugging Face dataset")


def cli_data(data: str | None = None, src: str | None = None, tgt: str | None = None,
             fmt: str | None = None, src_file: str | None = None,
             tgt_file: str | None = None) -> dict:
    """The data.* fields that `--data PATH --src LANG --tgt LANG [--format F]` or
    `--src-file F --tgt-file F` stand for ({} when none is given). The corpus is read with
    split names train/valid/test; those it lacks are held out of train (holdout)."""
    if data is None and src_file is None and tgt_file is None:
        if fmt is not None:
            raise NMTError("--format names the format of --data PATH; give --data too")
        if src is not None or tgt is not None:
            return {k: v for k, v in (("src_lang", src), ("tgt_lang", tgt)) if v is not None}
        return {}
    if data is not None and (src_file or tgt_file):
        raise NMTError("give either --data PATH or --src-file F --tgt-file F, not both")
    if (src_file is None) != (tgt_file is None):
        raise NMTError("give both --src-file and --tgt-file: two aligned plain files, line i of "
                       "one the translation of line i of the other")
    if src is None or tgt is None:
        raise NMTError("give the languages too: --src LANG --tgt LANG (e.g. --src en --tgt fr); "
                       "they name the sides, the files of a folder and the held-out files")
    values = {"src_lang": src, "tgt_lang": tgt, "path": "", "src_file": "", "tgt_file": "",
              "hf_config": "", "src_field": "", "tgt_field": "", "header": "auto",
              "train": "train", "valid": "valid", "test": ["test"]}
    if src_file is not None:
        if fmt not in (None, "files"):
            raise NMTError(f"--format {fmt}: --src-file and --tgt-file are plain text files")
        return values | {"source": "files", "src_file": str(Path(src_file).resolve()),
                         "tgt_file": str(Path(tgt_file).resolve())}
    if fmt is not None and fmt not in FORMATS:
        raise NMTError(f"--format {fmt}: unknown; use {', '.join(FORMATS)}")
    path = Path(data)
    if fmt == "hf" and not path.exists():  # a hub name
        return values | {"source": "hf", "path": data}
    if not path.exists():
        _no_bad_link(path)
        raise NMTError(f"--data {data}: not found (for a Hugging Face hub dataset, add "
                       f"--format hf)")
    return values | {"source": fmt or detect_format(path), "path": str(path.resolve())}


def data_overrides(values: dict) -> list[str]:
    """cli_data's fields as --set items (JSON is YAML, so every value keeps its type)."""
    return [f"data.{k}={json.dumps(v)}" for k, v in values.items()]


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
    is fetched and checked if missing; a held-out split is read from its whole corpus, the
    training split's files); None where a source has none (a Hugging Face dataset), or they are
    not where expected (load_split then says why). What the encoded-corpus cache is looked up by
    before any text is read; it is stored under the files load_split did read, so a difference
    between the two misses the cache and is never a wrong hit."""
    try:
        if cfg.source == "hf":
            return None
        missing = held_out(cfg)
        if split in missing:
            split = cfg.train
        if cfg.source == "multi30k":
            files = split_files(split, (cfg.src_lang, cfg.tgt_lang))
            d = multi30k_dir(files=files)
            return [d / f for f in files]
        if cfg.src_file:
            return [_find(Path(cfg.src_file)), _find(Path(cfg.tgt_file))]
        if cfg.source == "files":
            d = Path(cfg.path)
            return [_find(d / f"{split}.{cfg.src_lang}"), _find(d / f"{split}.{cfg.tgt_lang}")]
        if cfg.source in READERS:
            p = Path(cfg.path)
            return [_find(p / f"{split}.{cfg.source}" if p.is_dir() else p)]
    except NMTError:
        return None
    return None


# what changes the encoded training pairs besides the data and the tokenizer (data.path does
# not: the same content elsewhere is the same corpus)
# (the split names and held-out settings decide which pairs of a corpus without valid/test splits
# are trained on)
HOLDOUT_FIELDS = ("header", "train", "valid", "test", "holdout", "holdout_share", "holdout_seed")
ENCODING_FIELDS = ("source", "hf_config", "src_lang", "tgt_lang", "src_field", "tgt_field",
                   "max_train_pairs", "max_len", "max_ratio") + HOLDOUT_FIELDS
CACHE_VERSION = 2


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
                         "tgt_field", "max_train_pairs") + HOLDOUT_FIELDS


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
