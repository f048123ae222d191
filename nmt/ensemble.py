"""An ensemble of models that share a tokenizer, decoded as one model.

`Ensemble` is itself a Seq2Seq: it speaks the encode/start/step/reorder protocol by forwarding
each call to its members and combining their next-token distributions, so greedy, beam search
and sampling drive it unchanged, and RNN and Transformer members mix freely. At every step the
members' log-probabilities are averaged and renormalised,

    log p(y_t | y_<t, x) = log_softmax_y( (1/M) * sum_m log p_m(y_t | y_<t, x) ),

the normalised geometric mean of the members' distributions (a product of experts: a token
must be likely under every member). Attention, where members have it, is their mean.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from nmt.checkpoint import load_for_inference
from nmt.errors import NMTError
from nmt.seq2seq import Seq2Seq


def _mean_attention(attns: list[Tensor | None]) -> Tensor | None:
    have = [a.float() for a in attns if a is not None]
    return torch.stack(have).mean(0) if have else None


class Ensemble(Seq2Seq):
    """Members decode in lock step; the state is {"members": [each member's state]}."""

    def __init__(self, members: list[Seq2Seq]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(members)
        positions = [int(m.max_positions) for m in members
                     if getattr(m, "max_positions", None)]
        # the shortest position table bounds what the ensemble reads and writes
        self.max_positions = min(positions) if positions else None

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor,
                attention: bool = True) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing: the combined log-probs (B, T, V) (log_softmax leaves them
        unchanged, so they serve as logits) and the mean attention (B, T, S) or None."""
        outs = [m(src, src_len, tgt_in, attention=attention) for m in self.members]
        logp = torch.stack([o[0].float().log_softmax(-1) for o in outs])  # (M, B, T, V)
        return logp.mean(0).log_softmax(-1), _mean_attention([o[1] for o in outs])

    def encode(self, src: Tensor, src_len: Tensor) -> dict:
        return {"members": [m.encode(src, src_len) for m in self.members]}

    def start(self, memory: dict, attention: bool = True) -> dict:
        return {"members": [m.start(mem, attention)
                            for m, mem in zip(self.members, memory["members"])]}

    def step(self, prev: Tensor, state: dict) -> tuple[Tensor, dict, Tensor | None]:
        outs = [m.step(prev, s) for m, s in zip(self.members, state["members"])]
        logp = torch.stack([o[0] for o in outs]).mean(0).log_softmax(-1)  # (B, V)
        return logp, {"members": [o[1] for o in outs]}, _mean_attention([o[2] for o in outs])

    def reorder(self, state: dict, index: Tensor, within_sentence: bool = False,
                sentences: Tensor | None = None) -> dict:
        return {"members": [m.reorder(s, index, within_sentence, sentences)
                            for m, s in zip(self.members, state["members"])]}


def load_ensemble(paths: list[Path], device):
    """(Ensemble in eval mode, tokenizer, the first checkpoint's recipe); every checkpoint must
    have the first one's tokenizer, since the members' token ids are averaged position by
    position."""
    model, tok, recipe = load_for_inference(paths[0], device)
    members = [model]
    for p in paths[1:]:
        m, t, _ = load_for_inference(p, device)
        if t.to_state() != tok.to_state():
            raise NMTError(f"--ensemble {p}: its tokenizer differs from that of {paths[0]}; "
                           "only models trained with the same tokenizer can be ensembled "
                           "(train them with one tokenizer, e.g. `nmt compare` shares one)")
        members.append(m)
    return Ensemble(members).to(device).eval(), tok, recipe
