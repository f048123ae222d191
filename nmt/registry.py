"""Every attention kind and model family, named once: its recipe value, the classes that build
it, and the line the comparison report gives a system that uses it.

A recipe names its model with `model.arch` (a family, FAMILIES) and, in the RNN family,
`model.attention` (an attention kind, ATTENTION_KINDS). Whatever asks about those names asks
here: the recipe check (config.py: the values it accepts, listed in its error), `build_model`
(model.py: the family's model class; the kind's decoder and score module) and the report
(`compare.design`: each system's line). Adding an attention kind is one entry below plus its
score class in attention.py; adding a family is one entry plus its model class
(docs/architecture.md).

Nothing here imports torch, so config.py (read by commands and docs that build no model) stays
cheap to import: an entry names its classes by their names in nmt/attention.py, nmt/decoders.py
and model.py's MODELS, and the network modules look them up there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

# the report's line for a system, from its model settings (a config.ModelConfig; config.py
# imports this module, so the type is not named here)
Design = Callable[[Any], str]


@dataclass(frozen=True)
class AttentionKind:
    """One value of `model.attention` (the RNN family): how its decoder attends."""
    name: str       # the recipe's value
    # the RNN decoder that takes it, a class of nmt/decoders.py: ContextDecoder reads the
    # context into the RNN step (Cho et al. 2014, Bahdanau et al. 2015), LuongDecoder attends
    # after the step (Luong et al. 2015)
    decoder: str
    score: str      # the score module comparing query and keys, a class of nmt/attention.py
    local: bool     # attend only within a window around a predicted position (LocalPosition)
    about: str      # one line for the docs: what it computes and where it comes from
    design: Design  # the report's line for a system using it

    @property
    def attends(self) -> bool:
        """False for the attention-free baseline (no score module)."""
        return bool(self.score)


@dataclass(frozen=True)
class ModelFamily:
    """One value of `model.arch`."""
    name: str       # the recipe's value
    # the model class, built as Model(cfg, src_vocab, tgt_vocab, share_src); model.py's MODELS
    # holds every family's class (model.py imports them all, so imports run one way)
    model: str
    about: str      # one line for the docs
    design: Design  # the report's line for a system of this family


def _fixed_context(m) -> str:
    return "fixed context: the encoder summary c, into the RNN and the readout at every step"


def _before_step(m) -> str:
    return "attends from s_{i-1} (before the RNN step); c_i into the RNN and the readout"


def _after_step(m) -> str:
    feed = "; ~h_t fed back (input feeding)" if m.input_feeding else ""
    return f"attends from h_t (after the RNN step), {m.attention.removeprefix('luong-')} " \
           f"score; readout ~h_t = tanh(W_c [c_t; h_t]){feed}"


def _luong(name: str, score: str, about: str, local: bool = False) -> AttentionKind:
    return AttentionKind(name, "LuongDecoder", score, local, about, _after_step)


# in the order the recipe check lists them
ATTENTION_KINDS: dict[str, AttentionKind] = {k.name: k for k in (
    AttentionKind("none", "ContextDecoder", "", False, "no attention: the encoder summary is the "
                  "context at every step (Cho et al. 2014), the baseline", _fixed_context),
    AttentionKind("bahdanau", "ContextDecoder", "BahdanauScore", False, "additive score from the "
                  "state before the RNN step (Bahdanau et al. 2015)", _before_step),
    _luong("luong-dot", "DotScore", "dot product with the state after the RNN step (Luong et al. "
           "2015)"),
    _luong("luong-general", "GeneralScore", "bilinear s^T W h (Luong et al. 2015)"),
    _luong("luong-concat", "ConcatScore", "additive score from the state after the RNN step "
           "(Luong et al. 2015)"),
    _luong("scaled-dot", "ScaledDotScore", "dot product over sqrt(d) (Vaswani et al. 2017)"),
    _luong("cosine", "CosineScore", "cosine similarity times a learned sharpness (Graves et al. "
           "2014)"),
    _luong("luong-local", "GeneralScore", "local-p: the general score within a window around a "
           "predicted position (Luong et al. 2015; the paper's best variant)", local=True),
)}


def _transformer(m) -> str:
    return f"{m.dec_layers} layers of self- and cross-attention, {m.heads} heads; no recurrence"


def _rnn(m) -> str:
    return ATTENTION_KINDS[m.attention].design(m)


# in the order the recipe check lists them
FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (
    ModelFamily("transformer", "Transformer", "the Transformer (Vaswani et al. 2017): "
                "self-attention layers, multi-head cross-attention", _transformer),
    ModelFamily("rnn", "RNNSeq2Seq", "a (bi)GRU/LSTM encoder and an RNN decoder with one of the "
                "attention kinds (model.attention)", _rnn),
)}

ATTENTIONS = tuple(ATTENTION_KINDS)  # the values of model.attention
ARCHS = tuple(FAMILIES)              # the values of model.arch


def design(m) -> str:
    """What the decoder of a model with settings `m` (a config.ModelConfig) does with the
    source: the part that differs *because it is the method* (the comparison report prints it
    beside the parameter counts)."""
    return FAMILIES[m.arch].design(m)
