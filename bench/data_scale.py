"""Large-corpus data path: time to the first update and peak memory, on a synthetic corpus of WMT14
en-de size.

    python bench/data_scale.py make --pairs 1000000          # writes bench/.cache/synth-1000000/
    /usr/bin/time -v python bench/data_scale.py run --pairs 1000000 --tok-out /tmp/tok1m
    /usr/bin/time -v python bench/data_scale.py run --pairs 1000000 --tokenizer /tmp/tok1m

`make` writes a seeded corpus once: sentence lengths log-normal around WMT14's (median about 21
words, a long tail, 1-150), words drawn from a Zipfian vocabulary (s = 1.1) of 50,000 word-like
strings per language, the target about as long as the source. `run` goes through the data loading
path of `nmt train` (a copy of training._load_data, nanoGPT style: no hooks in the trainer): read
the training and validation splits, train the tokenizer (unless --tokenizer gives one, as
`nmt compare` and --resume do), encode, make epoch 1's batches and collate the first; it prints
the seconds of each stage, the peak RSS (ru_maxrss) and the RSS before any data was read. Run
with the code of any commit on PYTHONPATH (`git worktree add /tmp/before d8e97e1`): the script
uses the array path (encode_train and the encoded-corpus cache) where the code has it, else
encode_pairs. NMT_CACHE_DIR chooses the cache folder; a second `run` with the same tokenizer is
the cache-hit start. Results: bench/RESULTS.md, "Corpora of millions of lines".
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"
LETTERS = {"en": "etaoinshrdlcumwfgypbvkxjqz", "de": "enisratdhulcgmobwfkzpvjyxq"}


def _vocab(rng: np.random.Generator, lang: str, n: int) -> np.ndarray:
    """n distinct word-like strings, shorter ones more frequent in rank (as in real text)."""
    freq = np.array([1 / (i + 1) for i in range(26)])
    freq /= freq.sum()
    words: dict[str, None] = {}
    while len(words) < n:
        k = int(np.clip(rng.poisson(5.5) + 1 + len(words) * 6 // n, 1, 18))
        words["".join(rng.choice(list(LETTERS[lang]), size=k, p=freq))] = None
    return np.array(list(words), dtype=object)


def make(pairs: int, seed: int = 0) -> Path:
    out = CACHE / f"synth-{pairs}"
    if (out / "done").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab = {lang: _vocab(rng, lang, 50_000) for lang in ("de", "en")}
    ranks = np.arange(1, 50_001)
    p = 1 / ranks ** 1.1
    p /= p.sum()
    cdf = np.cumsum(p)
    for split, n in (("train", pairs), ("val", 3000)):
        files = {lang: open(out / f"{split}.{lang}", "w") for lang in ("de", "en")}
        for a in range(0, n, 100_000):
            m = min(100_000, n - a)
            src_len = np.clip(np.rint(rng.lognormal(3.05, 0.55, m)), 1, 150).astype(int)
            tgt_len = np.clip(np.rint(src_len * rng.lognormal(0.05, 0.15, m)), 1, 150).astype(int)
            for lang, lens in (("de", src_len), ("en", tgt_len)):
                ids = np.minimum(np.searchsorted(cdf, rng.random(int(lens.sum()))), len(p) - 1)
                words = vocab[lang][ids].tolist()
                cut = [0] + np.cumsum(lens).tolist()
                files[lang].write("".join(" ".join(words[a:b]) + "\n"
                                          for a, b in zip(cut, cut[1:])))
        for f in files.values():
            f.close()
    (out / "done").write_text("")
    return out


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run(pairs: int, tokenizer: Path | None, tok_out: Path | None, sample: int | None) -> None:
    import torch  # noqa: F401  (imported before the baseline, as nmt train has it)

    import nmt.data as data
    from nmt.batching import collate, token_batches
    from nmt.config import DataConfig, TokenizerConfig
    from nmt.tokenizer import Tokenizer

    d = CACHE / f"synth-{pairs}"
    if not (d / "done").is_file():
        sys.exit(f"{d}: no corpus; run `python bench/data_scale.py make --pairs {pairs}` first")
    arrays = hasattr(data, "encode_train")
    cfg = DataConfig(source="files", path=str(d), src_lang="de", tgt_lang="en", train="train",
                     valid="val", test=[])
    base = current_rss_mb()
    t = {"start": time.perf_counter()}
    peak: dict[str, float] = {}  # ru_maxrss when each stage ended (the peak so far)

    def mark(stage: str) -> None:
        t[stage], peak[stage] = time.perf_counter(), rss_mb()

    valid = data.load_split(cfg, cfg.valid)
    train = None
    if tokenizer is None:
        train = data.load_split(cfg, cfg.train)
        mark("read")
        tcfg = TokenizerConfig() if sample is None else TokenizerConfig(sample_sentences=sample)
        tok = Tokenizer.train(train.src, train.tgt, tok_out, tcfg)
        mark("tokenizer")
    else:
        tok = Tokenizer.load(tokenizer)
    hit = None
    if arrays:
        from nmt import identity

        paths = data.split_paths(cfg, cfg.train) if train is None else None
        train_id = identity.of_files(paths) if paths else None
        hit = data.cached_train(train_id, tok, cfg) if train_id else None
        if hit is None:
            if train is None:
                train = data.load_split(cfg, cfg.train)
                mark("read")
            train_id = identity.of_corpus(train)
            hit = data.cached_train(train_id, tok, cfg)
        if hit is not None:
            pairs_, report, _ = hit
        else:
            pairs_, report = data.encode_train(train, tok, cfg)
            mark("encode")
            data.store_train(pairs_, report, train.name, train_id, tok, cfg)
            mark("store")
        del train
        src_lens, tgt_lens = data.pair_lengths(pairs_)
    else:
        if train is None:
            train = data.load_split(cfg, cfg.train)
            mark("read")
        pairs_, report = data.encode_pairs(train, tok, cfg, train=True)
        mark("encode")
        del train
        src_lens = [len(s) for s, _ in pairs_]
        tgt_lens = [len(y) for _, y in pairs_]
    valid_pairs, _ = data.encode_pairs(valid, tok, cfg, train=False)
    mark("loaded")
    batches = token_batches(src_lens, tgt_lens, 4096, seed=1, epoch=1)
    mark("batches")
    collate(pairs_, batches[0])
    mark("first batch")
    stages = list(t)
    took = ", ".join(f"{b} {t[b] - t[a]:.1f}" for a, b in zip(stages, stages[1:]))
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in peak.items())
    print(f"pairs {report.total:,} kept {report.kept:,} ({'arrays' if arrays else 'lists'}"
          f"{', cache hit' if hit is not None and 'encode' not in t else ''}); vocab "
          f"{tok.src_vocab_size}; {len(batches):,} batches; valid {len(valid_pairs):,}")
    print(f"seconds: {took}; to first update {t['first batch'] - t['start']:.1f}")
    print(f"RSS MB: before data {base:.0f}, peak {rss_mb():.0f}, peak - before "
          f"{rss_mb() - base:.0f}; peak RSS by the end of each stage: {peaks}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=("make", "run"))
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--tokenizer", type=Path, help="use this tokenizer (the cache-hit start)")
    ap.add_argument("--tok-out", type=Path, default=Path("/tmp/data_scale_tok"),
                    help="where a trained tokenizer goes")
    ap.add_argument("--sample", type=int, help="tokenizer.sample_sentences (default: the "
                    "code's own; code from before the setting trains on every sentence)")
    a = ap.parse_args()
    if a.what == "make":
        t = time.perf_counter()
        print(make(a.pairs), f"{time.perf_counter() - t:.0f} s")
    else:
        run(a.pairs, a.tokenizer, a.tok_out, a.sample)


if __name__ == "__main__":
    main()
