"""Attention: each score equals its formula; masking, softmax and local-p behave as documented;
every model's attention is a distribution over real source tokens, in forward and in step."""
import math

import pytest
import torch

from nmt.attention import (Attention, BahdanauScore, ConcatScore, CosineScore, DotScore,
                           GeneralScore, LocalPosition, ScaledDotScore, additive)
from nmt.config import ATTENTIONS, ModelConfig
from nmt.model import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

torch.manual_seed(0)
D, S = 4, 3
s = torch.randn(D)                   # one decoder state
h = torch.randn(S, D)                # three encoder outputs


def scores(module, query=s, keys=h):
    """Run a score module on one query and S keys; (S,) scores."""
    with torch.no_grad():
        return module(query[None, None], module.proj_keys(keys[None]))[0, 0]


def test_bahdanau_score_is_v_tanh_w1h_plus_w2s():
    m = BahdanauScore(D, D, hidden=5)
    W1, W2, v = m.w1.weight, m.w2.weight, m.v.weight[0]
    want = torch.stack([v @ torch.tanh(W1 @ h[j] + W2 @ s) for j in range(S)])
    assert torch.allclose(scores(m), want, atol=1e-6)


def test_additive_scores_are_tanh_in_a_search_and_in_training():
    """A search (no gradients, CPU) computes tanh(q + k) as 2 sigmoid(2(q + k)) - 1; training
    keeps tanh_: the same values either way, and training gets tanh's gradient."""
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 3, 8, generator=g) * 2, torch.randn(2, 5, 8, generator=g) * 2
    want = torch.tanh(q.unsqueeze(2) + k.unsqueeze(1))               # (B, T, S, A)
    with torch.no_grad():
        assert torch.allclose(additive(q, k), want, atol=1e-6, rtol=0)
    q.requires_grad_()
    got = additive(q, k)
    got.sum().backward()
    assert torch.allclose(got, want, atol=1e-7, rtol=0)
    assert torch.allclose(q.grad, (1 - want ** 2).sum(2), atol=1e-6)


def test_dot_score_is_s_dot_h():
    want = torch.stack([s @ h[j] for j in range(S)])
    assert torch.allclose(scores(DotScore(D, D)), want, atol=1e-6)


def test_general_score_is_s_W_h():
    m = GeneralScore(D, D)
    W = m.key_proj.weight
    want = torch.stack([s @ W @ h[j] for j in range(S)])
    assert torch.allclose(scores(m), want, atol=1e-6)


def test_concat_score_is_v_tanh_W_concat():
    m = ConcatScore(D, D, hidden=5)
    W, v = m.w.weight, m.v.weight[0]
    want = torch.stack([v @ torch.tanh(W @ torch.cat([s, h[j]])) for j in range(S)])
    assert torch.allclose(scores(m), want, atol=1e-6)


def test_scaled_dot_score_divides_by_sqrt_d():
    want = torch.stack([s @ h[j] / math.sqrt(D) for j in range(S)])
    assert torch.allclose(scores(ScaledDotScore(D, D)), want, atol=1e-6)


def test_cosine_score_is_scale_times_cosine():
    m = CosineScore(D, D)
    want = torch.stack([m.scale * (s @ h[j]) / (s.norm() * h[j].norm()) for j in range(S)])
    assert torch.allclose(scores(m), want, atol=1e-6)
    assert m.scale.requires_grad                    # learned sharpness


def test_dot_scores_project_keys_only_when_sizes_differ():
    assert not list(DotScore(D, D).parameters())    # same size: parameter-free, as in Luong
    m = DotScore(D, 6)                              # 6-dim encoder outputs, 4-dim decoder
    k = torch.randn(S, 6)
    want = torch.stack([s @ (m.key_proj.weight @ k[j]) for j in range(S)])
    assert torch.allclose(scores(m, keys=k), want, atol=1e-6)


def test_masked_softmax_zero_on_padding_and_context_is_weighted_mean():
    att = Attention(DotScore(D, D))
    q, keys = torch.randn(2, 3, D), torch.randn(2, 5, D)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    ctx, w = att(q, keys, keys, mask)
    assert torch.allclose(w.sum(-1), torch.ones(2, 3))
    assert (w[1, :, 2:] == 0).all()
    want = torch.softmax(q[1] @ keys[1, :2].T, -1)  # the same, computed on the real part only
    assert torch.allclose(w[1, :, :2], want, atol=1e-6)
    assert torch.allclose(ctx, w @ keys, atol=1e-6)


def test_all_padding_row_gives_zero_weights_and_finite_gradients():
    att = Attention(DotScore(D, D))
    q, keys = torch.randn(2, 1, D, requires_grad=True), torch.randn(2, 3, D)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    ctx, w = att(q, keys, keys, mask)
    assert (w[1] == 0).all() and (ctx[1] == 0).all()
    ctx.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_local_p_is_renormalised_windowed_gaussian_over_real_tokens():
    torch.manual_seed(1)
    D_win, S_pad = 2, 12
    att = Attention(GeneralScore(D, D), LocalPosition(D, D_win))
    q, keys = torch.randn(2, 4, D), torch.randn(2, S_pad, D)
    lengths = torch.tensor([12, 7])
    mask = torch.arange(S_pad) < lengths[:, None]
    with torch.no_grad():
        _, w = att(q, att.proj_keys(keys), keys, mask)
        p = att.local(q, lengths)                                   # (B, T, 1)
        raw = q @ att.proj_keys(keys).transpose(1, 2)               # general scores
    assert ((p >= 0) & (p <= (lengths - 1)[:, None, None])).all()   # inside the real sentence
    pos = torch.arange(S_pad).float()
    window = ((pos - p).abs() <= D_win) & mask[:, None]
    # the paper's recipe (Eq. 10): softmax inside the window, times the Gaussian; then our
    # renormalisation
    align = torch.softmax(raw.masked_fill(~window, float("-inf")), -1)
    want = align * torch.exp(-(pos - p) ** 2 / (2 * (D_win / 2) ** 2))
    want = want / want.sum(-1, keepdim=True)
    assert torch.allclose(w, want, atol=1e-6)
    assert (w[~window.expand_as(w)] == 0).all()                     # outside window / padding
    assert torch.allclose(w.sum(-1), torch.ones(2, 4), atol=1e-6)


def tiny(**kw) -> ModelConfig:
    base = dict(emb_dim=8, hidden_size=12, d_model=16, heads=2, ff_dim=32, enc_layers=2,
                dec_layers=2, dropout=0.0, local_window=2)
    return ModelConfig(**{**base, **kw})


MODELS = [tiny(arch="rnn", attention=a) for a in ATTENTIONS if a != "none"] + \
    [tiny(arch="rnn", attention="luong-local", input_feeding=False, rnn_type="lstm"),
     tiny(arch="transformer")]


@pytest.mark.parametrize("cfg", MODELS, ids=lambda c: f"{c.arch}-{c.attention}-{c.rnn_type}")
def test_model_attention_rows_are_distributions_over_real_tokens(cfg):
    torch.manual_seed(0)
    V, src_len = 20, torch.tensor([9, 3, 1])                       # 1 = an empty source + EOS
    src = torch.randint(4, V, (3, 9))
    tgt = torch.randint(4, V, (3, 5))
    model = build_model(cfg, V, V).eval()
    pad = torch.arange(9) >= src_len[:, None]                     # (B, S)
    with torch.no_grad():
        _, attn = model(src, src_len, tgt)                        # (B, T, S)
        state, steps = model.start(model.encode(src, src_len)), []
        for t in range(tgt.size(1)):
            _, state, a = model.step(tgt[:, t], state)
            steps.append(a)
    for a in (attn, torch.stack(steps, 1)):
        assert torch.allclose(a.sum(-1), torch.ones(3, 5), atol=1e-5)
        assert (a.masked_select(pad[:, None]) == 0).all()         # exactly zero on padding
        assert (a >= 0).all()


def test_no_attention_model_returns_none():
    model = build_model(tiny(arch="rnn", attention="none"), 20, 20).eval()
    src, src_len = torch.randint(4, 20, (2, 4)), torch.tensor([4, 2])
    assert model(src, src_len, torch.randint(4, 20, (2, 3)))[1] is None
    state = model.start(model.encode(src, src_len))
    assert model.step(torch.full((2,), 2), state)[2] is None
