"""RNN initialisation, the controlled RNN family, and float32 recurrences under autocast."""
from __future__ import annotations

import pytest
import torch

from nmt.config import ModelConfig, load_recipe
from nmt.encoders import run_rnn, step_cells
from nmt.model import build_model
from nmt.seq2seq import count_parameters

RNN_SYSTEMS = ("none", "bahdanau", "luong-dot", "luong-general", "luong-concat")
ALL_STEPS = ["zero_bias", "xavier", "orthogonal", "identity_general"]


def _rnn(attention="none", **kw) -> torch.nn.Module:
    base = dict(arch="rnn", attention=attention, emb_dim=32, hidden_size=48, enc_layers=2,
                dec_layers=2, dropout=0.0)
    return build_model(ModelConfig(**{**base, **kw}), 300, 300)


def _mean_cosine(x: torch.Tensor) -> float:
    """Mean cosine between the rows of x (N, H), the diagonal left out."""
    f = torch.nn.functional.normalize(x, dim=-1)
    off = ~torch.eye(len(x), dtype=torch.bool)
    return (f @ f.T)[off].mean().item()


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_encoder_summaries_of_different_sentences_differ_at_init(rnn_type):
    # the summary is the only view of the source the attention-free decoder has: with torch's
    # random biases it is nearly one shared vector for every sentence (cosine ~0.97)
    torch.manual_seed(0)
    src = torch.randint(4, 300, (16, 12))
    lengths = torch.full((16,), 12)
    model = _rnn(rnn_type=rnn_type).eval()
    with torch.no_grad():
        memory, final = model.encoder(src, lengths)
    assert _mean_cosine(final) < 0.3
    assert _mean_cosine(memory.reshape(-1, memory.size(-1))) < 0.3
    torch.manual_seed(0)
    with torch.no_grad():
        _, final_torch = _rnn(rnn_type=rnn_type, init=[]).eval().encoder(src, lengths)
    assert _mean_cosine(final_torch) > _mean_cosine(final)


def test_init_steps_do_what_they_say():
    model = _rnn("luong-general", rnn_type="lstm", init=ALL_STEPS)
    for name, p in model.named_parameters():
        if ".rnn.bias_ih" in name:              # LSTM gates i, f, g, o: forget gate at 1
            h = p.numel() // 4
            assert torch.all(p[h:2 * h] == 1)
            assert torch.all(p[:h] == 0) and torch.all(p[2 * h:] == 0)
        elif "bias" in name:
            assert torch.all(p == 0), name
        if ".rnn.weight_hh" in name:            # orthogonal per gate block (H, H)
            for block in p.detach().chunk(4, dim=0):
                eye = torch.eye(block.size(0))
                assert torch.allclose(block @ block.T, eye, atol=1e-5), name
    w = model.decoder.attention.score.key_proj.weight
    assert torch.equal(w, torch.eye(w.size(0)))   # general starts as the dot score
    untouched = _rnn("luong-general", init=[])
    assert not torch.equal(untouched.decoder.attention.score.key_proj.weight, torch.eye(48))


def test_tied_output_layer_keeps_the_embedding_init():
    model = _rnn("bahdanau", tie_embeddings=True)
    assert model.decoder.out.weight is model.decoder.embed.weight
    std = model.decoder.embed.weight.std().item()
    assert abs(std - 32 ** -0.5) < 0.2 * 32 ** -0.5


def test_rnn_family_is_controlled():
    # every RNN system of the comparison: same encoder, decoder width and readout width, and
    # parameter counts within 10% of each other, so the table measures attention
    recipes = {a: load_recipe(f"recipes/multi30k-de-en/{n}.yaml") for a, n in
               [("none", "no-attention"), ("bahdanau", "bahdanau"), ("luong-dot", "luong-dot"),
                ("luong-general", "luong-general"), ("luong-concat", "luong-concat")]}
    counts = {}
    for attention, r in recipes.items():
        assert r.model.attention == attention
        m = r.model
        assert (m.hidden_size, m.emb_dim, m.enc_layers, m.dec_layers, m.readout) == \
            (recipes["none"].model.hidden_size, recipes["none"].model.emb_dim,
             recipes["none"].model.enc_layers, recipes["none"].model.dec_layers,
             recipes["none"].model.readout)
        model = build_model(m, 8000, 8000)
        counts[attention] = count_parameters(model)
        readout = model.decoder.deep_out if attention in ("none", "bahdanau") else model.decoder.w_c
        assert readout.out_features == (m.readout or m.hidden_size) >= m.hidden_size
    assert max(counts.values()) / min(counts.values()) < 1.10, counts


def test_rnn_runs_in_float32_under_autocast():
    torch.manual_seed(0)
    gru = torch.nn.GRU(8, 16, 2, batch_first=True)
    x, h = torch.randn(3, 5, 8), torch.randn(2, 3, 16)
    ref_out, ref_h = gru(x, h)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, h_n = run_rnn(gru, x.bfloat16(), h.bfloat16())
    assert out.dtype == h_n.dtype == torch.float32
    torch.testing.assert_close(out, gru(x.bfloat16().float(), h.bfloat16().float())[0])
    assert ref_out.shape == out.shape and ref_h.shape == h_n.shape


def _one_position(rnn_type):
    torch.manual_seed(0)
    rnn = rnn_type(8, 16, 2, batch_first=True)
    x, h = torch.randn(3, 1, 8), torch.randn(2, 3, 16)
    return rnn, x, (h, torch.randn(2, 3, 16)) if rnn_type is torch.nn.LSTM else h


@pytest.mark.parametrize("rnn_type", [torch.nn.GRU, torch.nn.LSTM], ids=["gru", "lstm"])
def test_step_cells_compute_one_position_as_torchs_recurrence(rnn_type):
    rnn, x, h = _one_position(rnn_type)
    with torch.no_grad():
        want, want_h = rnn(x, h)
        got, got_h = step_cells(rnn, x, h)
    torch.testing.assert_close(got, want)
    for a, b in zip(*(((u,) if isinstance(u, torch.Tensor) else u) for u in (got_h, want_h))):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("rnn_type", [torch.nn.GRU, torch.nn.LSTM], ids=["gru", "lstm"])
def test_one_position_under_cpu_autocast_runs_the_recurrence_products_in_bf16(rnn_type,
                                                                              monkeypatch):
    """One position (a decoder's step, in a search or in training) goes through step_cells:
    its matrix products in bf16, its output and state in float32, within bf16 rounding of
    float32, and float32 gradients for the weights. A whole sequence runs torch's float32
    recurrence."""
    rnn, x, h = _one_position(rnn_type)
    seen, linear = [], torch.nn.functional.linear
    monkeypatch.setattr(torch.nn.functional, "linear",
                        lambda *a: seen.append(linear(*a).dtype) or linear(*a))
    with torch.no_grad():
        want, _ = rnn(x, h)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, got_h = run_rnn(rnn, x, h)
    assert seen and set(seen) == {torch.bfloat16}
    assert got.dtype == torch.float32 and (got_h[0] if isinstance(got_h, tuple) else got_h
                                           ).dtype == torch.float32
    torch.testing.assert_close(got, want, atol=2e-2, rtol=0)
    got.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and p.grad.abs().sum() > 0
               for p in rnn.parameters())
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        whole, _ = run_rnn(rnn, x.expand(-1, 4, -1), h)
    assert not seen and whole.dtype == torch.float32


@pytest.mark.parametrize("attention", RNN_SYSTEMS)
def test_every_recurrence_sees_float32_under_autocast(attention):
    """torch's recurrences (the encoder's, a whole-sequence decoder's) get float32 inputs under
    autocast, and every recurrence's weights float32 gradients (step_cells' included)."""
    model = _rnn(attention)
    seen = []
    for m in model.modules():
        if isinstance(m, torch.nn.RNNBase):
            m.register_forward_pre_hook(lambda mod, args: seen.append(
                (args[0].data if hasattr(args[0], "batch_sizes") else args[0]).dtype))
    src, lengths = torch.randint(4, 300, (2, 7)), torch.tensor([7, 4])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = model(src, lengths, torch.randint(4, 300, (2, 5)))
        logits.float().sum().backward()
    assert seen and all(d == torch.float32 for d in seen)
    grads = [p.grad for n, p in model.named_parameters() if ".rnn." in n]
    assert grads and all(g is not None and g.dtype == torch.float32 and g.abs().sum() > 0
                         for g in grads)


def test_score_ablation_varies_only_the_score():
    from nmt.compare import load_comparison
    from nmt.config import to_dict

    cmp = load_comparison("recipes/multi30k-de-en/scores.yaml")
    scores = {r.model.attention for r in cmp.recipes.values()}
    assert scores == {"luong-dot", "luong-general", "luong-concat", "scaled-dot", "cosine",
                      "luong-local"}
    flat = []
    for r in cmp.recipes.values():
        d = to_dict(r)
        d["model"].pop("attention")
        d.pop("name", None)
        flat.append(d)
    assert all(d == flat[0] for d in flat)
