"""RNN encoder (Bahdanau et al. 2015, Sec. 3.2; Cho et al. 2014). The Transformer encoder lives in
nmt/transformer.py."""
from __future__ import annotations

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
