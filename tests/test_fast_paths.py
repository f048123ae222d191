"""The fast paths change no result: attention weights computed only on request, the Transformer's
in-place decoding buffers, and the one precision rule every decoding goes through."""
import contextlib
import math
from dataclasses import replace

import pytest
import torch
from helpers_ckpt import batch_of, multi30k_lines, toy_pairs

from nmt import distributed, prediction, training
from nmt import transformer as transformer_module
from nmt.checkpoint import load_for_inference
from nmt.compare import runs
from nmt.config import DataConfig, DecodeConfig, ModelConfig, Recipe
from nmt.data import Corpus, encode_pairs
from nmt.evaluation import translate_and_score
from nmt.model import build_model
from nmt.search import beam_search, greedy, max_lengths
from nmt.transformer import MultiHeadAttention

pytestmark = pytest.mark.usefixtures("one_thread")

V = 20
CPU = torch.device("cpu")


def transformer(seed: int = 0, **kw):
    cfg = dict(arch="transformer", d_model=16, heads=2, ff_dim=32, enc_layers=2, dec_layers=2,
               dropout=0.0, max_positions=64)
    torch.manual_seed(seed)
    return build_model(ModelConfig(**{**cfg, **kw}), V, V).eval()


def batch(seed: int = 0, T: int = 6):
    g = torch.Generator().manual_seed(seed)
    src_len = torch.tensor([7, 3, 1])
    src = torch.randint(4, V, (3, 7), generator=g)
    src = src.masked_fill(torch.arange(7) >= src_len[:, None], 0)
    src[torch.arange(3), src_len - 1] = 3                          # EOS
    tgt = torch.randint(4, V, (3, T), generator=g)
    tgt[:, 0] = 2                                                   # BOS
    return src, src_len, tgt


@pytest.mark.parametrize("group", [1, 3])
@pytest.mark.parametrize("amp", [False, True])
def test_a_decoding_step_attends_as_the_fused_kernel_does(group, amp):
    """A decoding step on the CPU may take explicit products instead of the fused kernel (a
    beam's queries sharing keys; bf16): the same attention, masked keys excluded, in float32
    and under bf16 autocast."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 2).eval()
    N, S = 4, 5
    x = torch.randn(N * group, 1, 16)                               # one query per row
    k, v = mha.kv(torch.randn(N, S, 16))                            # (N, h, S, dh)
    mask = torch.ones(N, 1, 1, S, dtype=torch.bool)
    mask[1, ..., 2:] = False                                        # a shorter source
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=amp):
        fused, _ = mha(x, k, v, mask=mask)
        step, _ = mha(x, k, v, mask=mask, step=True)
        weights, w = mha(x, k, v, mask=mask, need_weights=True)
    assert step.dtype == fused.dtype == (torch.bfloat16 if amp else torch.float32)
    tol = 3e-2 if amp else 1e-5
    assert torch.allclose(step.float(), fused.float(), atol=tol)
    assert torch.allclose(weights.float(), fused.float(), atol=tol)
    assert w.shape == (N * group, 2, 1, S) and torch.all(w[group:2 * group, ..., 2:] == 0)


@pytest.mark.parametrize("causal", [False, True])
def test_bf16_training_attention_takes_explicit_products_for_short_sequences(causal,
                                                                              monkeypatch):
    """On the CPU under bf16 autocast, attention over <= EXPLICIT_MAX_KEYS keys runs as explicit
    products (the fused CPU kernel is several times slower there), longer as the fused kernel:
    the same outputs and gradients either way, masked keys excluded."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 2).train()
    B, S = 3, 9
    x = torch.randn(B, S, 16)
    mask = None if causal else torch.ones(B, 1, 1, S, dtype=torch.bool)
    if mask is not None:
        mask[1, ..., 4:] = False                                    # a shorter source

    def run(max_keys: int):
        monkeypatch.setattr(transformer_module, "EXPLICIT_MAX_KEYS", max_keys)
        mha.zero_grad()
        with torch.autocast("cpu", torch.bfloat16), torch.profiler.profile() as prof:
            out, _ = mha(x, *mha.kv(x), mask=mask, causal=causal)
        out.float().square().sum().backward()
        fused = any("scaled_dot_product" in e.name for e in prof.events())
        return out.float(), [p.grad.clone() for p in mha.parameters()], fused

    out_e, grads_e, fused_e = run(S)        # S keys: explicit
    out_f, grads_f, fused_f = run(S - 1)    # more keys than the bound: fused
    assert not fused_e and fused_f
    assert torch.allclose(out_e, out_f, atol=3e-2)
    # all gradients as one vector (the key bias's is zero but for rounding: a softmax does not
    # change when every score of a query moves by the same amount)
    ge, gf = torch.cat([g.flatten() for g in grads_e]), torch.cat([g.flatten() for g in grads_f])
    assert torch.nn.functional.cosine_similarity(ge, gf, dim=0) > 0.999
    assert ge.norm() == pytest.approx(gf.norm().item(), rel=0.02)
    with torch.profiler.profile() as prof:  # float32: always the fused kernel
        mha(x, *mha.kv(x), mask=mask, causal=causal)
    assert any("scaled_dot_product" in e.name for e in prof.events())


@pytest.mark.parametrize("pre_norm", [True, False])
def test_the_outputs_are_the_same_with_and_without_attention_weights(pre_norm):
    """The fused attention (no weights) and the explicit softmax (weights) compute the same
    function: teacher forcing, decoding steps and search agree either way."""
    model = transformer(pre_norm=pre_norm)
    src, src_len, tgt = batch()
    with torch.inference_mode():
        with_w, attn = model(src, src_len, tgt)
        without, none = model(src, src_len, tgt, attention=False)
        assert none is None and attn.shape == (3, tgt.size(1), 7)
        assert torch.allclose(with_w, without, atol=1e-5)
        memory = model.encode(src, src_len)
        a, b = model.start(memory), model.start(memory, attention=False)
        for t in range(tgt.size(1)):
            pa, a, wa = model.step(tgt[:, t], a)
            pb, b, wb = model.step(tgt[:, t], b)
            assert wb is None and torch.allclose(wa.sum(-1), torch.ones(3), atol=1e-5)
            assert torch.allclose(pa, pb, atol=1e-5)
    sources = [x for x, _ in toy_pairs(5, seed=8, lengths=(1, 9))]
    s, sl = batch_of(sources)
    ml = max_lengths(sl, 1.5, 2)
    assert greedy(model, s, sl, ml, return_attention=True)[0] == greedy(model, s, sl, ml)
    for h1, h2 in zip(beam_search(model, s, sl, 3, 0.6, ml, nbest=3, return_attention=True)[0],
                      beam_search(model, s, sl, 3, 0.6, ml, nbest=3)):
        assert [y for y, _ in h1] == [y for y, _ in h2]
        assert [p for _, p in h1] == pytest.approx([p for _, p in h2], abs=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_attention_on_cuda_never_runs_cudnns_kernel_which_plans_for_every_shape():
    """cuDNN's fused attention builds a plan per new shape (614 ms per bf16 update on an H200
    against 47 ms without it): training updates and decoding steps over batches of new lengths
    must dispatch to the other fused kernels."""
    model = transformer(d_model=128, heads=2, ff_dim=256).cuda().train()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for T in (5, 9, 13):
            src = torch.randint(4, V, (3, T), device="cuda")
            src_len = torch.tensor([T, T - 1, 2], device="cuda")
            tgt = torch.randint(4, V, (3, T + 1), device="cuda")
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits, _ = model(src, src_len, tgt, attention=False)
            logits.float().sum().backward()
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                state = model.start(model.encode(src, src_len), attention=False)
                model.step(tgt[:, 0], state)
        torch.cuda.synchronize()
    ops = {e.name for e in prof.events() if "scaled_dot_product" in e.name}
    assert any("efficient" in o or "flash" in o for o in ops), ops
    assert not [o for o in ops if "cudnn" in o], ops


def test_decoding_buffers_are_laid_out_for_each_step_without_changing_it():
    """40 steps, with beam-style reorders on the way (which lay the buffers out for the next
    step) and without (where the step lays them out itself), give what teacher forcing gives,
    and every step leaves dense (B, heads, positions, d_head) buffers."""
    model = transformer(seed=3)
    src, src_len, tgt = batch(seed=1, T=40)
    perm = torch.tensor([2, 0, 1])
    with torch.inference_mode():
        want = model(src, src_len, tgt, attention=False)[0].log_softmax(-1)  # (B, T, V)
        state = model.start(model.encode(src, src_len), attention=False)
        for t in range(tgt.size(1)):
            if t in (5, 16, 33):  # shuffle and restore rows
                state = model.reorder(model.reorder(state, perm), torch.argsort(perm))
            log_probs, state, _ = model.step(tgt[:, t], state)
            assert torch.allclose(log_probs, want[:, t], atol=1e-5), f"step {t}"
            for buf in (b for kv in state["self"] for b in kv):
                assert buf.shape == (3, 2, t + 1, 8) and buf.is_contiguous()


def test_decoding_buffers_hold_the_compute_dtype():
    model = transformer()
    src, src_len, tgt = batch()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        state = model.start(model.encode(src, src_len))
        log_probs, state, _ = model.step(tgt[:, 0], state)
    assert state["self"][0][0].dtype == torch.bfloat16 and log_probs.dtype == torch.float32
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # reordered first
        state = model.reorder(model.start(model.encode(src, src_len)), torch.tensor([2, 0, 1]))
        state = model.step(tgt[:, 0], state)[1]
    assert all(b.dtype == torch.bfloat16 for kv in state["self"] for b in kv)
    with torch.inference_mode():
        state = model.step(tgt[:, 0], model.start(model.encode(src, src_len)))[1]
    assert state["self"][0][0].dtype == torch.float32


@pytest.fixture(scope="module")
def run_dir(trained_run):
    return trained_run


@pytest.fixture(scope="module")
def text(data_dir):
    return multi30k_lines(data_dir, "val", "de", 8), multi30k_lines(data_dir, "val", "en", 8)


def test_every_decoding_goes_through_the_one_precision_rule(run_dir, text, tmp_path,
                                                            monkeypatch):
    """Validation, translate/eval and compare decode under prediction.decoding_precision."""
    src, ref = text
    model, tok, recipe = load_for_inference(run_dir, CPU)
    real, entered = prediction.decoding_precision, []

    @contextlib.contextmanager
    def spy(device, amp=False):
        entered.append(torch.device(device).type)
        with real(device, amp):
            yield

    monkeypatch.setattr(prediction, "decoding_precision", spy)

    def through_the_rule(run) -> bool:
        entered.clear()
        run()
        return entered != [] and set(entered) == {"cpu"}

    corpus = Corpus(src, ref, "val")
    pairs, _ = encode_pairs(corpus, tok, DataConfig(), train=False)
    dcfg = DecodeConfig(beam=2, batch_tokens=200)
    (tmp_path / "in.de").write_text("".join(s + "\n" for s in src))
    assert through_the_rule(lambda: training._validate(model, tok, corpus, pairs, recipe, CPU))
    assert through_the_rule(lambda: translate_and_score(model, tok, src, [ref], dcfg, CPU))
    assert through_the_rule(lambda: prediction.translate_file(
        model, tok, tmp_path / "in.de", tmp_path / "out.en", dcfg, CPU))
    assert through_the_rule(lambda: runs._decode(
        run_dir, src, tmp_path / "test.hyp", "cpu", replace(Recipe(), decode=dcfg), {}))


def test_decoding_ignores_the_callers_autocast(run_dir, text):
    """Under bf16 autocast (as training runs its updates) decoding and scoring give exactly
    what they give in float32."""
    src, ref = text
    model, tok, _ = load_for_inference(run_dir, CPU)
    pairs = list(zip(tok.encode_src(src), tok.encode_tgt(ref)))
    dcfg = DecodeConfig(beam=3, batch_tokens=200)

    def decode():
        return (prediction.translate_lines(model, tok, src, dcfg, CPU),
                prediction.teacher_forced_loss(model, pairs, 200, CPU))

    plain = decode()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert decode() == plain


def test_weights_changed_after_decoding_inside_the_callers_autocast_are_the_ones_used(
        run_dir, text):
    """A bf16 search keeps one bf16 copy of each weight while it decodes, and only then: a
    caller whose own autocast stays on (as a training update's does) and who then changes the
    weights computes with the new ones."""
    src, _ = text
    model, tok, _ = load_for_inference(run_dir, CPU)
    g = torch.Generator().manual_seed(0)
    x, x_len, y = torch.randint(4, 50, (2, 6), generator=g), torch.tensor([6, 4]), \
        torch.randint(4, 50, (2, 5), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        prediction.translate_lines(model, tok, src, DecodeConfig(beam=2, amp="bf16"), CPU)
        with torch.no_grad():
            for p in model.parameters():                        # as an optimizer step would
                p.mul_(0.5)
        after = model(x, x_len, y, attention=False)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fresh = model(x, x_len, y, attention=False)[0]
    assert torch.equal(after, fresh)


def matmul_dtypes(model, run) -> set[torch.dtype]:
    """The dtypes of every linear layer's outputs while `run()` runs."""
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_decode_amp_puts_the_search_under_bf16_autocast(run_dir, text, monkeypatch):
    """decode.amp: bf16 runs the search's matrix products in bf16, auto does where bf16 pays
    (as train.amp), false keeps float32; scoring under teacher forcing stays float32 either
    way, and every line still gets its translation."""
    src, ref = text
    model, tok, _ = load_for_inference(run_dir, CPU)
    pairs = list(zip(tok.encode_src(src), tok.encode_tgt(ref)))
    lines = src + [""]

    def search(amp, pays=False) -> set[torch.dtype]:
        monkeypatch.setattr(distributed, "bf16_pays", lambda device: pays)
        dcfg = DecodeConfig(beam=3, batch_tokens=200, amp=amp)
        out: list[str] = []
        seen = matmul_dtypes(model, lambda: out.extend(
            prediction.translate_lines(model, tok, lines, dcfg, CPU)))
        assert len(out) == len(lines) and out[-1] == "" and all(out[:-1])
        return seen

    assert search(False, pays=True) == {torch.float32}
    assert search("bf16") == {torch.bfloat16}
    assert search("auto", pays=True) == {torch.bfloat16}
    assert search("auto", pays=False) == {torch.float32}
    assert matmul_dtypes(model, lambda: prediction.teacher_forced_loss(
        model, pairs, 200, CPU)) == {torch.float32}


@pytest.mark.parametrize("cfg", [
    dict(arch="transformer", d_model=16, heads=2, ff_dim=32, enc_layers=2, dec_layers=2),
    dict(arch="rnn", attention="luong-dot", rnn_type="gru"),
    dict(arch="rnn", attention="bahdanau", rnn_type="lstm"),
    dict(arch="rnn", attention="none", rnn_type="gru"),
], ids=["transformer", "gru-dot", "lstm-bahdanau", "gru-none"])
def test_every_family_searches_under_bf16_autocast(cfg):
    """Each model family's decoding steps run in bf16 under decode.amp's autocast and give
    beam 1 == greedy, with finite float32 scores."""
    if cfg["arch"] == "rnn":
        cfg = {**cfg, "emb_dim": 16, "hidden_size": 32, "enc_layers": 1, "dec_layers": 1}
    torch.manual_seed(0)
    model = build_model(ModelConfig(**cfg, dropout=0.0, max_positions=64), V, V).eval()
    src, src_len, _ = batch(seed=2)
    limit = max_lengths(src_len, 1.5, 4)
    with prediction.decoding_precision(CPU, "bf16"):
        out: dict = {}
        seen = matmul_dtypes(model, lambda: out.update(
            greedy=greedy(model, src, src_len, limit),
            beam1=beam_search(model, src, src_len, 1, 0.0, limit),
            beam4=beam_search(model, src, src_len, 4, 0.6, limit, nbest=4)))
    assert seen == {torch.bfloat16}
    assert [h[0][0] for h in out["beam1"]] == out["greedy"]
    assert all(isinstance(s, float) and math.isfinite(s) for hs in out["beam4"] for _, s in hs)


def test_beam_reorders_take_turns_between_two_sets_of_buffers():
    """A reorder writes into the memory of the buffers the previous lay-out replaced (its
    state was consumed), so a beam search of n steps allocates O(log n) key/value buffers,
    not one per step, and still steps as teacher forcing does."""
    model = transformer(seed=3)
    src, src_len, tgt = batch(seed=1, T=32)
    perm, back = torch.tensor([2, 0, 1]), torch.tensor([1, 2, 0])
    with torch.inference_mode():
        want = model(src, src_len, tgt, attention=False)[0].log_softmax(-1)  # (B, T, V)
        state, rows, memory = model.start(model.encode(src, src_len)), torch.arange(3), set()
        for t in range(tgt.size(1)):
            log_probs, state, _ = model.step(tgt[rows, t], state)
            assert torch.allclose(log_probs, want[rows, t], atol=1e-5), f"step {t}"
            state = model.reorder(state, perm if t % 2 == 0 else back)  # every step, as beam
            rows = rows[perm] if t % 2 == 0 else rows[back]
            memory |= {buf.untyped_storage().data_ptr() for kv in state["self"] for buf in kv}
    buffers = 2 * 2 * len(model.decoder)  # keys and values, two sets, per layer
    assert len(memory) <= buffers * 6, len(memory)  # vs. buffers / 2 * 32 without reuse
