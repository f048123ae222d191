"""Attention for the RNN decoders: score functions, and one module that turns scores into weights.

A score module maps a query s (the decoder state) and the keys h_1..h_S (encoder outputs, perhaps
projected) to one number per source position. Everything else - masking padding, the softmax
(Eq. 6 in Bahdanau et al. 2015, Eq. 7 in Luong et al. 2015) and the context vector
c = sum_j a_j h_j - is written once, in `Attention`.

Shapes: query (B, T, Dq) holds T decoder positions at once (T = 1 inside a step loop, the whole
target for Luong models without input feeding); keys (B, S, Dk); scores and weights (B, T, S).
Every score module has `proj_keys(memory)`: the part that depends only on the source is computed
once per sentence, not once per decoder step. Every one is built as Score(query_dim, key_dim):
an attention kind's entry in registry.py names its score class, and decoders.attention_for
builds it so.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def additive(query: Tensor, keys: Tensor) -> Tensor:
    """tanh(q + k) of every query (B, T, A) with every key (B, S, A): (B, T, S, A), the largest
    tensor of an additive-attention step, built in place.

    Without gradients on the CPU (a search) as tanh(a) = 2 sigmoid(2a) - 1: torch's CPU tanh
    takes several times the time of its sigmoid, and was a visible share of a Bahdanau beam
    step (bench/RESULTS.md, "Decoding"). Training keeps tanh_, whose backward reads its
    output; the two differ by float rounding (~1e-7 in float32)."""
    a = query.unsqueeze(2) + keys.unsqueeze(1)                  # (B, T, S, A)
    if a.device.type == "cpu" and not torch.is_grad_enabled():
        return a.mul_(2).sigmoid_().mul_(2).sub_(1)
    return a.tanh_()


class BahdanauScore(nn.Module):
    """Additive: score(s, h_j) = v^T tanh(W2 s + W1 h_j).

    Bahdanau et al. 2015, Appendix A.1.2 (e_ij = v_a^T tanh(W_a s_{i-1} + U_a h_j)).
    W1 h_j is the expensive part and does not depend on the decoder, so `proj_keys` does it once.
    `hidden` is the width of tanh's layer (0: the query's, the decoder's size, as every model
    here), so it is built like every score module, from (query_dim, key_dim).
    """

    def __init__(self, query_dim: int, key_dim: int, hidden: int = 0):
        super().__init__()
        hidden = hidden or query_dim
        self.w1 = nn.Linear(key_dim, hidden, bias=False)      # U_a, on the keys
        self.w2 = nn.Linear(query_dim, hidden, bias=False)    # W_a, on the query
        self.v = nn.Linear(hidden, 1, bias=False)

    def proj_keys(self, memory: Tensor) -> Tensor:
        return self.w1(memory)                                  # (B, S, A)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        return self.v(additive(self.w2(query), keys)).squeeze(-1)  # (B, T, S)


class DotScore(nn.Module):
    """Dot: score(s, h) = s^T h. Luong et al. 2015, Eq. 8 (dot).

    s and h must live in the same space: the keys are projected to the query size only if the
    sizes differ (our encoders output model.hidden_size features, the decoder's size, so with
    our configs this is the identity and dot attention stays parameter-free).
    """

    def __init__(self, query_dim: int, key_dim: int):
        super().__init__()
        self.key_proj = nn.Identity() if key_dim == query_dim else \
            nn.Linear(key_dim, query_dim, bias=False)

    def proj_keys(self, memory: Tensor) -> Tensor:
        return self.key_proj(memory)                            # (B, S, Dq)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        return query @ keys.transpose(1, 2)                     # (B, T, S)


class GeneralScore(DotScore):
    """General (bilinear): score(s, h) = s^T W h. Luong et al. 2015, Eq. 8 (general).
    W h is precomputed by `proj_keys`, leaving a dot product per step."""

    def __init__(self, query_dim: int, key_dim: int):
        super().__init__(query_dim, key_dim)
        self.key_proj = nn.Linear(key_dim, query_dim, bias=False)  # W, always present


class ConcatScore(nn.Module):
    """Concat: score(s, h) = v^T tanh(W [s; h]). Luong et al. 2015, Eq. 8 (concat).

    W [s; h] = W_s s + W_h h, so one weight matrix is split in two column blocks: W_h h goes
    into `proj_keys` (once per sentence). It is Bahdanau's function with Luong's query h_t.
    `hidden`: as BahdanauScore's (0: the query's width).
    """

    def __init__(self, query_dim: int, key_dim: int, hidden: int = 0):
        super().__init__()
        hidden = hidden or query_dim
        self.query_dim = query_dim
        self.w = nn.Linear(query_dim + key_dim, hidden, bias=False)  # W over [s; h]
        self.v = nn.Linear(hidden, 1, bias=False)

    def proj_keys(self, memory: Tensor) -> Tensor:
        return F.linear(memory, self.w.weight[:, self.query_dim:])  # (B, S, A) = W_h h

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        q = F.linear(query, self.w.weight[:, :self.query_dim])  # (B, T, A) = W_s s
        return self.v(additive(q, keys)).squeeze(-1)           # (B, T, S)


class ScaledDotScore(DotScore):
    """Scaled dot: score(s, h) = s^T h / sqrt(d). Vaswani et al. 2017, Eq. 1. Dividing by sqrt(d)
    keeps the scores' variance near 1 for unit-variance inputs, so the softmax is not saturated."""

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        return query @ keys.transpose(1, 2) / math.sqrt(query.size(-1))  # (B, T, S)


class CosineScore(DotScore):
    """Cosine: score(s, h) = g * cos(s, h), with a learned scalar sharpness g (init 10).

    Content addressing of the Neural Turing Machine (Graves et al. 2014, Eq. 5-6), where a key
    strength beta multiplies the cosine. cos is in [-1, 1], so with a fixed g = 1 the best source
    word could get at most e^2 ~ 7x the weight of the worst: attention could never be sharp. The
    NTM emits beta per step; one learned g is the simplest version that lets training choose how
    peaked the weights get (10 starts about as sharp as a dot product on typical states).
    """

    def __init__(self, query_dim: int, key_dim: int):
        super().__init__(query_dim, key_dim)
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        cos = F.normalize(query, dim=-1) @ F.normalize(keys, dim=-1).transpose(1, 2)
        return self.scale * cos                                 # (B, T, S)


class LocalPosition(nn.Module):
    """Luong local-p aligned position: p_t = S_len * sigmoid(v_p^T tanh(W_p h_t)) (Eq. 9).

    Source positions are 0-based here, so S_len is (source length - 1): p_t then ranges over the
    real words of *this* sentence (not the padded length), and the window always holds a word.
    """

    def __init__(self, query_dim: int, window: int):
        super().__init__()
        self.w_p = nn.Linear(query_dim, query_dim, bias=False)
        self.v_p = nn.Linear(query_dim, 1, bias=False)
        self.window = window

    def forward(self, query: Tensor, lengths: Tensor) -> Tensor:
        # float32: bf16 (autocast) cannot even count to 100 exactly
        last = (lengths - 1).float()[:, None, None]             # (B, 1, 1)
        return last * torch.sigmoid(self.v_p(torch.tanh(self.w_p(query)))).float()  # (B, T, 1)


class Attention(nn.Module):
    """Masked softmax over scores and the context vector, shared by every score function.

    Padding gets exactly zero weight: its scores are set to -inf before the softmax. A row with
    nothing to attend to (an all-padding source) would give 0/0 = NaN, so such rows get zero
    weights and a zero context instead (cannot happen with our data: a source holds >= EOS).

    With `local` (Luong local-p, Eq. 9-10) only positions s in [p_t - D, p_t + D] are attended,
    and the weights are multiplied by exp(-(s - p_t)^2 / (2 sigma^2)), sigma = D / 2. In the paper
    the rows then no longer sum to 1; we renormalise them so that every attention type yields a
    distribution (and c_t is a weighted *mean*, of the same scale as the encoder outputs).
    Renormalised, align * gaussian / sum equals softmax(score - (s - p_t)^2 / (2 sigma^2)) over
    the window, which is how it is computed: one stable softmax, same code path as the others.
    """

    def __init__(self, score: nn.Module, local: LocalPosition | None = None):
        super().__init__()
        self.score = score
        self.local = local

    def proj_keys(self, memory: Tensor) -> Tensor:
        return self.score.proj_keys(memory)

    def forward(self, query: Tensor, keys: Tensor, values: Tensor,
                mask: Tensor) -> tuple[Tensor, Tensor]:
        """query (B, T, Dq), keys (B, S, Dk), values (B, S, Dv), mask (B, S) True on real tokens.
        Returns context (B, T, Dv) and weights (B, T, S).

        Keys, values and mask may also have N = B / G rows for one query each (T = 1): G
        consecutive query rows then share a source row (a sentence's beam hypotheses) and are
        its G positions, so its keys and values are read once, not G times."""
        B, G = query.size(0), query.size(0) // keys.size(0)
        if G > 1:
            context, weights = self(query.reshape(-1, G, query.size(-1)), keys, values, mask)
            return context.reshape(B, 1, -1), weights.reshape(B, 1, -1)  # (B, 1, Dv), (B, 1, S)
        scores = self.score(query, keys)                        # (B, T, S)
        if self.local is not None:
            p = self.local(query, mask.sum(-1))                 # (B, T, 1) float32
            s = torch.arange(scores.size(-1), device=scores.device, dtype=torch.float32)  # (S,)
            sigma = self.local.window / 2
            scores = scores - (s - p) ** 2 / (2 * sigma ** 2)   # Eq. 10, in log space
            mask = mask.unsqueeze(1) & ((s - p).abs() <= self.local.window)  # (B, T, S)
        else:
            mask = mask.unsqueeze(1)                            # (B, 1, S)
        scores = scores.masked_fill(~mask, float("-inf"))
        empty = ~mask.any(-1, keepdim=True)                     # (B, T|1, 1)
        weights = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
        return weights @ values, weights                        # (B, T, Dv), (B, T, S)
