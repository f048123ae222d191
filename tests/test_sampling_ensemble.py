"""Sampling and ensembles: properties that must hold for every model family, through the same
search code (the ensemble is one more Seq2Seq)."""
import math

import pytest
import torch
from helpers_ckpt import FAMILIES, batch_of, sequence_logprob, tiny_model, train_toy

from nmt.config import DecodeConfig
from nmt.ensemble import Ensemble
from nmt.search import (beam_search, decoding_generator, greedy, length_penalty, max_lengths,
                        sampling_log_probs, translate_batch)
from nmt.tokenizer import BOS, EOS, PAD

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCES = [[5, 6, 7, 8, 9, 10, 11], [4, 12], [15, 14, 13, 12, 11, 10, 9, 8, 7, 6], [7], []]


def _ml(src_len):
    return max_lengths(src_len, 1.5, 2)


def _sampled(model, dcfg, seed=None, sources=SOURCES):
    src, src_len = batch_of(sources)
    gen = decoding_generator(dcfg, "cpu")
    if seed is not None:
        gen.manual_seed(seed)
    return translate_batch(model, src, src_len, dcfg, generator=gen)


# ----------------------------------------------------------------------------- sampling

def test_sampling_distribution_top_k_and_nucleus():
    g = torch.Generator().manual_seed(0)
    logp = (torch.randn(50, 30, generator=g) * 2).log_softmax(-1)  # (n, V)
    assert torch.allclose(sampling_log_probs(logp), logp, atol=1e-5)  # T=1, no cut: the model
    for k in (1, 3, 10):
        q = sampling_log_probs(logp, top_k=k).exp()
        assert ((q > 0).sum(-1) == k).all()
        assert torch.equal(q.argmax(-1), logp.argmax(-1))
        assert q.sum(-1) == pytest.approx(torch.ones(50), abs=1e-5)
    for p in (0.1, 0.5, 0.9):
        q = sampling_log_probs(logp, top_p=p).exp()
        probs = logp.exp()
        kept = q > 0
        # the support is the likeliest tokens ...
        worst_kept = probs.masked_fill(~kept, 2).min(-1).values
        best_dropped = probs.masked_fill(kept, -1).max(-1).values
        assert (worst_kept >= best_dropped).all()
        # ... that reach mass p, and none could be spared
        mass = probs.masked_fill(~kept, 0).sum(-1)
        assert (mass >= p - 1e-6).all() and (mass - worst_kept < p).all()
    # temperature: colder is sharper (the top token gains), hotter is flatter
    top = logp.argmax(-1, keepdim=True)
    cold, hot = (sampling_log_probs(logp, temperature=t).gather(1, top) for t in (0.5, 2.0))
    assert (cold >= logp.gather(1, top) - 1e-6).all() and (hot <= logp.gather(1, top) + 1e-6).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_sampling_is_seeded_and_top_k_1_is_greedy(family):
    model = tiny_model(family, seed=4)
    src, src_len = batch_of(SOURCES)
    cfg = DecodeConfig(beam=1, sample=True, seed=7, max_len_a=1.5, max_len_b=2)
    a, b = _sampled(model, cfg), _sampled(model, cfg)
    assert a == b  # same seed, same input: same translations
    others = [_sampled(model, cfg, seed=s) for s in range(1, 6)]
    assert any(o != a for o in others)  # an untrained model's samples vary with the seed
    one = DecodeConfig(beam=1, sample=True, top_k=1, max_len_a=1.5, max_len_b=2)
    assert [h[0][0] for h in _sampled(model, one)] == greedy(model, src, src_len, _ml(src_len))
    # a sample's score is the model's own log P(y|x) / lp(y), and it respects the length limit
    hot = DecodeConfig(beam=1, sample=True, temperature=1.5, alpha=0.6, max_len_a=1.5,
                       max_len_b=2)
    out = _sampled(model, hot)
    ys = [h[0][0] for h in out]
    lp = sequence_logprob(model, src, src_len, ys)
    assert [h[0][1] for h in out] == pytest.approx(
        [p / length_penalty(len(y) + 1.0, 0.6) for p, y in zip(lp, ys)], abs=1e-4)
    assert all(len(y) <= m for y, m in zip(ys, _ml(src_len).tolist()))
    assert not any(t in (PAD, BOS, EOS) for y in ys for t in y)


def test_top_k_restricts_the_tokens_drawn():
    model = tiny_model("transformer", seed=5)
    src, src_len = batch_of(SOURCES)
    with torch.inference_mode():
        first = model.step(torch.full((len(SOURCES),), BOS), model.start(
            model.encode(src, src_len)))[0]  # (B, V) first-step log-probs
    first = first.index_fill(1, torch.tensor([PAD, BOS]), -math.inf)  # never outputs
    top2 = first.topk(2, -1).indices
    cfg = DecodeConfig(beam=1, sample=True, top_k=2, max_len_a=1.5, max_len_b=2)
    for seed in range(20):
        for i, h in enumerate(_sampled(model, cfg, seed=seed)):
            y = h[0][0]
            assert (y[0] if y else EOS) in top2[i].tolist()


# ----------------------------------------------------------------------------- ensembles

def _mixed():
    return Ensemble([tiny_model("transformer", seed=1), tiny_model("rnn-bahdanau", seed=2),
                     tiny_model("rnn-luong-general", seed=3)]).eval()


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_ensemble_beam1_is_greedy_and_batches_like_single_sentences(alpha):
    model = _mixed()
    src, src_len = batch_of(SOURCES)
    ml = _ml(src_len)
    g = greedy(model, src, src_len, ml)
    assert [h[0][0] for h in beam_search(model, src, src_len, 1, alpha, ml)] == g
    b = beam_search(model, src, src_len, 3, alpha, ml, nbest=3)
    for i, x in enumerate(SOURCES):
        s1, l1 = batch_of([x])
        assert greedy(model, s1, l1, ml[i:i + 1]) == [g[i]]
        assert [y for y, _ in beam_search(model, s1, l1, 3, alpha, ml[i:i + 1], nbest=3)[0]] \
            == [y for y, _ in b[i]]


def test_ensemble_step_is_the_renormalised_mean_of_member_log_probs():
    model = _mixed()
    src, src_len = batch_of(SOURCES)
    ml = _ml(src_len)
    hyps = beam_search(model, src, src_len, 4, 0.0, ml, nbest=2)
    ys = [h[0][0] for h in hyps]
    # teacher forcing through the members, combined by the formula, scores what search found
    b_tgt = [[BOS] + y for y in ys]
    width = max(map(len, b_tgt))
    tgt_in = torch.tensor([t + [PAD] * (width - len(t)) for t in b_tgt])
    with torch.inference_mode():
        member = torch.stack([m(src, src_len, tgt_in)[0].log_softmax(-1)
                              for m in model.members])  # (M, B, T, V)
    combined = member.mean(0).log_softmax(-1)
    for i, y in enumerate(ys):
        lp = sum(combined[i, t, tok].item() for t, tok in enumerate(y + [EOS]))
        assert hyps[i][0][1] == pytest.approx(lp, abs=1e-4)
    assert sequence_logprob(model, src, src_len, ys) == pytest.approx(
        [h[0][1] for h in hyps], abs=1e-4)


def test_an_ensemble_of_one_or_of_copies_decodes_like_the_model():
    trained = train_toy("transformer", steps=120)
    src, src_len = batch_of(SOURCES)
    ml = _ml(src_len)
    want = beam_search(trained, src, src_len, 3, 0.6, ml, nbest=2)
    for ens in (Ensemble([trained]), Ensemble([trained, trained, trained])):
        got = beam_search(ens.eval(), src, src_len, 3, 0.6, ml, nbest=2)
        assert [[y for y, _ in h] for h in got] == [[y for y, _ in h] for h in want]
        assert [s for h in got for _, s in h] == pytest.approx(
            [s for h in want for _, s in h], abs=1e-4)


def test_ensemble_attention_and_position_limit():
    model = _mixed()
    src, src_len = batch_of(SOURCES[:3])
    out, att = greedy(model, src, src_len, _ml(src_len), return_attention=True)
    for i, (y, a) in enumerate(zip(out, att)):
        assert a.shape == (len(y) + 1, src_len[i])
        assert a.sum(-1) == pytest.approx(torch.ones(len(y) + 1), abs=1e-4)
    assert model.max_positions == model.members[0].max_positions
    none = Ensemble([tiny_model("rnn-none")])
    assert none.max_positions is None
    assert greedy(none, src, src_len, 5, return_attention=True)[1] == [None] * 3
    assert math.isfinite(beam_search(none, src, src_len, 2, 0.0, 5)[0][0][1])
