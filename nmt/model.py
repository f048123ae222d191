"""The RNN encoder-decoder, and `build_model`: the model a recipe describes, of any family.

The protocol every architecture follows (`Seq2Seq`) lives in seq2seq.py; the families and
attention kinds, and the classes that build each, are named in registry.py.
"""
from __future__ import annotations

from torch import Tensor

from nmt import decoders
from nmt.config import ModelConfig
from nmt.encoders import RNNEncoder
from nmt.initialization import init_rnn_model
from nmt.registry import ATTENTION_KINDS, FAMILIES
from nmt.seq2seq import Seq2Seq, embedding, source_mask
from nmt.transformer import Transformer


class RNNSeq2Seq(Seq2Seq):
    """(Bi)RNN encoder + one of the RNN decoders (no attention, Bahdanau, Luong family).

    Built as every family's model, from (cfg, src_vocab, tgt_vocab, share_src): the decoder
    class and its attention are the entry of registry.ATTENTION_KINDS for model.attention; the
    steps of model.init then initialise every weight (nmt.initialization)."""

    # a beam's hypotheses share their sentence's encoder outputs, attention keys, mask and
    # summary (Attention takes them as the sentence's positions): K times less to copy and read
    grouped_source = True

    def __init__(self, cfg: ModelConfig, src_vocab: int, tgt_vocab: int, share_src: bool):
        super().__init__()
        # created in this order (target embeddings, source, encoder, decoder): each draws its
        # initial weights from the seeded generator, so the order fixes the initial model
        tgt_embed = embedding(tgt_vocab, cfg.emb_dim)
        src_embed = tgt_embed if share_src else embedding(src_vocab, cfg.emb_dim)
        self.encoder = RNNEncoder(src_embed, cfg.hidden_size, cfg.enc_layers, cfg.rnn_type,
                                  cfg.bidirectional, cfg.dropout)
        kind = ATTENTION_KINDS[cfg.attention]
        self.decoder = getattr(decoders, kind.decoder).from_config(cfg, tgt_embed, kind)
        init_rnn_model(self, cfg.init)

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


# the model class of every family (registry.FAMILIES names each by its class name); a new
# family's module is imported here, so imports run one way
MODELS: dict[str, type[Seq2Seq]] = {cls.__name__: cls for cls in (RNNSeq2Seq, Transformer)}


def build_model(cfg: ModelConfig, src_vocab: int, tgt_vocab: int, joint: bool = True) -> Seq2Seq:
    """The model a recipe describes: its family's class (registry.FAMILIES[model.arch]). With
    tie_embeddings, source and target share one embedding matrix only when the vocabulary is
    joint (same size and `joint`, i.e. Tokenizer.joint: ids mean the same pieces on both
    sides); otherwise only the target embeddings and the output layer are tied."""
    share_src = cfg.tie_embeddings and joint and src_vocab == tgt_vocab
    return MODELS[FAMILIES[cfg.arch].model](cfg, src_vocab, tgt_vocab, share_src)
