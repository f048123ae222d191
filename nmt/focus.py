"""Where an RNN's attention goes: a few numbers that show a collapsed attention at a glance.

An attention model can learn a degenerate solution: put (nearly) all weight on one fixed source
position - the EOS, whose backward encoder state summarises the sentence, or the first word -
and so become an attention-free model that reads one summary vector. A saturated softmax then
passes almost no gradient to the other positions, and the model leaves that solution slowly.
BLEU alone cannot tell this from a weak model; these numbers can. With a_t the attention weights
(over the S source positions, EOS last) of target token t, teacher-forced on the reference:

    sharpness   = mean_t max_j a_tj                (1/S for uniform weights, 1 for one-hot)
    on_eos      = share of t with argmax_j a_tj = S (the EOS)
    on_first    = share of t with argmax_j a_tj = 1 (the first source piece)
    entropy     = mean_t H(a_t) / log S            (1 for uniform, 0 for one-hot; S > 1 only)

A healthy model on Multi30k has moderate sharpness and small on_eos/on_first (its argmax walks
along the sentence); a collapsed one has sharpness near 1 with on_eos or on_first near 1.
"""
from __future__ import annotations

import math

import torch

from nmt.batching import collate, token_batches
from nmt.model import RNNSeq2Seq
from nmt.prediction import decoding_precision, eval_mode
from nmt.special import PAD
from nmt.transfer import to_device


def attention_focus(model, pairs: list[tuple[list[int], list[int]]], batch_tokens: int,
                    device) -> dict[str, float] | None:
    """The numbers above over `pairs` (encoded source, reference), or None when the model
    returns no single attention map (no attention, or a Transformer's many heads)."""
    if not isinstance(model, RNNSeq2Seq) or not pairs:
        return None
    totals = {"sharpness": 0.0, "on_eos": 0.0, "on_first": 0.0, "entropy": 0.0}
    n = n_multi = 0
    with eval_mode(model), decoding_precision(device), torch.no_grad():
        for idx in token_batches([len(x) for x, _ in pairs], [len(y) for _, y in pairs],
                                 batch_tokens, 0, 0, shuffle=False):
            b = collate(pairs, idx).to(device)
            _, attn = model(b.src, b.src_len, b.tgt_in)               # (B, T, S)
            if attn is None:
                return None
            real = b.tgt_out != PAD                                     # (B, T)
            src_len = to_device(b.src_len, attn.device)                 # (B,) kept on the CPU
            eos = (src_len - 1).view(-1, 1)                             # (B, 1)
            top = attn.argmax(-1)                                       # (B, T)
            totals["sharpness"] += attn.max(-1).values[real].sum().item()
            totals["on_eos"] += (top == eos)[real].sum().item()
            totals["on_first"] += (top == 0)[real].sum().item()
            h = -(attn * attn.clamp_min(1e-12).log()).sum(-1)           # (B, T)
            multi = real & (src_len > 1).view(-1, 1)
            logs = src_len.clamp_min(2).float().log().view(-1, 1)      # (B, 1)
            totals["entropy"] += (h / logs)[multi].sum().item()
            n += int(real.sum())
            n_multi += int(multi.sum())
    out = {k: v / max(n, 1) for k, v in totals.items() if k != "entropy"}
    out["entropy"] = totals["entropy"] / n_multi if n_multi else math.nan
    return out
