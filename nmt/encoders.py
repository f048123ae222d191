"""RNN encoder (Bahdanau et al. 2015, Sec. 3.2; Cho et al. 2014). The Transformer encoder lives in
nmt/transformer.py.

Also here: the recurrences on fixed shapes that a CUDA graph can capture (nmt/graphs.py), used
inside `fixed_shapes(model)`: the encoder without packing (`encode_fixed`), and stacked RNNs one
layer at a time with their dropout drawn by F.dropout (`run_layers`).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from nmt.transfer import to_device

Hidden = Tensor | tuple[Tensor, Tensor]  # GRU h, or LSTM (h, c); each (layers, B, H)


def run_rnn(rnn: nn.RNNBase, x: Tensor | PackedSequence, h: Hidden | None = None):
    """rnn(x, h) in float32, also under autocast.

    Under CUDA autocast, cuDNN's RNN wrapper casts inputs and weights to *float16*, whatever dtype
    autocast was given (bf16 included), without loss scaling: small weight gradients flush to
    zero. It also copies the weights into a new half buffer at every call, i.e. at every decoder
    step. So the recurrence runs outside autocast on float32 inputs and state; the layers around
    it (projections, attention, readout) still run in the autocast dtype.

    On the CPU one position at a time (the decoder's loop over target positions, in training as
    in a search) goes through `step_cells` instead: its two matrix products under the autocast
    dtype (bf16), its gates and state in float32. There torch's float32 cell was a large share
    of a Bahdanau beam step, and a training update under bf16 learns the same per update in
    less time (bench/log/2026-12-04-rnn-recurrence-bf16.md). Whole sequences (the encoder; in
    training, decoders without attention or input feeding) keep torch's float32 recurrence.
    """
    data = x.data if isinstance(x, PackedSequence) else x
    if getattr(rnn, "fixed_shapes", False) and _layer_dropout(rnn) and \
            not isinstance(x, PackedSequence):
        return run_layers(rnn, x, h)
    if not torch.is_autocast_enabled(data.device.type):
        return rnn(x, h)
    if h is not None and _one_cpu_position(rnn, x):
        return step_cells(rnn, x, h)
    if h is not None:
        h = tuple(t.float() for t in h) if isinstance(h, tuple) else h.float()
    with torch.autocast(data.device.type, enabled=False):
        return rnn(x.float(), h)


def _one_cpu_position(rnn: nn.RNNBase, x: Tensor | PackedSequence) -> bool:
    return (not isinstance(x, PackedSequence) and x.device.type == "cpu" and rnn.batch_first
            and x.size(1) == 1 and not rnn.bidirectional
            and rnn.mode in ("GRU", "LSTM") and rnn.proj_size == 0
            and not (rnn.training and rnn.dropout > 0))


def step_cells(rnn: nn.RNNBase, x: Tensor, h: Hidden) -> tuple[Tensor, Hidden]:
    """One position through a stacked unidirectional, batch-first GRU or LSTM: x (B, 1, I),
    h as nn.GRU / nn.LSTM take it, each (layers, B, H) -> output (B, 1, H) and the new h, in
    float32. The equations of nn.GRU and nn.LSTM:

        GRU:  r = sigmoid(W_ir x + b_ir + W_hr h + b_hr), z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
              n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h
        LSTM: i, f, o = sigmoid(W_i. x + b_i. + W_h. h + b_h.),  g = tanh(W_ig x + ... + b_hg)
              c' = f * c + i * g,  h' = o * tanh(c')

    The matrix products run in whatever autocast says (bf16 under bf16 autocast), the rest in
    float32; autograd differentiates it as written."""
    lstm = rnn.mode == "LSTM"
    hs, cs = h if lstm else (h, None)
    inp, new_h, new_c = x.squeeze(1), [], []                    # (B, I)
    for layer in range(rnn.num_layers):
        w_ih, w_hh, b_ih, b_hh = (getattr(rnn, f"{name}_l{layer}", None)
                                  for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        gi = F.linear(inp, w_ih, b_ih).float()                  # (B, G*H)
        gh = F.linear(hs[layer], w_hh, b_hh).float()            # (B, G*H)
        if lstm:
            i, f, g, o = (gi + gh).chunk(4, 1)
            c = f.sigmoid() * cs[layer].float() + i.sigmoid() * g.tanh()
            inp = o.sigmoid() * c.tanh()
            new_c.append(c)
        else:
            (ir, iz, i_n), (hr, hz, h_n) = gi.chunk(3, 1), gh.chunk(3, 1)
            r, z = (ir + hr).sigmoid(), (iz + hz).sigmoid()
            n = (i_n + r * h_n).tanh()
            inp = (hs[layer].float() - n) * z + n               # (1 - z) n + z h, as torch's cell
        new_h.append(inp)
    h_out = torch.stack(new_h)                                  # (layers, B, H)
    return inp.unsqueeze(1), (h_out, torch.stack(new_c)) if lstm else h_out


# ----------------------------------------------------------------------------- fixed shapes

@contextmanager
def fixed_shapes(model: nn.Module) -> Iterator[None]:
    """Within the block `model`'s RNNs run on fixed shapes, as a CUDA graph needs (nmt/graphs.py):
    the encoder without packing (`encode_fixed`), whose batch layout depends on the lengths'
    values, and stacked RNNs with dropout between layers one layer at a time (`run_layers`),
    since cuDNN's own dropout state is re-derived from the generator outside any graph
    (training._reseed_rnn_dropout). Outside the block nothing changes."""
    modules = [m for m in model.modules() if isinstance(m, (RNNEncoder, nn.RNNBase))]
    for m in modules:
        m.fixed_shapes = True
    try:
        yield
    finally:
        for m in modules:
            m.fixed_shapes = False


def _layer_dropout(rnn: nn.RNNBase) -> bool:
    """Whether rnn(x) would draw dropout between its layers."""
    return rnn.num_layers > 1 and rnn.dropout > 0 and rnn.training


def _float32(x: Tensor):
    """(x, context) for a recurrence: under autocast x as float32 and autocast off inside the
    context, as run_rnn does (cuDNN's RNN would cast to float16 otherwise); else as they are."""
    if torch.is_autocast_enabled(x.device.type):
        return x.float(), torch.autocast(x.device.type, enabled=False)
    return x, nullcontext()


def _direction(rnn: nn.RNNBase, layer: int, reverse: bool, x: Tensor, state: Hidden):
    """One layer and direction of `rnn` over x (B, S, I), batch-first, from `state` (h, or
    (h, c) for an LSTM, each (1, B, H)) -> output (B, S, H) and the final state(s) (1, B, H).
    The weights are the module's own parameters (no copy): torch.gru / torch.lstm are the
    functions nn.GRU / nn.LSTM call, here with one layer and one direction."""
    suffix = f"_l{layer}{'_reverse' if reverse else ''}"
    names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if rnn.bias else ())
    params = [getattr(rnn, name + suffix) for name in names]
    if rnn.mode == "LSTM":
        out, h, c = torch.lstm(x, state, params, rnn.bias, 1, 0.0, rnn.training, False, True)
        return out, (h, c)
    out, h = torch.gru(x, state, params, rnn.bias, 1, 0.0, rnn.training, False, True)
    return out, h


def run_layers(rnn: nn.RNNBase, x: Tensor, h: Hidden | None = None) -> tuple[Tensor, Hidden]:
    """rnn(x, h) for a unidirectional, batch-first GRU or LSTM (the decoders'), one layer at a
    time, the dropout between layers drawn by F.dropout from the default generator: inside a
    CUDA graph each replay then draws new masks, as an eager update does. x (B, T, I), h as
    nn.GRU / nn.LSTM take it ((layers, B, H), or a pair for an LSTM; None: zeros) -> output
    (B, T, H) and the new state, as rnn(x, h) returns them; float32 under autocast, as run_rnn."""
    lstm = rnn.mode == "LSTM"
    x, context = _float32(x)
    if h is None:
        zeros = x.new_zeros(rnn.num_layers, x.size(0), rnn.hidden_size)
        h = (zeros, zeros) if lstm else zeros
    hs, cs = (t.float() for t in h) if lstm else (h.float(), None)
    new_h, new_c = [], []
    with context:
        for layer in range(rnn.num_layers):
            if layer:  # nn.GRU's dropout: on the outputs of every layer but the last
                x = F.dropout(x, rnn.dropout, rnn.training)
            state = (hs[layer:layer + 1], cs[layer:layer + 1]) if lstm else hs[layer:layer + 1]
            x, state = _direction(rnn, layer, False, x, state)
            new_h.append(state[0] if lstm else state)
            if lstm:
                new_c.append(state[1])
    h_out = torch.cat(new_h)                                    # (layers, B, H)
    return x, (h_out, torch.cat(new_c)) if lstm else h_out


def encode_fixed(rnn: nn.RNNBase, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """The (bi)RNN stack over padded x (B, S, I) without packing, with what packing gives:
    outputs (B, S, dirs * H), zero past each sentence's length, and the top layer's final
    hidden states (dirs, B, H), taken at each sentence's length. `lengths` (B,) on x's device.

    The forward direction reads the padding after a sentence's last token, which changes no
    output before it. The backward direction must start at the last real token, not at the
    padding: it reads each sentence reversed within its length (positions j < n read n - 1 - j,
    padding stays where it is), and its outputs are put back in place the same way. Its final
    state is then its output at the sentence's first token. Dropout between layers by F.dropout,
    as run_layers."""
    B, S = x.shape[:2]
    dirs = 2 if rnn.bidirectional else 1
    pos = torch.arange(S, device=x.device)                      # (S,)
    real = pos < lengths[:, None]                               # (B, S)
    rev = torch.where(real, lengths[:, None] - 1 - pos, pos)   # (B, S), its own inverse
    last = (lengths - 1).clamp(min=0)[:, None, None]           # (B, 1, 1)
    x, context = _float32(x)
    inp, finals = x, []
    with context:
        for layer in range(rnn.num_layers):
            if layer:
                inp = F.dropout(inp, rnn.dropout, rnn.training)
            outs, finals = [], []
            for d in range(dirs):
                seq = inp if d == 0 else _in_time(inp, rev)    # (B, S, I), reversed per length
                h0 = inp.new_zeros(1, B, rnn.hidden_size)
                out, _ = _direction(rnn, layer, d == 1, seq, (h0, h0) if rnn.mode == "LSTM"
                                    else h0)                    # (B, S, H)
                finals.append(out.gather(1, last.expand(-1, 1, out.size(2))).squeeze(1))
                outs.append(out if d == 0 else _in_time(out, rev))
            inp = torch.cat(outs, -1)                           # (B, S, dirs * H)
    return inp.masked_fill(~real[..., None], 0.0), torch.stack(finals)  # (dirs, B, H)


def _in_time(x: Tensor, index: Tensor) -> Tensor:
    """x (B, S, D) with position j of row b taken from position index[b, j]."""
    return x.gather(1, index[..., None].expand(-1, -1, x.size(2)))


class RNNEncoder(nn.Module):
    """Embeddings -> (bi)GRU/LSTM stack -> annotations h_1..h_S and a summary for the decoder.

    A bidirectional encoder uses hidden_size / 2 units per direction, so the annotations
    h_j = [->h_j; <-h_j] always have hidden_size features, the decoder's size (dot-style
    attention then needs no projection). Sequences are packed: the RNN never reads padding, so
    a sentence encodes the same alone or in a padded batch, and the backward direction starts
    at the sentence's real last token. The batch is sorted by length on the host, from lengths
    that should be on the CPU already (a GPU copy of them is read back once): torch's
    `enforce_sorted=False` packing would read its indices back from the device twice instead.

    `final` = tanh(W [->h_S; <-h_1]) from the top layer: the bridge that initialises the
    decoder (as Bahdanau et al. 2015, Appendix A.2.2, s_0 = tanh(W_s <-h_1), with both
    directions) and, for the attention-free model, the fixed context c = tanh(V h_N) of Cho et
    al. 2014 (Appendix A.1.1). Dropout applies to the embeddings and to the annotations.
    """

    fixed_shapes = False  # set by fixed_shapes(model): encode_fixed instead of packing

    def __init__(self, embed: nn.Embedding, hidden_size: int, layers: int, rnn_type: str,
                 bidirectional: bool, dropout: float):
        super().__init__()
        self.embed = embed
        self.dirs = 2 if bidirectional else 1
        rnn = nn.GRU if rnn_type == "gru" else nn.LSTM
        self.rnn = rnn(embed.embedding_dim, hidden_size // self.dirs, layers, batch_first=True,
                       bidirectional=bidirectional, dropout=dropout if layers > 1 else 0.0)
        self.bridge = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: Tensor, src_len: Tensor) -> tuple[Tensor, Tensor]:
        """src (B, S), src_len (B,) -> outputs (B, S, H) zero on padding, final (B, H)."""
        x = self.dropout(self.embed(src))                       # (B, S, E)
        if self.fixed_shapes:  # inside a CUDA graph (fixed_shapes): no packing
            out, top = encode_fixed(self.rnn, x, to_device(src_len, x.device))
            final = torch.tanh(self.bridge(torch.cat(list(top), dim=-1)))  # (B, H)
            return self.dropout(out), final
        lengths = src_len if src_len.device.type == "cpu" else src_len.cpu()
        lengths, order = torch.sort(lengths, descending=True)  # longest first, as packing wants
        back = to_device(order.argsort(), x.device)             # sorted row -> batch row
        order = to_device(order, x.device)
        packed = pack_padded_sequence(x.index_select(0, order), lengths, batch_first=True)
        out, h = run_rnn(self.rnn, packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))  # (B, S, H)
        out = out.index_select(0, back)                         # batch order again
        if isinstance(h, tuple):                                # LSTM: (h, c); summarise h
            h = h[0]
        top = h[-self.dirs:].index_select(1, back)              # (dirs, B, H/dirs) top layer
        final = torch.tanh(self.bridge(torch.cat(list(top), dim=-1)))  # (B, H)
        return self.dropout(out), final
