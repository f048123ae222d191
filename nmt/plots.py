"""Figures: learning curves, BLEU by sentence length, attention heatmaps (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers or in CI
import matplotlib.pyplot as plt
import torch

from nmt.search import greedy
from nmt.tokenizer import BOS, EOS


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


def bleu_by_length(systems: dict, split: str, path: Path) -> None:
    """Corpus BLEU per source-length bucket (Bahdanau et al. 2015, Fig. 2), each with its 95%
    bootstrap interval; the tick labels give the bucket's sentence count."""
    fig, ax = plt.subplots(figsize=(7, 4))
    labels: list[str] = []
    for k, (name, s) in enumerate(systems.items()):
        rows = s["tests"].get(split, {}).get("by_length", [])
        x = [i + (k - (len(systems) - 1) / 2) * 0.06 for i in range(len(rows))]  # side by side
        ax.errorbar(x, [r["bleu"] for r in rows], yerr=[r.get("ci", 0) for r in rows],
                    marker="o", capsize=3, label=name)
        labels = labels or [f"{r['bucket']}\n(n={r['n']})" for r in rows]
    ax.set_xticks(range(len(labels)), labels)
    ax.set(xlabel="source sentence length (words)", ylabel="BLEU (± 95% CI)",
           title=f"BLEU by length: {split}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


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
