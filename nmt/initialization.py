"""Explicit initialisation of the RNN encoder-decoders.

torch's defaults draw every GRU/LSTM weight *and bias* from U(-1/sqrt(H), 1/sqrt(H)), and nn.Linear
biases likewise. The random biases add one vector to every position of every sentence: measured on
real Multi30k batches at initialisation, ~77% of the encoder annotations and ~96% of the summary
that starts the decoder (the only view of the source the attention-free model has) are that shared
vector, so every sentence looks alike until training removes it. The references initialise
explicitly instead. `model.init` lists the steps applied; its default, zero_bias and xavier, is
what bench/init_sweep.py measured to learn fastest on every RNN system (bench/RESULTS.md):

- zero_bias: every bias 0 (Bahdanau et al. 2015, App. B.1; JoeyNMT), except an LSTM's forget
  gate, which starts at 1 (Jozefowicz et al. 2015) so that cells remember by default.
- xavier: Glorot-uniform input-to-hidden weights, one gate block at a time, and Glorot-uniform
  weights of every Linear layer (projections, attention, readout): activations keep their scale
  through the layers (Glorot & Bengio 2010). Per gate, as JoeyNMT does: nn.GRU stacks its three
  gate matrices into one, whose fan-out would otherwise be counted three times.
- orthogonal: orthogonal hidden-to-hidden weights per gate (Saxe et al. 2014; Bahdanau et al.
  2015 App. B.1): repeated multiplication by the recurrent matrix neither shrinks nor blows up
  the state over a sentence.
- identity_general: Luong's general score s^T W h starts with W = I, i.e. as the dot score, and
  learns a correction, instead of spending its first updates learning an identity-like map from
  a random one.

Embeddings keep N(0, dim^-0.5) (nmt.seq2seq.embedding) and tied output layers share them. The
Transformer is not touched (its own init lives in nmt/transformer.py).
"""
from __future__ import annotations

import torch
from torch import nn

from nmt.attention import GeneralScore


def _per_gate(weight: torch.Tensor, gates: int, fn) -> None:
    for block in weight.data.chunk(gates, dim=0):              # (H, in) per gate
        fn(block)


def init_rnn_model(model: nn.Module, steps: list[str] | tuple[str, ...]) -> None:
    """Apply the `steps` (a subset of INIT_STEPS) to every module of an RNN encoder-decoder."""
    steps = set(steps)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.GRU, nn.LSTM)):
                gates = 3 if isinstance(module, nn.GRU) else 4
                for name, p in module.named_parameters():
                    if name.startswith("weight_ih") and "xavier" in steps:
                        _per_gate(p, gates, nn.init.xavier_uniform_)
                    elif name.startswith("weight_hh") and "orthogonal" in steps:
                        _per_gate(p, gates, nn.init.orthogonal_)
                    elif name.startswith("bias") and "zero_bias" in steps:
                        p.zero_()
                        if gates == 4 and name.startswith("bias_ih"):  # gates i, f, g, o
                            p[module.hidden_size:2 * module.hidden_size] = 1.0
            elif isinstance(module, nn.Linear):
                # a tied output layer's weight is the embedding matrix: leave it
                if "xavier" in steps and not _is_tied(model, module):
                    nn.init.xavier_uniform_(module.weight)
                if module.bias is not None and "zero_bias" in steps:
                    module.bias.zero_()
        if "identity_general" in steps:
            for module in model.modules():
                if isinstance(module, GeneralScore) and \
                        module.key_proj.in_features == module.key_proj.out_features:
                    module.key_proj.weight.copy_(torch.eye(module.key_proj.in_features))


def _is_tied(model: nn.Module, linear: nn.Linear) -> bool:
    return any(linear.weight is e.weight for e in model.modules() if isinstance(e, nn.Embedding))
