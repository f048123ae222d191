"""Figures: learning curves, BLEU by sentence length, attention heatmaps (matplotlib, Agg).

Text in any script: every figure draws with a list of font families (matplotlib's font fallback,
see script_fonts), so a character DejaVu Sans lacks (Japanese, Chinese, Korean, Devanagari, Thai,
...) comes from the first installed font that has it. A character no installed font has is drawn
as an empty box, and instead of matplotlib's warning per glyph one warning per process says which
fonts to install (docs/scoring.md).
"""
from __future__ import annotations

import functools
import os
import re
import unicodedata
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers or in CI
import matplotlib.pyplot as plt
import torch
from matplotlib import font_manager

from nmt.search import greedy
from nmt.special import BOS, EOS


# fonts for the scripts that DejaVu Sans (matplotlib's own: Latin, Greek, Cyrillic, Arabic,
# Hebrew) lacks: the first installed CJK font (Debian's fonts-noto-cjk, or another common one:
# one is enough for Han, kana and hangul), then Noto's script fonts (Debian's fonts-noto-core)
CJK_FONTS = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR",
             "Source Han Sans", "Source Han Sans JP", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
             "IPAexGothic", "IPAGothic", "Droid Sans Fallback")
SCRIPT_FONTS = ("Noto Sans", "Noto Sans Arabic", "Noto Sans Hebrew", "Noto Sans Devanagari",
                "Noto Sans Bengali", "Noto Sans Gurmukhi", "Noto Sans Gujarati", "Noto Sans Oriya",
                "Noto Sans Tamil", "Noto Sans Telugu", "Noto Sans Kannada", "Noto Sans Malayalam",
                "Noto Sans Sinhala", "Noto Sans Thai", "Noto Sans Lao", "Noto Sans Khmer",
                "Noto Sans Myanmar", "Noto Sans Georgian", "Noto Sans Armenian",
                "Noto Sans Ethiopic", "Noto Sans Thaana", "Noto Sans Syriac")
INSTALL_CJK = "fonts-noto-cjk"     # Debian/Ubuntu packages with those fonts
INSTALL_OTHER = "fonts-noto-core"
GLYPH_WARNING = re.compile(r"Glyph (\d+) .*missing from (current )?font")
_warned: list[str] = []  # the one missing-font warning, once given


@functools.cache
def script_fonts() -> tuple[str, ...]:
    """The font families every figure draws with, in fallback order: DejaVu Sans, then the first
    installed CJK font, then the installed SCRIPT_FONTS. matplotlib caches its font list on first
    use, so fonts installed since (apt-get install fonts-noto-cjk) are looked for among the
    system's font files and added."""
    known = {f.name for f in font_manager.fontManager.ttflist}
    wanted = (*CJK_FONTS, *SCRIPT_FONTS)
    if any(f not in known for f in wanted):
        _add_system_fonts(wanted, {f.fname for f in font_manager.fontManager.ttflist})
        known = {f.name for f in font_manager.fontManager.ttflist}
    cjk = [f for f in CJK_FONTS if f in known][:1]
    return ("DejaVu Sans", *cjk, *(f for f in SCRIPT_FONTS if f in known))


def _add_system_fonts(families: tuple[str, ...], have: set[str]) -> None:
    """Add the regular face of `families` found among the system's font files (by file name:
    NotoSansArabic-Regular.ttf for "Noto Sans Arabic"; any NotoSansCJK* file for the CJK ones)."""
    keys = {f.replace(" ", "").lower() for f in families}
    for path in font_manager.findSystemFonts():
        name = os.path.basename(path)
        stem, _, style = name.rpartition(".")[0].partition("-")
        stem = stem.lower()
        regular = style.lower() in ("", "regular")
        if path in have or not regular or not (stem in keys or stem.startswith("notosanscjk")):
            continue
        try:
            font_manager.fontManager.addfont(path)
        except (OSError, RuntimeError, ValueError):  # a broken font file: draw without it
            continue


def _every_script(fn):
    """Run a figure function with script_fonts as the font family, and turn matplotlib's
    per-glyph missing-font warnings into one (missing_font_warning)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        caught: list = []
        try:
            with plt.rc_context({"font.family": list(script_fonts())}), \
                    warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                return fn(*args, **kwargs)
        finally:
            missing = set()
            for w in caught:
                m = GLYPH_WARNING.search(str(w.message))
                if m:
                    missing.add(chr(int(m.group(1))))
                else:  # not ours to drop: passed on to the caller's filters
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            if missing:
                missing_font_warning(missing)
    return wrapper


def missing_font_warning(chars: set[str]) -> None:
    """One warning per process for characters no installed font has, naming what to install."""
    if _warned:
        return
    cjk = any(_is_cjk(ch) for ch in chars)
    packages = [INSTALL_CJK] * cjk + [INSTALL_OTHER] * any(not _is_cjk(ch) for ch in chars)
    shown = ", ".join(f"{ch} (U+{ord(ch):04X})" for ch in sorted(chars)[:5])
    _warned.append(shown)
    warnings.warn(f"figures: no installed font has {shown}{' ...' if len(chars) > 5 else ''}: "
                  f"those characters are drawn as empty boxes. Install fonts that have them, "
                  f"e.g. on Debian/Ubuntu: apt-get install {' '.join(packages)} (nmt uses Noto, "
                  f"Source Han, WenQuanYi or IPAex fonts where installed)", UserWarning,
                  stacklevel=3)


def _is_cjk(ch: str) -> bool:
    """Han, kana, hangul, CJK punctuation and full-width forms: what fonts-noto-cjk covers."""
    name = unicodedata.name(ch, "")
    return name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "IDEOGRAPHIC",
                            "FULLWIDTH", "HALFWIDTH", "BOPOMOFO"))


@_every_script
def learning_curves(systems: dict, path: Path) -> None:
    """Validation BLEU against updates and against wall-clock minutes, every system together.
    A curve merged over seeds (compare.curve_band: points with val_bleu_min/max) is drawn as
    its mean with the band from the lowest to the highest seed shaded in the same colour."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for name, s in systems.items():
        pts = [p for p in s["curve"] if p.get("val_bleu") is not None]
        bleu = [p["val_bleu"] for p in pts]
        for ax, x in ((a, [p["step"] for p in pts]), (b, [p["wall"] / 60 for p in pts])):
            line, = ax.plot(x, bleu, marker=".", label=name)
            if pts and "val_bleu_min" in pts[0]:
                ax.fill_between(x, [p["val_bleu_min"] for p in pts],
                                [p["val_bleu_max"] for p in pts], color=line.get_color(),
                                alpha=0.2, linewidth=0)
    a.set(xlabel="updates", ylabel="validation BLEU", title="BLEU vs updates")
    b.set(xlabel="minutes", title="BLEU vs wall-clock time")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    b.legend(fontsize=8)
    _save(fig, path)


@_every_script
def bleu_by_length(systems: dict, split: str, path: Path, unit: str = "words") -> None:
    """Corpus BLEU per source-length bucket (Bahdanau et al. 2015, Fig. 2; lengths in `unit`:
    evaluation.length_unit), each with its 95% bootstrap interval; the tick labels give the
    bucket's sentence count."""
    fig, ax = plt.subplots(figsize=(7, 4))
    labels: list[str] = []
    for k, (name, s) in enumerate(systems.items()):
        rows = s["tests"].get(split, {}).get("by_length", [])
        x = [i + (k - (len(systems) - 1) / 2) * 0.06 for i in range(len(rows))]  # side by side
        ax.errorbar(x, [r["bleu"] for r in rows], yerr=[r.get("ci", 0) for r in rows],
                    marker="o", capsize=3, label=name)
        labels = labels or [f"{r['bucket']}\n(n={r['n']})" for r in rows]
    ax.set_xticks(range(len(labels)), labels)
    ax.set(xlabel=f"source sentence length ({unit})", ylabel="BLEU (± 95% CI)",
           title=f"BLEU by length: {split}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


@_every_script
def heatmaps(maps: dict[str, torch.Tensor], src: list[str], out: list[str], path: Path,
             title: str = "") -> None:
    """One heatmap per entry of `maps` ((T, S) weights), source pieces across, output down.

    The figure grows with the number of pieces so that 30+ piece sentences stay readable.
    """
    n = len(maps)
    S, T = len(src), len(out)
    w, h = max(4.0, 0.28 * S + 1.5), max(3.0, 0.28 * T + 1.2)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
    size = 9 if max(S, T) <= 30 else 7
    for ax, (name, m) in zip(axes.flat, maps.items()):
        m = m[:T, :S].float().cpu().numpy()
        ax.imshow(m, cmap="viridis", aspect="auto", vmin=0.0, vmax=max(float(m.max()), 1e-6))
        ax.set_xticks(range(S), src, rotation=90, fontsize=size)
        ax.set_yticks(range(T), out, fontsize=size)
        ax.set_title(name, fontsize=10)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)


@torch.inference_mode()
def sentence_attention(model, tok, text: str, max_len: int = 100):
    """Greedy-translate one sentence: (source pieces, output pieces, attention maps, translation).

    An RNN gives one map. A Transformer gives encoder-decoder attention per layer (heads
    averaged) and each head of the last layer.
    """
    device = next(model.parameters()).device
    ids = tok.encode_src([text])[0] + [EOS]
    src = torch.tensor([ids], device=device)                             # (1, S)
    src_len = torch.tensor([len(ids)], device=device)                    # (1,)
    hyps, attn = greedy(model, src, src_len, max_len, return_attention=True)
    out_ids = hyps[0] + [EOS]
    src_p = tok.src_pieces(text) + ["</s>"]
    out_p = tok.tgt_pieces(hyps[0]) + ["</s>"]
    if hasattr(model, "attention_maps"):  # multi-layer, multi-head: draw more than one map
        tgt_in = torch.tensor([[BOS] + out_ids[:-1]], device=device)    # (1, T)
        layers = model.attention_maps(src, src_len, tgt_in)              # L x (1, H, T, S)
        maps = {f"layer {i + 1} (heads averaged)": a[0].mean(0) for i, a in enumerate(layers)}
        maps.update({f"layer {len(layers)}, head {h + 1}": layers[-1][0, h]
                     for h in range(layers[-1].shape[1])})
    elif attn[0] is None:
        maps = {}
    else:
        maps = {"attention": attn[0]}
    return src_p, out_p, maps, tok.decode_tgt(hyps)[0]


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
