"""The RNN encoder-decoder, and `build_model`: the model a recipe describes, of either family.

The protocol every architecture follows (`Seq2Seq`) lives in seq2seq.py.
"""
from __future__ import annotations

from torch import Tensor

from nmt.config import ModelConfig
from nmt.decoders import ContextDecoder, LuongDecoder
from nmt.encoders import RNNEncoder
from nmt.initialization import init_rnn_model
from nmt.seq2seq import Seq2Seq, embedding, source_mask
from nmt.transformer import Transformer


class RNNSeq2Seq(Seq2Seq):
    """(Bi)RNN encoder + one of the RNN decoders (no attention, Bahdanau, Luong family)."""

    # a beam's hypotheses share their sentence's encoder outputs, attention keys, mask and
    # summary (Attention takes them as the sentence's positions): K times less to copy and read
    grouped_source = True

    def __init__(self, encoder: RNNEncoder, decoder: ContextDecoder | LuongDecoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def encode(self, src: Tensor, src_len: Tensor) -> dict[str, Tensor]:
        memory, final = self.encoder(src, src_len)              # (B, S, H), (B, H)
        return {"memory": memory, "final": final, "mask": source_mask(src, src_len)}

    def start(self, memory: dict[str, Tensor], attention: bool = True) -> dict:
        return self.decoder.start(memory)  # the RNN decoders compute their weights anyway

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor,
                attention: bool = True) -> tuple[Tensor, Tensor | None]:
        logits, attn, _ = self.decoder(tgt_in, self.start(self.encode(src, src_len)))
        return logits, attn

    def step(self, prev: Tensor, state: dict) -> tuple[Tensor, dict, Tensor | None]:
        logits, attn, state = self.decoder(prev.unsqueeze(1), state)  # (B, 1, V)
        log_probs = logits.squeeze(1).float().log_softmax(-1)   # (B, V)
        return log_probs, state, None if attn is None else attn.squeeze(1)


def build_model(cfg: ModelConfig, src_vocab: int, tgt_vocab: int, joint: bool = True) -> Seq2Seq:
    """The model a recipe describes. With tie_embeddings, source and target share one embedding
    matrix only when the vocabulary is joint (same size and `joint`, i.e. Tokenizer.joint: ids
    mean the same pieces on both sides); otherwise only the target embeddings and the output
    layer are tied."""
    share_src = cfg.tie_embeddings and joint and src_vocab == tgt_vocab
    if cfg.arch == "transformer":
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

