"""Speed changes proposed for nmt/, measured by bench/run.py as levers before anyone edits nmt/.

Each is applied by monkeypatching inside the benchmark's worker process only; nothing here is
imported by the nmt package. It must keep the model's mathematics: `rnn_loop` computes the same
function with the same parameters (checked by `check_rnn_loop`, max |diff| ~1e-7). (A second
candidate, torch's fused Adam kernel, measured +4% T / +8% R and is now what nmt.training uses.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

import nmt.decoders as D

_original_forward = D.ContextDecoder.forward


def _context_forward(self, tgt_in: Tensor, state: dict) -> tuple[Tensor, Tensor | None, dict]:
    """ContextDecoder.forward (Bahdanau) with the recurrence written out per step.

    Two changes, same function: (1) the GRU input is [y_{i-1}; c_i], so W_ih [y; c] =
    W_ih^y y + W_ih^c c, and the y half is one (B, T, E) x (E, 3H) matmul for all positions
    before the loop, instead of T small ones inside it (its weight gradient, too, becomes one
    matmul, not T matmuls + T accumulations); (2) the GRU cell is spelled out (r, z, n gates as
    torch.nn.GRU defines them), which skips nn.GRU's per-call setup (weight list, layer-first
    transposes and copies) that dominates at sequence length 1.
    """
    if self.attention is None or self.lstm:
        return _original_forward(self, tgt_in, state)
    y = self.dropout(self.embed(tgt_in))                        # (B, T, E)
    E, rnn, L = y.size(-1), self.rnn, self.layers
    w = [(getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}"),
          getattr(rnn, f"bias_ih_l{k}"), getattr(rnn, f"bias_hh_l{k}")) for k in range(L)]
    gi_y = F.linear(y, w[0][0][:, :E], w[0][2])                 # (B, T, 3H), all steps at once
    w_c = w[0][0][:, E:]                                        # (3H, He)
    h = list(state["hidden"].unbind(1))                         # L x (B, H)
    ss, cs, ws = [], [], []
    for i in range(y.size(1)):
        c, a = self.attention(h[-1].unsqueeze(1), state["keys"], state["memory"],
                              state["mask"])                    # (B, 1, He), (B, 1, S)
        x = None
        for k in range(L):
            gi = gi_y[:, i] + F.linear(c.squeeze(1), w_c) if k == 0 else \
                F.linear(F.dropout(x, rnn.dropout, self.training), w[k][0], w[k][2])
            gh = F.linear(h[k], w[k][1], w[k][3])               # (B, 3H)
            ir, iz, i_n = gi.chunk(3, 1)
            hr, hz, hn = gh.chunk(3, 1)
            r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
            n = torch.tanh(i_n + r * hn)
            h[k] = x = n + z * (h[k] - n)                       # (1 - z) n + z h
        ss.append(x), cs.append(c), ws.append(a)
    s, c, attn = torch.stack(ss, 1), torch.cat(cs, 1), torch.cat(ws, 1)  # (B, T, .)
    t = torch.tanh(self.deep_out(torch.cat([s, c, y], -1)))     # (B, T, E)
    logits = self.out(self.dropout(t))                          # (B, T, V)
    return logits, attn, {**state, "hidden": torch.stack(h, 1)}  # hidden (B, L, H)


def apply(names: list[str]) -> None:
    """Switch on the named candidates in this process."""
    for name in names:
        if name == "rnn_loop":
            D.ContextDecoder.forward = _context_forward
        else:
            raise ValueError(f"unknown candidate {name!r}")


@torch.no_grad()
def check_rnn_loop(model, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> float:
    """max |logits difference| between the original and the candidate forward (eval mode)."""
    was = model.training
    model.eval()
    try:
        D.ContextDecoder.forward = _original_forward
        a, _ = model(src, src_len, tgt_in)
        D.ContextDecoder.forward = _context_forward
        b, _ = model(src, src_len, tgt_in)
    finally:
        model.train(was)
    return float((a - b).abs().max())
