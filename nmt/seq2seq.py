"""What every architecture shares: the model protocol (`Seq2Seq`), the source mask, the
embedding initialisation and the parameter count. The RNN family (model.py) and the Transformer
(transformer.py) both build on it; `build_model` (model.py) imports both, so imports run one way.

Training calls `forward` (teacher forcing). Search calls `encode` once, `start` once, then
`step` per output position, and `reorder` whenever beams are expanded or re-ranked. The decoder
state is a dict of batch-first tensors (possibly nested in lists/tuples/dicts), so `reorder`
is written once here, for every architecture (like fairseq's reorder_incremental_state).

`src_len` may be on the CPU while `src` is on a GPU, and should be: the lengths are read on the
host (packing), and the source mask copies them to the device asynchronously, so neither
training nor decoding waits for the GPU to learn a length. Attention weights are computed only
when asked for (`attention=True`, the default, in `forward` and `start`): training and plain
decoding pass False and may get None, so a model may skip the work (the Transformer then uses
fused attention kernels throughout).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.transfer import to_device


class Seq2Seq(nn.Module):
    """Base class: an encoder-decoder that can be trained and decoded step by step."""

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor,
                attention: bool = True) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing: src (B, S), src_len (B,), tgt_in (B, T) -> logits (B, T, V), not
        log-probs, and attention (B, T, S) or None for a model without attention (or, with
        attention=False, for one that skipped computing it)."""
        raise NotImplementedError

    def encode(self, src: Tensor, src_len: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def start(self, memory: dict[str, Tensor], attention: bool = True) -> dict:
        """The decoder state before the first step; it holds what it needs of `memory`.
        attention=False: `step` need not return attention weights."""
        raise NotImplementedError

    def step(self, prev: Tensor, state: dict) -> tuple[Tensor, dict, Tensor | None]:
        """prev (B,) last tokens (BOS first) -> log-probs (B, V) float32, new state, attention
        (B, S) or None. The state passed in is consumed (a model may write into its buffers):
        go on with the one returned, or with a `reorder` of it."""
        raise NotImplementedError

    # state entries that depend on the source sentence only (encoder outputs, their attention
    # keys, the mask, Transformer cross-attention keys/values): equal on every hypothesis row
    # of one sentence
    source_state = ("memory", "keys", "mask", "final", "cross")
    # whether `step` can take G consecutive decoder rows per source-side row (`reorder`'s
    # `sentences`): the source side is then stored once per sentence, not once per hypothesis
    grouped_source = False
    # candidate target pieces per source piece (nmt.shortlist.Shortlist), set by whoever loads
    # the model for `nmt translate` / `nmt eval --checkpoint` with decode.shortlist; search
    # then restricts the output layer per batch (output_subset). None: the full softmax
    # (validation during training and compare decode so).
    shortlist = None

    def reorder(self, state: dict, index: Tensor, within_sentence: bool = False,
                sentences: Tensor | None = None) -> dict:
        """Select (or repeat) batch rows of the state: beam search expands B sentences to
        B * beam rows with index = arange(B).repeat_interleave(beam), and keeps the surviving
        hypotheses' states after each step. Non-tensor leaves are shared unchanged.

        within_sentence: every new row i comes from a row of the same sentence as row i (beam
        search re-ranking its hypotheses), so the source-side entries would be copied onto
        equal values and are shared instead (fairseq skips its encoder-decoder keys the same
        way); this is most of the copying in a beam step.

        sentences (N',): the new rows come in N' equal runs of consecutive rows, run j all
        hypotheses of the sentence whose source-side state is at `sentences[j]` (in the
        source-side rows as they are). A model with `grouped_source` (every model here) then
        keeps one source-side row per sentence instead of one per hypothesis (its step sees
        G = rows / source rows hypotheses per sentence); any other copies the source side row
        by row with `index`, which means the same.

        Like `step`, it consumes the state passed in (a model may write the new state into its
        buffers): go on with the state returned, never reorder one state twice."""
        if within_sentence:
            return {k: v if k in self.source_state else _select(v, index)
                    for k, v in state.items()}
        if sentences is not None and self.grouped_source:
            return {k: _select(v, sentences if k in self.source_state else index)
                    for k, v in state.items()}
        return _select(state, index)


class OutputLayer(nn.Linear):
    """The layer from the decoder's last features to the vocabulary: an nn.Linear (the same
    parameters, state-dict keys and tying) whose rows can be restricted to a subset of the
    vocabulary for a while (output_subset), so that a decoding step computes logits only for
    the pieces a shortlist allows: (n, d) x (d, V') instead of (n, d) x (d, V)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.rows: tuple[Tensor, Tensor | None] | None = None  # (V', d), (V',) or None

    def forward(self, x: Tensor) -> Tensor:
        if self.rows is None:
            return super().forward(x)
        return F.linear(x, *self.rows)  # (..., V'): column j is vocabulary id ids[j]


@contextlib.contextmanager
def output_subset(model: nn.Module, ids: Tensor | None) -> Iterator[None]:
    """Within the block every OutputLayer of `model` (an ensemble's members included) gives
    logits for the vocabulary ids `ids` (V',) only, in that order, so `step` returns log-probs
    (n, V') normalised over them; None changes nothing. The rows are selected once here, not
    at every step, and under autocast kept in its dtype, as its weight cache would."""
    layers = [m for m in model.modules() if isinstance(m, OutputLayer)] if ids is not None else []
    try:
        for m in layers:
            w = m.weight.detach().index_select(0, ids)               # (V', d)
            b = None if m.bias is None else m.bias.detach().index_select(0, ids)  # (V',)
            if torch.is_autocast_enabled(w.device.type):
                w = w.to(torch.get_autocast_dtype(w.device.type))
            m.rows = (w, b)
        yield
    finally:
        for m in layers:
            m.rows = None


def _select(x, index: Tensor):
    if isinstance(x, Tensor):
        return x.index_select(0, index)
    if isinstance(x, dict):
        return {k: _select(v, index) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_select(v, index) for v in x)
    return x


def source_mask(src: Tensor, src_len: Tensor) -> Tensor:
    """(B, S) True on real source tokens (EOS included), False on padding. src_len may be on
    the CPU: it is copied to src's device without waiting for it."""
    src_len = to_device(src_len, src.device)
    return torch.arange(src.size(1), device=src.device) < src_len.unsqueeze(1)


def embedding(vocab: int, dim: int) -> nn.Embedding:
    """N(0, dim^-0.5): rows have norm ~1, so tied output logits start ~N(0, 1) and the first
    loss is about ln(V) rather than exploding."""
    e = nn.Embedding(vocab, dim)
    nn.init.normal_(e.weight, 0.0, dim ** -0.5)
    return e


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters; a tied matrix counts once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
