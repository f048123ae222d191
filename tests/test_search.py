"""Greedy and beam search: properties that must hold for every model family."""
import itertools
import math

import pytest
import torch
from helpers_ckpt import (FAMILIES, TOY_VOCAB, batch_of, sequence_logprob,
                          tiny_model, toy_pairs, train_toy)

from nmt import search
from nmt.config import DecodeConfig
from nmt.seq2seq import Seq2Seq
from nmt.search import (NEG_INF, beam_search, greedy, length_penalty, max_lengths,
                        translate_batch)
from nmt.tokenizer import BOS, EOS, PAD

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCES = [[5, 6, 7, 8, 9, 10, 11], [4, 12], [15, 14, 13, 12, 11, 10, 9, 8, 7, 6], [7], []]


@pytest.fixture(scope="module")
def trained():
    return {f: train_toy(f) for f in ("transformer", "rnn-bahdanau")}


def _maxlen(src_len):
    return max_lengths(src_len, 1.5, 2)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam1_is_greedy(family, alpha):
    model = tiny_model(family)
    src, src_len = batch_of(SOURCES)
    g = greedy(model, src, src_len, _maxlen(src_len))
    b = beam_search(model, src, src_len, 1, alpha, _maxlen(src_len))
    assert [h[0][0] for h in b] == g


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_decodes_like_each_sentence_alone(family):
    model = tiny_model(family, seed=1)
    src, src_len = batch_of(SOURCES)
    ml = _maxlen(src_len)
    g = greedy(model, src, src_len, ml)
    b = beam_search(model, src, src_len, 3, 0.6, ml, nbest=3)
    for i, x in enumerate(SOURCES):
        s1, l1 = batch_of([x])
        assert greedy(model, s1, l1, ml[i:i + 1]) == [g[i]]
        alone = beam_search(model, s1, l1, 3, 0.6, ml[i:i + 1], nbest=3)[0]
        assert [y for y, _ in alone] == [y for y, _ in b[i]]
        assert [s for _, s in alone] == pytest.approx([s for _, s in b[i]], abs=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_max_length_is_respected(family):
    model = tiny_model(family, seed=2)  # untrained: rarely ends on its own
    src, src_len = batch_of(SOURCES)
    ml = torch.tensor([0, 1, 3, 7, 2])
    for y, m in zip(greedy(model, src, src_len, ml), ml.tolist()):
        assert len(y) <= m
    for hyps, m in zip(beam_search(model, src, src_len, 4, 0.6, ml, nbest=4), ml.tolist()):
        assert hyps and all(len(y) <= m for y, _ in hyps)
    assert greedy(model, src, src_len, 0) == [[]] * len(SOURCES)
    # a = 1.5, b = 2 on |x| = 3 (two tokens + EOS): ceil(6.5) = 7
    assert max_lengths(torch.tensor([3, 1]), 1.5, 2).tolist() == [7, 4]
    assert max_lengths(torch.tensor([30]), 1.5, 10, cap=20).tolist() == [20]


@pytest.mark.parametrize("family", FAMILIES)
def test_nbest_sorted_distinct_and_scored_by_the_model(family):
    model = tiny_model(family, seed=3)
    src, src_len = batch_of(SOURCES)
    alpha = 0.6
    out = beam_search(model, src, src_len, 5, alpha, _maxlen(src_len), nbest=5)
    for i, hyps in enumerate(out):
        assert len(hyps) == 5
        scores = [s for _, s in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(y) for y, _ in hyps}) == 5
        assert not any(t in (PAD, BOS, EOS) for y, _ in hyps for t in y)
        # the score is the model's log P(y EOS | x) over the GNMT length penalty
        lp = sequence_logprob(model, src[i:i + 1].expand(5, -1), src_len[i:i + 1].expand(5),
                              [y for y, _ in hyps])
        want = [p / length_penalty(len(y) + 1.0, alpha) for p, (y, _) in zip(lp, hyps)]
        assert scores == pytest.approx(want, abs=1e-4)


def test_wider_beams_never_score_below_greedy(trained):
    pairs = toy_pairs(40, seed=99, lengths=(2, 9))
    src, src_len = batch_of([x for x, _ in pairs])
    ml = _maxlen(src_len)
    for family, model in trained.items():
        g = greedy(model, src, src_len, ml)
        accuracy = sum(y == t for y, (_, t) in zip(g, pairs)) / len(pairs)
        assert accuracy > 0.4, f"{family} did not learn the toy task; the test would be empty"
        g_lp = sequence_logprob(model, src, src_len, g)
        for beam in (2, 5):
            best = [h[0][0] for h in beam_search(model, src, src_len, beam, 0.0, ml)]
            b_lp = sequence_logprob(model, src, src_len, best)
            assert all(b >= a - 1e-4 for a, b in zip(g_lp, b_lp)), (family, beam)


def test_attention_of_the_best_hypothesis(trained):
    src, src_len = batch_of(SOURCES[:4])
    ml = _maxlen(src_len)
    for family, model in trained.items():
        g, g_att = greedy(model, src, src_len, ml, return_attention=True)
        b, b_att = beam_search(model, src, src_len, 1, 0.0, ml, return_attention=True)
        for i, (y, a) in enumerate(zip(g, g_att)):
            assert a.shape == (len(y) + 1, src_len[i])
            assert a.sum(-1) == pytest.approx(torch.ones(len(y) + 1), abs=1e-4)
            assert torch.allclose(a, b_att[i], atol=1e-5)
        # beam 4: the best hypothesis's attention is what teacher forcing on it gives
        hyps, att = beam_search(model, src, src_len, 4, 0.6, ml, return_attention=True)
        for i, h in enumerate(hyps):
            y = h[0][0]
            s1, l1 = batch_of([SOURCES[i]])
            with torch.inference_mode():
                _, tf = model(s1, l1, torch.tensor([[BOS] + y]))  # (1, T, S)
            assert torch.allclose(att[i], tf[0], atol=1e-4)
    none = tiny_model("rnn-none")
    _, att = greedy(none, src, src_len, ml, return_attention=True)
    assert att == [None] * 4


class MarkovModel(Seq2Seq):
    """A protocol-only model with a known distribution: P(y_t | y_<t, x) is a table row chosen
    by the previous token and the sentence's first source token. Small enough to enumerate."""

    def __init__(self, vocab: int = 7, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        table = torch.randn(vocab, vocab, vocab, generator=g) * 2  # (first src, prev, next)
        table[..., [PAD, BOS]] = -1e9
        self.table = table.log_softmax(-1)

    def encode(self, src, src_len):
        return {"first": src[:, 0]}

    def start(self, memory, attention=True):
        return {"first": memory["first"]}

    def step(self, prev, state):
        return self.table[state["first"], prev], state, None


def _exhaustive(model, first: int, L: int, vocab: int) -> list[tuple[tuple, float]]:
    words = [w for w in range(vocab) if w not in (PAD, BOS, EOS)]
    out = []
    for n in range(L + 1):
        for y in itertools.product(words, repeat=n):
            seq, lp, prev = list(y) + [EOS], 0.0, BOS
            for t in seq:
                lp += model.table[first, prev, t].item()
                prev = t
            out.append((y, lp))
    return sorted(out, key=lambda h: -h[1])


def test_a_beam_as_wide_as_the_search_space_is_exact():
    """With alpha = 0 and no pruning, the n-best list is the true n-best list; greedy is not."""
    model, V, L = MarkovModel(), 7, 3
    src, src_len = batch_of([[4], [5], [6]])
    everything = sum(4 ** n for n in range(L + 1))  # 4 output words (UNK included)
    hyps = beam_search(model, src, src_len, everything, 0.0, L, nbest=10)
    for i, first in enumerate([4, 5, 6]):
        exact = _exhaustive(model, first, L, V)[:10]
        assert [tuple(y) for y, _ in hyps[i]] == [y for y, _ in exact]
        assert [s for _, s in hyps[i]] == pytest.approx([s for _, s in exact], abs=1e-5)


def test_the_first_beam_step_runs_one_row_per_sentence():
    """Before the first step a sentence's K hypotheses would all be BOS: the model computes
    it once per sentence, and the state grows to K rows after it."""
    model, rows = MarkovModel(), []
    step = model.step
    model.step = lambda prev, state: (rows.append(prev.numel()), step(prev, state))[1]
    src, src_len = batch_of([[4], [5], [6]])
    beam_search(model, src, src_len, 4, 0.0, 3)
    assert rows[0] == 3 and rows[1] == 3 * 4


def test_translate_batch_follows_the_decode_config(trained):
    model = trained["transformer"]
    src, src_len = batch_of(SOURCES)
    greedy_cfg = DecodeConfig(beam=1, alpha=0.6, max_len_a=1.5, max_len_b=2)
    out = translate_batch(model, src, src_len, greedy_cfg)
    assert [h[0][0] for h in out] == greedy(model, src, src_len, _maxlen(src_len))
    lp = sequence_logprob(model, src, src_len, [h[0][0] for h in out])
    assert [h[0][1] for h in out] == pytest.approx(
        [p / length_penalty(len(h[0][0]) + 1.0, 0.6) for p, h in zip(lp, out)], abs=1e-4)
    nb = translate_batch(model, src, src_len, DecodeConfig(beam=4, nbest=3, max_len_b=2))
    assert [len(h) for h in nb] == [3] * len(SOURCES)
    capped = translate_batch(model, src, src_len, DecodeConfig(beam=2, max_len_b=50), cap=2)
    assert all(len(h[0][0]) <= 2 for h in capped)
    assert math.isfinite(nb[0][0][1])



@pytest.mark.parametrize("V", [1408, 2000, 8003])
@pytest.mark.parametrize("k", [1, 2, 10])
def test_blockwise_topk_finds_the_same_values_as_topk(V, k):
    """The two-stage top-k of the CPU returns torch.topk's values, sorted, with indices that
    hold them: also with ties, -inf entries, a row that only may end, and a vocabulary that is
    not a whole number of blocks (its tail in the last columns)."""
    g = torch.Generator().manual_seed(V + k)
    x = torch.randn(7, V, generator=g).log_softmax(-1)
    x[1] = x[1].round(decimals=1)                    # many ties
    x[2, : V // 2] = NEG_INF                         # half the vocabulary ruled out
    x[3] = NEG_INF                                   # forced to end: one finite entry
    x[3, EOS] = -2.0
    x[4, -3:] = 5.0                                  # the best entries in the tail
    assert V // search.TOPK_BLOCK > 2 * k            # the blockwise path runs
    values, index = search._topk(x, k)
    assert torch.equal(values, x.topk(k, dim=1).values)
    assert torch.equal(x.gather(1, index), values)
    assert all(len(set(row)) == k for row in index.tolist())


@pytest.mark.parametrize("family", FAMILIES)
def test_search_is_the_same_with_blockwise_topk(family, monkeypatch):
    """Greedy and beam search with top-k by blocks (blocks of 2 here, so the toy vocabulary
    has enough of them) decode what they decode with torch.topk alone."""
    model = tiny_model(family)
    src, src_len = batch_of(SOURCES)

    def decode():
        return (greedy(model, src, src_len, _maxlen(src_len)),
                beam_search(model, src, src_len, 3, 0.6, _maxlen(src_len), nbest=3))
    monkeypatch.setattr(search, "TOPK_BLOCK", 10 ** 6)  # whole rows: torch.topk
    plain = decode()
    monkeypatch.setattr(search, "TOPK_BLOCK", 2)
    assert TOY_VOCAB // search.TOPK_BLOCK > 2 * 3
    blocks = decode()
    assert blocks[0] == plain[0]
    assert blocks[1] == plain[1]  # the same hypotheses, the same scores
