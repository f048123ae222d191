"""Models: the protocol's properties (padding invariance, causality, incremental decoding equals
teacher forcing, reorder), the fast/slow attention paths, learnability and sizes."""
import math

import pytest
import torch
import torch.nn.functional as F

from nmt.config import ATTENTIONS, ModelConfig
from nmt.model import build_model
from nmt.seq2seq import count_parameters
from nmt.transformer import MultiHeadAttention

pytestmark = pytest.mark.usefixtures("one_thread")

V = 20


def tiny(**kw) -> ModelConfig:
    base = dict(emb_dim=8, hidden_size=12, d_model=16, heads=2, ff_dim=32, enc_layers=2,
                dec_layers=2, dropout=0.0, local_window=2)
    return ModelConfig(**{**base, **kw})


RNNS = [tiny(arch="rnn", attention=a, rnn_type=r) for a in ATTENTIONS for r in ("gru", "lstm")]
VARIANTS = RNNS + [
    tiny(arch="rnn", attention=a, input_feeding=False)
    for a in ATTENTIONS if a not in ("none", "bahdanau")] + [
    tiny(arch="rnn", attention="bahdanau", bidirectional=False, tie_embeddings=False),
    tiny(arch="transformer", pre_norm=True),
    tiny(arch="transformer", pre_norm=False),
    tiny(arch="transformer", learned_pos=True, tie_embeddings=False)]


def name(c: ModelConfig) -> str:
    if c.arch == "transformer":
        return f"transformer-{'pre' if c.pre_norm else 'post'}{'-learned' * c.learned_pos}"
    return f"{c.attention}-{c.rnn_type}{'' if c.input_feeding else '-nofeed'}" \
           f"{'' if c.bidirectional else '-uni'}"


def batch(seed: int = 0):
    """3 sentences of different lengths, PAD(0)-padded, ending in EOS(3) as collate makes them."""
    g = torch.Generator().manual_seed(seed)
    src_len, tgt_len = torch.tensor([6, 4, 1]), torch.tensor([5, 3, 4])
    src, tgt = torch.randint(4, V, (3, 6), generator=g), torch.randint(4, V, (3, 5), generator=g)
    src = src.masked_fill(torch.arange(6) >= src_len[:, None], 0)
    src[torch.arange(3), src_len - 1] = 3
    tgt[:, 0] = 2                                                   # BOS
    tgt = tgt.masked_fill(torch.arange(5) >= tgt_len[:, None], 0)
    return src, src_len, tgt, tgt_len


def model_for(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg, V, V).eval()


@pytest.mark.parametrize("cfg", VARIANTS, ids=name)
def test_incremental_decoding_with_reorder_equals_forward(cfg):
    model = model_for(cfg)
    src, src_len, tgt, _ = batch()
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        want = model(src, src_len, tgt)[0].log_softmax(-1)          # (B, T, V)
        state = model.start(model.encode(src, src_len))
        for t in range(tgt.size(1)):
            if t == 2:                                              # shuffle and restore rows
                state = model.reorder(model.reorder(state, perm), torch.argsort(perm))
            if t == 3:
                state = model.reorder(state, torch.arange(3))
            log_probs, state, _ = model.step(tgt[:, t], state)
            assert log_probs.dtype == torch.float32 and log_probs.shape == (3, V)
            assert torch.allclose(log_probs, want[:, t], atol=1e-5), f"step {t}"


@pytest.mark.parametrize("cfg", VARIANTS, ids=name)
def test_reorder_permutes_and_expands_the_batch(cfg):
    model = model_for(cfg)
    src, src_len, tgt, _ = batch()
    index = torch.tensor([2, 2, 0, 1])                              # beam-style: repeat a row
    with torch.no_grad():
        state = model.start(model.encode(src, src_len))
        state, _ = model.step(tgt[:, 0], state)[1], None
        base, _, _ = model.step(tgt[:, 1], state)
        moved, _, _ = model.step(tgt[index, 1], model.reorder(state, index))
    assert torch.allclose(moved, base[index], atol=1e-6)


@pytest.mark.parametrize("attention", [True, False], ids=["weights", "fused"])
@pytest.mark.parametrize("cfg", VARIANTS, ids=name)
def test_hypotheses_sharing_one_source_row_per_sentence_step_the_same(cfg, attention):
    """Beam search names the sentences behind the rows (`sentences`): a model that then keeps
    one source-side row per sentence (grouped_source) steps exactly as with a row each."""
    model = model_for(cfg)
    src, src_len, tgt, _ = batch()
    beams = torch.arange(3).repeat_interleave(2)                    # rows 0,0,1,1,2,2
    go, rows = torch.tensor([0, 2]), torch.tensor([1, 0, 5, 4])     # sentence 1 leaves

    def decode(named: bool):
        with torch.no_grad():
            state = model.start(model.encode(src, src_len), attention=attention)
            state = model.step(tgt[:, 0], state)[1]
            state = model.reorder(state, beams, sentences=torch.arange(3) if named else None)
            a = model.step(tgt[beams, 1], state)
            state = model.reorder(a[1], rows, sentences=go if named else None)
            b = model.step(tgt[beams[rows], 2], state)
        return a, b

    (a, b), (a0, b0) = decode(True), decode(False)
    for x, y in [(a[0], a0[0]), (b[0], b0[0]), (a[2], a0[2]), (b[2], b0[2])]:
        assert (x is None) == (y is None) and (x is None or torch.allclose(x, y, atol=1e-6))

    def n_rows(x):                                                  # of a tensor, or nested
        return x.size(0) if isinstance(x, torch.Tensor) else n_rows(x[0])

    assert model.grouped_source                                     # every model here
    for key in set(model.source_state) & set(a[1]):                 # one row per sentence
        assert (n_rows(a[1][key]), n_rows(b[1][key]), n_rows(a0[1][key])) == (3, 2, 6), key


@pytest.mark.parametrize("cfg", VARIANTS, ids=name)
def test_reorder_within_sentences_shares_the_source_side_and_steps_the_same(cfg):
    model = model_for(cfg)
    src, src_len, tgt, _ = batch()
    K = 2                                                           # two hypotheses a sentence
    beams = torch.arange(3).repeat_interleave(K)                    # rows 0,0,1,1,2,2
    within = torch.tensor([1, 0, 2, 2, 5, 4])                       # each row stays in its sentence
    with torch.no_grad():
        state = model.reorder(model.start(model.encode(src, src_len)), beams)
        state = model.step(tgt[beams, 0], state)[1]
        full = model.reorder(state, within)
        shared = model.reorder(state, within, within_sentence=True)
        assert {"mask"} <= set(model.source_state) & set(state)
        for key in model.source_state:
            if key in state:
                assert shared[key] is state[key]                   # not copied
        a, _, _ = model.step(tgt[beams[within], 1], full)
        b, _, _ = model.step(tgt[beams[within], 1], shared)
    assert torch.equal(a, b)


@pytest.mark.parametrize("cfg", VARIANTS, ids=name)
def test_padding_does_not_change_a_sentence(cfg):
    model = model_for(cfg)
    src, src_len, tgt, tgt_len = batch()
    with torch.no_grad():
        logits, attn = model(src, src_len, tgt)
        enc = model.encode(src, src_len)["memory"]
        for i in range(3):
            s, t = src[i:i + 1, :src_len[i]], tgt[i:i + 1, :tgt_len[i]]
            alone, attn1 = model(s, src_len[i:i + 1], t)
            assert torch.allclose(alone[0], logits[i, :tgt_len[i]], atol=1e-5)
            mem = model.encode(s, src_len[i:i + 1])["memory"]
            assert torch.allclose(mem[0], enc[i, :src_len[i]], atol=1e-5)
            if attn is not None:
                assert torch.allclose(attn1[0], attn[i, :tgt_len[i], :src_len[i]], atol=1e-5)


@pytest.mark.parametrize("pre_norm", [True, False])
def test_transformer_is_causal(pre_norm):
    model = model_for(tiny(arch="transformer", pre_norm=pre_norm))
    src, src_len, tgt, _ = batch()
    changed = tgt.clone()
    changed[:, 3:] = torch.randint(4, V, (3, 2))
    with torch.no_grad():
        a, b = model(src, src_len, tgt)[0], model(src, src_len, changed)[0]
    assert torch.allclose(a[:, :3], b[:, :3], atol=1e-6)
    assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_fast_attention_equals_need_weights_path():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, heads=4)
    x, mem = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    mask = (torch.arange(7) < torch.tensor([7, 3])[:, None])[:, None, None]  # (B, 1, 1, S)
    for q, kv, kwargs in ((x, mem, dict(mask=mask)), (x, x, dict(causal=True))):
        k, v = mha.kv(kv)
        fast, none = mha(q, k, v, **kwargs)
        slow, w = mha(q, k, v, need_weights=True, **kwargs)
        assert none is None and w.shape == (2, 4, 5, kv.size(1))
        assert torch.allclose(fast, slow, atol=1e-5)
        assert torch.allclose(w.sum(-1), torch.ones(2, 4, 5), atol=1e-5)
    assert (w.triu(1) == 0).all()                                   # causal: no future weight


def test_attention_maps_per_layer_match_forward_attention():
    model = model_for(tiny(arch="transformer", dec_layers=3))
    src, src_len, tgt, _ = batch()
    with torch.no_grad():
        maps = model.attention_maps(src, src_len, tgt)
        _, attn = model(src, src_len, tgt)
    assert len(maps) == 3 and all(m.shape == (3, 2, 5, 6) for m in maps)
    assert torch.allclose(maps[-1].mean(1), attn, atol=1e-6)


def overfit_loss(cfg: ModelConfig, steps: int, lr: float) -> float:
    """Train on 20 random pairs (full batch) and return the final mean token loss."""
    torch.manual_seed(0)
    n, S, T = 20, 7, 6
    src, tgt = torch.randint(4, V, (n, S)), torch.randint(4, V, (n, T + 1))
    src[:, -1], tgt[:, 0], tgt[:, -1] = 3, 2, 3
    src_len = torch.full((n,), S)
    model = build_model(cfg, V, V).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    decay = torch.optim.lr_scheduler.LambdaLR(  # constant, then settle over the last 30%
        opt, lambda i: min(1.0, (steps - i) / (0.3 * steps)))
    for _ in range(steps):
        logits, _ = model(src, src_len, tgt[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, V), tgt[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    return loss.item()


# (model, steps, lr): each under a second of CPU
FIT = [(tiny(arch="rnn", attention=a, rnn_type=r, hidden_size=32, emb_dim=16, enc_layers=1,
             dec_layers=1), 60, 0.03) for a in ATTENTIONS for r in ("gru", "lstm")] + \
    [(tiny(arch="transformer", pre_norm=p, d_model=32, ff_dim=64, enc_layers=1, dec_layers=1),
      60, 0.01) for p in (True, False)]


@pytest.mark.parametrize("cfg,steps,lr", FIT, ids=[name(c) for c, _, _ in FIT])
def test_every_variant_can_memorise_20_pairs(cfg, steps, lr):
    assert overfit_loss(cfg, steps, lr) < 0.1


FRESH = [tiny(arch="transformer", pre_norm=True, d_model=64),
         tiny(arch="transformer", pre_norm=False, d_model=64),
         tiny(arch="rnn", attention="bahdanau", emb_dim=64, hidden_size=64),
         tiny(arch="rnn", attention="luong-general", emb_dim=64, hidden_size=64)]


@pytest.mark.parametrize("cfg", FRESH, ids=name)
def test_initial_loss_is_about_ln_vocab(cfg):
    torch.manual_seed(0)
    vocab = 8000
    model = build_model(cfg, vocab, vocab).eval()
    src, tgt, gold = (torch.randint(4, vocab, (8, 10)) for _ in range(3))
    with torch.no_grad():
        logits, _ = model(src, torch.full((8,), 10), tgt)
    loss = F.cross_entropy(logits.reshape(-1, vocab), gold.reshape(-1)).item()
    assert abs(loss - math.log(vocab)) < 1.0, loss


def test_tying_shares_matrices_only_when_it_means_the_same_tokens():
    # an RNN readout as wide as the embeddings needs no projection when tied: plain algebra
    for cfg in (tiny(arch="transformer"), tiny(arch="rnn", readout=tiny(arch="rnn").emb_dim)):
        joint = build_model(cfg, V, V)
        split = build_model(cfg, V, V + 5)
        not_joint = build_model(cfg, V, V, joint=False)
        untied = build_model(ModelConfig(**{**vars(cfg), "tie_embeddings": False}), V, V)
        emb = cfg.d_model if cfg.arch == "transformer" else cfg.emb_dim
        n = count_parameters(untied)
        assert count_parameters(joint) == n - 2 * V * emb           # src = tgt = output
        assert count_parameters(not_joint) == n - V * emb           # only tgt = output
        assert count_parameters(split) == n + 5 * emb * 2 - (V + 5) * emb + \
            (5 if cfg.arch == "rnn" else 0)                          # bigger tgt side, its bias


def test_benchmark_transformer_size():
    cfg = ModelConfig(arch="transformer", enc_layers=3, dec_layers=3, d_model=256, heads=4,
                      ff_dim=1024, tie_embeddings=True)
    assert abs(count_parameters(build_model(cfg, 8000, 8000)) - 7.6e6) < 0.1e6
