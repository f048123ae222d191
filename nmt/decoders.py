"""RNN decoders: the attention-free baseline, Bahdanau attention and the Luong family.

Every decoder runs on a *state* dict (batch-first tensors, see nmt.seq2seq.Seq2Seq):
`start(enc)` builds it from the encoder's output, and `forward(tgt_in, state)` consumes T target
tokens, returning logits (B, T, V), attention (B, T, S) or None, and the state after them.
Training calls forward once with the whole target; decoding calls it with T = 1 per step. One
code path for both is what makes incremental decoding match teacher forcing exactly.

The RNN hidden state is (layers, B, H) inside torch but stored batch-first, (B, layers, H), in
the state dict, so that beam search can index_select every state tensor along dim 0. Beam search
may keep the source side (memory, keys, mask, final) once per sentence for its G hypotheses
(Seq2Seq.grouped_source): Attention then takes a sentence's G rows as its positions.

Which decoder and which score module a recipe's `model.attention` gets is its entry in
registry.py (by class name); `attention_for` builds the attention module an entry describes.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from nmt import attention as scores  # the score classes, looked up by an entry's name
from nmt.attention import Attention, LocalPosition
from nmt.config import ModelConfig
from nmt.encoders import Hidden, run_rnn
from nmt.registry import AttentionKind
from nmt.seq2seq import OutputLayer


def _batch_first(h: Hidden) -> Hidden:
    return tuple(x.transpose(0, 1) for x in h) if isinstance(h, tuple) else h.transpose(0, 1)


def _layer_first(h: Hidden) -> Hidden:
    # contiguous: cuDNN / the CPU kernels want (layers, B, H) laid out densely
    return tuple(x.transpose(0, 1).contiguous() for x in h) if isinstance(h, tuple) \
        else h.transpose(0, 1).contiguous()


def _top(h: Hidden) -> Tensor:
    """The top layer's hidden state (B, H): the decoder state s used as attention query."""
    return (h[0] if isinstance(h, tuple) else h)[-1]


class RNNDecoder(nn.Module):
    """Shared parts: target embeddings, the GRU/LSTM stack and the readout to the vocabulary.

    Every RNN decoder ends in a readout layer of `readout` features (Bahdanau's deep output t_i,
    Luong's attentional state ~h_t) and logits = W_y t. With `tie`, W_y is the target embedding
    matrix (Press & Wolf 2017), reached through a bias-free readout -> emb_dim projection when
    the sizes differ. The first state of every layer is the encoder's summary
    tanh(W [->h_S; <-h_1]) (LSTM cells start at zero).
    """

    def __init__(self, embed: nn.Embedding, rnn_input: int, hidden: int, layers: int,
                 rnn_type: str, dropout: float, readout: int, tie: bool):
        super().__init__()
        self.embed = embed
        rnn = nn.GRU if rnn_type == "gru" else nn.LSTM
        self.rnn = rnn(rnn_input, hidden, layers, batch_first=True,
                       dropout=dropout if layers > 1 else 0.0)
        self.layers, self.lstm = layers, rnn_type == "lstm"
        emb = embed.embedding_dim
        self.proj = nn.Linear(readout, emb, bias=False) if tie and readout != emb \
            else nn.Identity()
        self.out = OutputLayer(emb if tie else readout, embed.num_embeddings)
        if tie:
            self.out.weight = embed.weight
        self.dropout = nn.Dropout(dropout)

    def init_state(self, enc: dict[str, Tensor]) -> dict[str, Tensor]:
        h = enc["final"].unsqueeze(1).expand(-1, self.layers, -1).contiguous()  # (B, L, H)
        return {**enc, "hidden": (h, torch.zeros_like(h)) if self.lstm else h}

    def logits(self, t: Tensor) -> Tensor:
        """Readout t (B, T, R) -> logits (B, T, V): one matmul for all positions."""
        return self.out(self.proj(self.dropout(t)))

    @classmethod
    def from_config(cls, m: ModelConfig, embed: nn.Embedding, kind: AttentionKind) -> RNNDecoder:
        """The decoder a recipe's model settings describe, attending as `kind` says, over the
        encoder's annotations (model.hidden_size features, as the decoder)."""
        raise NotImplementedError


class ContextDecoder(RNNDecoder):
    """Cho et al. 2014 (no attention) and Bahdanau et al. 2015 (additive attention).

    s_i = RNN([y_{i-1}; c_i], s_{i-1}); the context also feeds a deep output (Bahdanau A.2.2)
    t_i = tanh(W_o [s_i; c_i; y_{i-1}]) of `readout` features, and logits = W_y t_i. The paper's
    t_i is a maxout layer of 500 units over a 1000-unit decoder; tanh keeps it a plain projection,
    and its width defaults to the decoder's, as wide as Luong's ~h_t, so the two families differ
    in where attention sits, not in readout capacity.

    - no attention: c_i = c, the encoder summary, at every step (Cho et al. 2014, Sec. 2.2:
      s_i = f(s_{i-1}, y_{i-1}, c), P(y_i) = g(s_i, y_{i-1}, c)): a fair, strong baseline, as
      the decoder is reminded of the source at every step. c does not depend on s, so the
      whole target runs through the RNN in one call.
    - Bahdanau: c_i = sum_j a_ij h_j with a_ij from s_{i-1}, the state *before* reading
      y_{i-1} (Eq. 5-6), so each step waits for the previous one: a loop over positions.
    """

    def __init__(self, embed: nn.Embedding, enc_dim: int, hidden: int, layers: int,
                 rnn_type: str, dropout: float, readout: int, attention: AttentionKind,
                 tie: bool):
        emb = embed.embedding_dim
        super().__init__(embed, emb + enc_dim, hidden, layers, rnn_type, dropout, readout, tie)
        self.attention = attention_for(attention, hidden, enc_dim, window=0)
        self.deep_out = nn.Linear(hidden + enc_dim + emb, readout)

    @classmethod
    def from_config(cls, m: ModelConfig, embed: nn.Embedding,
                    kind: AttentionKind) -> ContextDecoder:
        return cls(embed, m.hidden_size, m.hidden_size, m.dec_layers, m.rnn_type, m.dropout,
                   m.readout or m.hidden_size, kind, m.tie_embeddings)

    def start(self, enc: dict[str, Tensor]) -> dict[str, Tensor]:
        state = self.init_state(enc)
        if self.attention is not None:
            state["keys"] = self.attention.proj_keys(enc["memory"])  # (B, S, A), once
        return state

    def forward(self, tgt_in: Tensor, state: dict) -> tuple[Tensor, Tensor | None, dict]:
        y = self.dropout(self.embed(tgt_in))                    # (B, T, E)
        h = _layer_first(state["hidden"])                       # (L, B, H)
        if self.attention is None:
            final = state["final"]                              # (B, He), or one per sentence
            if final.size(0) < y.size(0):                       # G hypotheses a sentence
                final = final.repeat_interleave(y.size(0) // final.size(0), 0)
            c = final.unsqueeze(1).expand(-1, y.size(1), -1)    # (B, T, He)
            s, h = run_rnn(self.rnn, torch.cat([y, c], -1), h)  # (B, T, H)
            attn = None
        else:
            ss, cs, ws = [], [], []
            for y_i in y.unsqueeze(2).unbind(1):                # (B, 1, E); unbind, not y[:, i]:
                # slicing's backward would build a zero (B, T, E) gradient at every step
                c, w = self.attention(_top(h).unsqueeze(1), state["keys"], state["memory"],
                                      state["mask"])            # (B, 1, He), (B, 1, S)
                s, h = run_rnn(self.rnn, torch.cat([y_i, c], -1), h)  # (B, 1, H)
                ss.append(s), cs.append(c), ws.append(w)
            s, c, attn = torch.cat(ss, 1), torch.cat(cs, 1), torch.cat(ws, 1)  # (B, T, .)
        t = torch.tanh(self.deep_out(torch.cat([s, c, y], -1)))  # (B, T, R)
        return self.logits(t), attn, {**state, "hidden": _batch_first(h)}


def attention_for(kind: AttentionKind, hidden: int, enc_dim: int,
                  window: int) -> Attention | None:
    """The attention module of `kind` (an entry of registry.ATTENTION_KINDS) for a decoder of
    `hidden` units over annotations of `enc_dim` features: its score class of attention.py
    (Luong et al. 2015, Eq. 8, and the others), with the predictive window of half-width
    `window` for a local kind (local-p, Eq. 9-10); None for the attention-free baseline."""
    if not kind.attends:
        return None
    score = getattr(scores, kind.score)(hidden, enc_dim)
    return Attention(score, LocalPosition(hidden, window) if kind.local else None)


class LuongDecoder(RNNDecoder):
    """Luong et al. 2015: attention *after* the RNN step, from the current state h_t.

    h_t = RNN(y_{t-1}, h_{t-1}); c_t = attention(h_t, h_1..h_S);
    ~h_t = tanh(W_c [c_t; h_t]) (Eq. 5) of `readout` features; logits = W_s ~h_t (Eq. 6).

    Input feeding (Sec. 3.3): the RNN reads [y_{t-1}; ~h_{t-1}], so it knows what it attended to
    before (a coverage hint). That makes each step depend on the previous attention: a loop.
    Without it the RNN never sees attention, so all T states come from one nn.GRU call and
    attention runs over all positions at once.

    Dot, scaled-dot and cosine compare h_t with h_j directly, so they need equal sizes; the
    encoder outputs hidden_size features, as the decoder, so no projection is needed (the score
    modules add one only if the sizes differ).
    """

    def __init__(self, embed: nn.Embedding, enc_dim: int, hidden: int, layers: int,
                 rnn_type: str, dropout: float, readout: int, attention: AttentionKind,
                 input_feeding: bool, window: int, tie: bool):
        emb = embed.embedding_dim
        super().__init__(embed, emb + (readout if input_feeding else 0), hidden, layers,
                         rnn_type, dropout, readout, tie)
        self.attention = attention_for(attention, hidden, enc_dim, window)
        if self.attention is None:
            raise ValueError(f"{attention.name}: LuongDecoder needs an attention kind with a score")
        self.w_c = nn.Linear(enc_dim + hidden, readout, bias=False)
        self.input_feeding = input_feeding

    @classmethod
    def from_config(cls, m: ModelConfig, embed: nn.Embedding,
                    kind: AttentionKind) -> LuongDecoder:
        return cls(embed, m.hidden_size, m.hidden_size, m.dec_layers, m.rnn_type, m.dropout,
                   m.readout or m.hidden_size, kind, m.input_feeding, m.local_window,
                   m.tie_embeddings)

    def start(self, enc: dict[str, Tensor]) -> dict[str, Tensor]:
        state = self.init_state(enc)
        state["keys"] = self.attention.proj_keys(enc["memory"])  # (B, S, Dk), once
        if self.input_feeding:
            state["feed"] = enc["final"].new_zeros(enc["final"].size(0), self.w_c.out_features)
        return state

    def _attend(self, h: Tensor, state: dict) -> tuple[Tensor, Tensor]:
        c, w = self.attention(h, state["keys"], state["memory"], state["mask"])  # (B, T, .)
        return torch.tanh(self.w_c(torch.cat([c, h], -1))), w  # ~h (B, T, R), Eq. 5

    def forward(self, tgt_in: Tensor, state: dict) -> tuple[Tensor, Tensor, dict]:
        y = self.dropout(self.embed(tgt_in))                    # (B, T, E)
        h = _layer_first(state["hidden"])                       # (L, B, H)
        state = dict(state)
        if not self.input_feeding:
            hs, h = run_rnn(self.rnn, y, h)                     # (B, T, H)
            att, attn = self._attend(hs, state)                 # (B, T, R), (B, T, S)
        else:
            feed, atts, ws = state["feed"].unsqueeze(1), [], []  # (B, 1, R)
            for y_t in y.unsqueeze(2).unbind(1):                # (B, 1, E)
                ht, h = run_rnn(self.rnn, torch.cat([y_t, feed], -1), h)  # (B, 1, H)
                feed, w = self._attend(ht, state)
                atts.append(feed), ws.append(w)
            att, attn = torch.cat(atts, 1), torch.cat(ws, 1)    # (B, T, R), (B, T, S)
            state["feed"] = feed.squeeze(1)
        state["hidden"] = _batch_first(h)
        return self.logits(att), attn, state                   # (B, T, V)
