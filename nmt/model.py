"""The model protocol every architecture follows, the RNN encoder-decoder, and `build_model`.

Training calls `forward` (teacher forcing). Search calls `encode` once, `start` once, then
`step` per output position, and `reorder` whenever beams are expanded or re-ranked. The decoder
state is a dict of batch-first tensors (possibly nested in lists/tuples/dicts), so `reorder`
is written once here, for every architecture (like fairseq's reorder_incremental_state).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from nmt.config import ModelConfig
from nmt.decoders import ContextDecoder, LuongDecoder
from nmt.encoders import RNNEncoder
from nmt.initialization import init_rnn_model


class Seq2Seq(nn.Module):
    """Base class: an encoder-decoder that can be trained and decoded step by step."""

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing: src (B, S), src_len (B,), tgt_in (B, T) -> logits (B, T, V), not
        log-probs, and attention (B, T, S) or None for a model without attention."""
        raise NotImplementedError

    def encode(self, src: Tensor, src_len: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def start(self, memory: dict[str, Tensor]) -> dict:
        """The decoder state before the first step; it holds what it needs of `memory`."""
        raise NotImplementedError

    def step(self, prev: Tensor, state: dict) -> tuple[Tensor, dict, Tensor | None]:
        """prev (B,) last tokens (BOS first) -> log-probs (B, V) float32, new state, attention
        (B, S) or None."""
        raise NotImplementedError

    # state entries that depend on the source sentence only (encoder outputs, their attention
    # keys, the mask, Transformer cross-attention keys/values): equal on every hypothesis row
    # of one sentence
    source_state = ("memory", "keys", "mask", "final", "cross")

    def reorder(self, state: dict, index: Tensor, within_sentence: bool = False) -> dict:
        """Select (or repeat) batch rows of the state: beam search expands B sentences to
        B * beam rows with index = arange(B).repeat_interleave(beam), and keeps the surviving
        hypotheses' states after each step. Non-tensor leaves are shared unchanged.

        within_sentence: every new row i comes from a row of the same sentence as row i (beam
        search re-ranking its hypotheses), so the source-side entries would be copied onto
        equal values and are shared instead (fairseq skips its encoder-decoder keys the same
        way); this is most of the copying in a beam step."""
        if within_sentence:
            return {k: v if k in self.source_state else _select(v, index)
                    for k, v in state.items()}
        return _select(state, index)


def _select(x, index: Tensor):
    if isinstance(x, Tensor):
        return x.index_select(0, index)
    if isinstance(x, dict):
        return {k: _select(v, index) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_select(v, index) for v in x)
    return x


def source_mask(src: Tensor, src_len: Tensor) -> Tensor:
    """(B, S) True on real source tokens (EOS included), False on padding."""
    return torch.arange(src.size(1), device=src.device) < src_len.unsqueeze(1)


class RNNSeq2Seq(Seq2Seq):
    """(Bi)RNN encoder + one of the RNN decoders (no attention, Bahdanau, Luong family)."""

    def __init__(self, encoder: RNNEncoder, decoder: ContextDecoder | LuongDecoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def encode(self, src: Tensor, src_len: Tensor) -> dict[str, Tensor]:
        memory, final = self.encoder(src, src_len)              # (B, S, H), (B, H)
        return {"memory": memory, "final": final, "mask": source_mask(src, src_len)}

    def start(self, memory: dict[str, Tensor]) -> dict:
        return self.decoder.start(memory)

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor | None]:
        logits, attn, _ = self.decoder(tgt_in, self.start(self.encode(src, src_len)))
        return logits, attn

    def step(self, prev: Tensor, state: dict) -> tuple[Tensor, dict, Tensor | None]:
        logits, attn, state = self.decoder(prev.unsqueeze(1), state)  # (B, 1, V)
        log_probs = logits.squeeze(1).float().log_softmax(-1)   # (B, V)
        return log_probs, state, None if attn is None else attn.squeeze(1)


def embedding(vocab: int, dim: int) -> nn.Embedding:
    """N(0, dim^-0.5): rows have norm ~1, so tied output logits start ~N(0, 1) and the first
    loss is about ln(V) rather than exploding."""
    e = nn.Embedding(vocab, dim)
    nn.init.normal_(e.weight, 0.0, dim ** -0.5)
    return e


def build_model(cfg: ModelConfig, src_vocab: int, tgt_vocab: int, joint: bool = True) -> Seq2Seq:
    """The model a recipe describes. With tie_embeddings, source and target share one embedding
    matrix only when the vocabulary is joint (same size and `joint`, i.e. Tokenizer.joint: ids
    mean the same pieces on both sides); otherwise only the target embeddings and the output
    layer are tied."""
    share_src = cfg.tie_embeddings and joint and src_vocab == tgt_vocab
    if cfg.arch == "transformer":
        from nmt.transformer import Transformer  # here: transformer.py imports Seq2Seq
        return Transformer(cfg, src_vocab, tgt_vocab, share_src)
    tgt_embed = embedding(tgt_vocab, cfg.emb_dim)
    src_embed = tgt_embed if share_src else embedding(src_vocab, cfg.emb_dim)
    encoder = RNNEncoder(src_embed, cfg.hidden_size, cfg.enc_layers, cfg.rnn_type,
                         cfg.bidirectional, cfg.dropout)
    common = dict(embed=tgt_embed, enc_dim=cfg.hidden_size, hidden=cfg.hidden_size,
                  layers=cfg.dec_layers, rnn_type=cfg.rnn_type, dropout=cfg.dropout,
                  readout=cfg.readout or cfg.hidden_size, tie=cfg.tie_embeddings)
    if cfg.attention in ("none", "bahdanau"):
        decoder = ContextDecoder(attention=cfg.attention == "bahdanau", **common)
    else:
        decoder = LuongDecoder(attention=cfg.attention, input_feeding=cfg.input_feeding,
                               window=cfg.local_window, **common)
    model = RNNSeq2Seq(encoder, decoder)
    init_rnn_model(model, cfg.init)
    return model


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters; a tied matrix counts once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
