"""CUDA graphs for training updates (train.cuda_graphs, nmt/graphs.py), checked on the CPU where
no graph can be captured: the padded-bucket pass a graph holds gives today's loss and gradients
(the Transformer and every RNN attention), the RNN encoder without packing gives what packing
gives, updates through the padded pass follow eager ones, and the switch changes nothing on
the CPU, bit for bit. The capture itself runs only where CUDA is (the test named cuda below).
"""
import copy
import dataclasses
import json

import pytest
import torch
from helpers_ckpt import toy_pairs
from test_training import recipe

import nmt.training as training
from nmt import checkpoint, graphs
from nmt.batching import collate
from nmt.config import ATTENTIONS, ModelConfig, TrainConfig, recipe_from_dict
from nmt.encoders import RNNEncoder, fixed_shapes, run_layers, run_rnn
from nmt.errors import NMTError
from nmt.graphs import bucket, pad_batch
from nmt.model import build_model
from nmt.seq2seq import embedding
from nmt.tokenizer import BOS, EOS, PAD, Tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 16
RNN = dict(arch="rnn", emb_dim=16, hidden_size=24, enc_layers=2, dec_layers=2, dropout=0.0)
# the Transformer, every RNN attention, and an LSTM Luong model without input feeding (its
# decoder runs the whole target in one call)
FAMILIES = {"transformer": ModelConfig(arch="transformer", d_model=16, heads=2, ff_dim=32,
                                       enc_layers=2, dec_layers=2, dropout=0.0),
            **{f"rnn-{a}": ModelConfig(attention=a, **RNN) for a in ATTENTIONS},
            "rnn-luong-general-lstm-no-feeding": ModelConfig(
                attention="luong-general", rnn_type="lstm", input_feeding=False, **RNN)}


def model_of(family: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(FAMILIES[family], VOCAB, VOCAB).train()


def moved_by_rounding(name: str) -> bool:
    """Attention key biases: their gradient is zero in exact arithmetic (a softmax does not
    change when every key's score moves by the same q.b), so after Adam, which scales any
    gradient to steps of about lr, they hold rounding noise of two runs, not their updates."""
    return name.endswith("attn.k.bias")


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ----------------------------------------------------------------------------- buckets

def test_buckets_round_up_by_at_most_a_quarter_to_a_few_sizes_an_octave():
    sizes = [bucket(n) for n in range(1, 2049)]
    for n, b in enumerate(sizes, 1):
        assert n <= b <= max(n, 1.25 * n) and bucket(b) == b  # a bucket is its own bucket
    assert sizes == sorted(sizes)
    for k in range(3, 11):  # four sizes in each octave (2^k, 2^(k+1)]
        assert len({b for n, b in enumerate(sizes, 1) if 2 ** k < n <= 2 ** (k + 1)}) == 4
    assert [bucket(n) for n in (8, 9, 11, 17, 33, 100)] == [8, 10, 12, 20, 40, 112]


def test_a_padded_batch_holds_the_batch_and_rows_with_nothing_to_predict():
    pairs = toy_pairs(9, seed=1, lengths=(2, 11))
    b = collate(pairs, list(range(9)))
    p = pad_batch(b)
    B, S, T = b.src.size(0), b.src.size(1), b.tgt_in.size(1)
    assert tuple(p.src.shape) == (bucket(B), bucket(S)) and p.tgt_in.shape == p.tgt_out.shape
    assert p.tgt_in.size(1) == bucket(T) and p.src.size(0) > B  # 9 sentences -> 10 rows
    assert torch.equal(p.src[:B, :S], b.src) and torch.equal(p.tgt_out[:B, :T], b.tgt_out)
    assert torch.equal(p.tgt_in[:B, :T], b.tgt_in) and torch.equal(p.src_len[:B], b.src_len)
    assert (p.src[:B, S:] == PAD).all() and (p.tgt_out[:B, T:] == PAD).all()
    assert (p.src[B:, 0] == EOS).all() and (p.src[B:, 1:] == PAD).all()
    assert (p.src_len[B:] == 1).all() and (p.tgt_in[B:, 0] == BOS).all()
    assert (p.tgt_out[B:] == PAD).all() and (p.index[B:] == -1).all()  # no token to predict
    assert p.ntokens == b.ntokens == int((p.tgt_out != PAD).sum())


# ----------------------------------------------------------------------------- fixed shapes

@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("layers", [1, 2])
def test_the_encoder_without_packing_gives_what_packing_gives(rnn_type, bidirectional, layers):
    """Outputs, final states and gradients: the backward direction starts at each sentence's
    last real token, not at the padding, and the padding past the batch's longest sentence
    (a bucket's) changes nothing."""
    torch.manual_seed(0)
    enc = RNNEncoder(embedding(VOCAB, 8), 12, layers, rnn_type, bidirectional, 0.0).train()
    lens = torch.tensor([9, 3, 5, 1, 7])
    src = torch.randint(4, VOCAB, (5, 9)).masked_fill(torch.arange(9) >= lens[:, None], PAD)
    w = torch.randn(5, 9, 12)

    def run(src):
        enc.zero_grad()
        out, final = enc(src, lens)
        ((out[:, :9] * w).sum() + final.square().sum()).backward()
        return out, final, grads(enc)

    out, final, g = run(src)
    with fixed_shapes(enc):
        fixed, final2, g2 = run(torch.cat([src, torch.full((5, 4), PAD)], 1))
    assert not enc.fixed_shapes  # only inside the block
    torch.testing.assert_close(fixed[:, :9], out, rtol=1e-5, atol=1e-6)
    assert (fixed[:, 9:] == 0).all() and (fixed[:, :9][torch.arange(9) >= lens[:, None]] == 0).all()
    torch.testing.assert_close(final2, final, rtol=1e-5, atol=1e-6)
    assert g.keys() == g2.keys()
    for name in g:
        torch.testing.assert_close(g2[name], g[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_a_stacked_rnn_run_layer_by_layer_is_the_stacked_rnn(rnn_type):
    torch.manual_seed(0)
    rnn = (torch.nn.GRU if rnn_type == "gru" else torch.nn.LSTM)(6, 7, 3, batch_first=True,
                                                                 dropout=0.4)
    x = torch.randn(4, 5, 6)
    h = torch.randn(3, 4, 7)
    h = (h, torch.randn(3, 4, 7)) if rnn_type == "lstm" else h
    rnn.eval()  # no dropout: the same function
    want, got = rnn(x, h), run_layers(rnn, x, h)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(got[1] if rnn_type == "lstm" else [got[1]],
                    want[1] if rnn_type == "lstm" else [want[1]]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    rnn.train()  # dropout between layers, from the default generator: seeded, repeatable
    torch.manual_seed(5)
    a = run_layers(rnn, x, h)[0]
    torch.manual_seed(5)
    assert torch.equal(run_layers(rnn, x, h)[0], a) and not torch.allclose(a, want[0])
    with fixed_shapes(rnn):  # the decoders' run_rnn goes layer by layer inside graphs
        torch.manual_seed(5)
        assert torch.equal(run_rnn(rnn, x, h)[0], a)


# ----------------------------------------------------------------------------- the padded pass

@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_padded_bucket_pass_gives_todays_loss_and_gradients(family):
    model = model_of(family)
    t = training.Trainer(model, TrainConfig(schedule="constant"), toy_pairs(32, seed=2))
    batch = collate(t.pairs, list(range(11)))
    ntok = batch.ntokens
    loss = t._backward(batch, 1.0, ntok, True)  # today's eager pass, packed
    want = grads(model)
    model.zero_grad(set_to_none=True)
    steps = t.graphed_steps(capture=False)
    B, S, T = batch.src.size(0), batch.src.size(1), batch.tgt_in.size(1)
    for shape in (None, (B + 5, S + 7, T + 6)):  # the bucket's, and a lot of padding
        model.zero_grad(set_to_none=False)
        padded = pad_batch(batch, shape)
        assert padded.src.size(0) > B and padded.src.size(1) > S
        got = steps.backward(padded, 1.0 / ntok)
        assert got.item() == pytest.approx(loss.item(), rel=1e-5)
        g = grads(model)
        assert g.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(g[name], want[name], rtol=1e-4, atol=1e-6, msg=name)
    assert not steps.captured and len(steps.steps) == 2  # one buffer set per shape, no graph


@pytest.mark.parametrize("family", ["transformer", "rnn-bahdanau", "rnn-luong-dot"])
def test_updates_through_the_padded_pass_follow_eager_updates(family):
    """Whole updates (two accumulated micro-batches, clipping, Adam): the same losses and
    weights up to float rounding; gradients stay allocated and are zeroed in place."""
    pairs = toy_pairs(200, seed=3, lengths=(2, 12))
    cfg = TrainConfig(lr=3e-3, schedule="constant", batch_tokens=200, accum_steps=2)
    runs = []
    for padded in (False, True):
        model = model_of(family, seed=1)
        t = training.Trainer(model, cfg, pairs)
        if padded:
            t.graphs = t.graphed_steps(capture=False)
        batches = t.epoch_batches(1)
        assert len(batches) >= 8
        losses = [t.update(batches[i:i + 2]).loss for i in range(0, 8, 2)]
        if padded:
            assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
            assert len(t.graphs.steps) > 1  # several bucket shapes met
        runs.append((losses, model.state_dict()))
    (eager, w0), (graphed, w1) = runs
    assert graphed == pytest.approx(eager, rel=1e-4)
    for name in (n for n in w0 if not moved_by_rounding(n)):
        torch.testing.assert_close(w1[name], w0[name], rtol=1e-3, atol=1e-5, msg=name)


def test_a_shape_that_cannot_be_captured_warns_once_and_updates_go_on_eagerly(monkeypatch):
    """A capture that fails (an operation a graph cannot hold) turns graphs off for the run:
    one warning naming why, and the update in progress finishes eagerly, its earlier
    micro-batches' gradients kept: the same update as an eager trainer's."""
    pairs = toy_pairs(64, seed=4)
    cfg = TrainConfig(lr=3e-3, schedule="constant", batch_tokens=160, accum_steps=2)
    eager = training.Trainer(model_of("rnn-bahdanau", seed=2), cfg, pairs)
    t = training.Trainer(model_of("rnn-bahdanau", seed=2), cfg, pairs)
    t.graphs = t.graphed_steps(capture=False)
    warnings = []
    monkeypatch.setattr(t, "_warn", warnings.append)
    passes = t.graphs.backward

    def second_refused(batch, scale):  # the first micro-batch passes, the second cannot
        if t.graphs.steps:
            raise RuntimeError("operation not permitted when stream is capturing\n(details)")
        return passes(batch, scale)
    monkeypatch.setattr(t.graphs, "backward", second_refused)
    batches = t.epoch_batches(1)
    for group in (batches[:2], batches[2:4]):
        want, got = eager.update(group), t.update(group)
        assert got.loss == pytest.approx(want.loss, rel=1e-5) and not got.skipped
    assert t.graphs is None and len(warnings) == 1
    assert "operation not permitted" in warnings[0] and "details" not in warnings[0]
    assert t.no_graphs_reason.startswith("RuntimeError: operation not permitted")
    for name, w in eager.model.state_dict().items():
        torch.testing.assert_close(t.model.state_dict()[name], w, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- the switch

def test_where_cuda_graphs_are_not_used_and_why():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert graphs.unavailable("auto", cuda, 1, False) is None
    assert graphs.unavailable(True, cuda, 1, False) is None
    assert "false" in graphs.unavailable(False, cuda, 1, False)
    assert "CUDA" in graphs.unavailable("auto", cpu, 1, False)
    assert "DDP" in graphs.unavailable(True, cuda, 2, False)
    assert "compile" in graphs.unavailable(True, cuda, 1, True)
    r = recipe_from_dict({"train": {"cuda_graphs": "auto"}})
    assert r.train.cuda_graphs == "auto" and TrainConfig().cuda_graphs is False
    with pytest.raises(NMTError, match="train.cuda_graphs"):
        recipe_from_dict({"train": {"cuda_graphs": "yes please"}})


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's behaviour")
def test_the_switch_changes_nothing_on_the_cpu_bit_for_bit(tmp_path, tok_dir, data_dir,
                                                          monkeypatch):
    """A run with train.cuda_graphs auto or true ends with the weights, optimizer state and
    logged losses of the same run without it: nothing is padded, nothing drawn differently.
    true says why there are no graphs; auto says nothing."""
    monkeypatch.setenv("NMT_DATA_DIR", str(data_dir))
    runs = {}
    for setting in ("false", "auto", "true"):
        out = tmp_path / setting
        r = recipe("bahdanau", f"train.cuda_graphs={setting}", "train.max_steps=3",
                   "train.valid_every=3")
        assert r.model.dropout > 0  # random draws in every update
        training.train(r, out, quiet=True, tokenizer=Tokenizer.load(tok_dir))
        last = checkpoint.load(out, which="last")
        log = (out / "train.log").read_text()
        metrics = [(m["kind"], m["step"], m.get("loss"), m.get("lr"), m.get("val_loss"))
                   for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
        runs[setting] = (last, metrics, log)
    base, base_metrics, base_log = runs["false"]
    assert len(base_metrics) == 4  # three train records and a validation
    for setting in ("auto", "true"):
        last, metrics, log = runs[setting]
        assert metrics == base_metrics  # the same losses, to the last digit logged
        for name, w in base["model"].items():
            assert torch.equal(last["model"][name], w), name
        assert last["optimizer"]["state"].keys() == base["optimizer"]["state"].keys()
        for k, s in base["optimizer"]["state"].items():
            for key, v in s.items():
                assert torch.equal(last["optimizer"]["state"][k][key], v)
        assert last["rng"][0]["torch"].equal(base["rng"][0]["torch"])
        assert ("cuda_graphs is true" in log) == (setting == "true")
    assert "cuda_graphs" not in base_log


# ----------------------------------------------------------------------------- on CUDA

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("family", ["transformer", "rnn-bahdanau",
                                    "rnn-luong-general-lstm-no-feeding"])
@pytest.mark.parametrize("bf16", [False, True])
def test_cuda_graph_updates_follow_eager_updates(family, bf16, monkeypatch):
    """On CUDA the captured graphs replay the padded pass: their updates give the eager run's
    losses (and, in float32 without TF32, weights) up to rounding, dropout 0, one graph per
    bucket shape and no fallback."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    dev = torch.device("cuda")
    pairs = toy_pairs(400, seed=3, lengths=(2, 30))
    cfg = TrainConfig(lr=3e-3, schedule="constant", batch_tokens=400)
    runs = []
    for setting in (False, True):
        torch.manual_seed(1)
        model = build_model(FAMILIES[family], VOCAB, VOCAB).to(dev).train()
        t = training.Trainer(model, dataclasses.replace(cfg, cuda_graphs=setting), pairs,
                             amp=bf16)
        assert (t.graphs is not None) == setting
        losses = [t.update([b]).loss for b in t.epoch_batches(1)[:12]]
        if setting:
            assert t.graphs is not None, f"graphs turned off: {t.no_graphs_reason}"
            assert t.graphs.captured == len(t.graphs.steps) > 1
        runs.append((losses, {k: v.float().cpu() for k, v in model.state_dict().items()}))
    (eager, w0), (graphed, w1) = runs
    assert graphed == pytest.approx(eager, rel=3e-2 if bf16 else 1e-3)
    if not bf16:
        for name in (n for n in w0 if not moved_by_rounding(n)):
            torch.testing.assert_close(w1[name], w0[name], rtol=1e-3, atol=1e-3, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("family", ["transformer", "rnn-bahdanau"])
def test_cuda_graphs_resumed_draw_the_dropout_masks_of_the_uninterrupted_run(family):
    """Capturing leaves the random state as it was, so a run resumed from its weights,
    optimizer and random state (capturing its graphs anew) goes on with the losses of the run
    never interrupted; one resumed from another random state does not (dropout 0.3, and the
    2-layer RNN's dropout between layers is F.dropout's inside graphs)."""
    dev = torch.device("cuda")
    mcfg = dataclasses.replace(FAMILIES[family], dropout=0.3)
    pairs = toy_pairs(400, seed=3, lengths=(2, 30))
    cfg = TrainConfig(lr=3e-3, schedule="constant", batch_tokens=400, cuda_graphs=True)

    def trainer():
        torch.manual_seed(1)
        return training.Trainer(build_model(mcfg, VOCAB, VOCAB).to(dev).train(), cfg, pairs)

    t = trainer()
    batches = t.epoch_batches(1)[:8]
    whole = [t.update([b]).loss for b in batches]
    t = trainer()
    first = [t.update([b]).loss for b in batches[:4]]
    saved = (copy.deepcopy(t.model.state_dict()), copy.deepcopy(t.optimizer.state_dict()),
             training._get_rng(dev))
    resumed = []
    for rng in (saved[2], None):
        t = trainer()
        t.model.load_state_dict(saved[0])
        t.optimizer.load_state_dict(saved[1])
        if rng is not None:
            training._set_rng(rng, dev)
        resumed.append(first + [t.update([b]).loss for b in batches[4:]])
        assert t.graphs is not None, f"graphs turned off: {t.no_graphs_reason}"
    assert resumed[0] == pytest.approx(whole, rel=1e-4)
    assert resumed[1] != pytest.approx(whole, rel=1e-4)  # other masks: other losses
