"""Host reads of device values: each one makes the host wait for a GPU to catch up, so training
and decoding keep them to a fixed budget, checked here on the CPU by counting the calls that
read a tensor's values into Python (the CPU analogue of torch.cuda.set_sync_debug_mode).

Budgets (before these were set: Transformer update 3 reads, RNN update 6; greedy and beam
search 2 reads per step plus 1-2 more at every step where rows finished):
- a training update: 1 read (gradient norm and loss together); RNN models 1 more per batch,
  torch's own check of PackedSequence.batch_sizes, which torch keeps on the CPU (no GPU sync);
- greedy or beam search: 1 read per step (the finished flags), plus 3 per decode (the length
  limits, the tokens, the scores), plus that batch_sizes check for RNN models.

Also here: search gives the same results however late the host learns what finished, and the
prefetching batch stream yields the batches the updates would read anyway.
"""
import contextlib
from collections import Counter

import pytest
import torch
from helpers_ckpt import batch_of, tiny_model, toy_pairs

from nmt import search, training
from nmt.batching import Batch, Prefetch, collate
from nmt.config import TrainConfig
from nmt.search import beam_search, greedy, max_lengths

pytestmark = pytest.mark.usefixtures("one_thread")

READS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__int__", "__float__",
         "__index__")
SOURCES = [x for x, _ in toy_pairs(6, seed=5, lengths=(2, 9))]


@contextlib.contextmanager
def counted_reads():
    """Count the calls of the Tensor methods that read values into Python."""
    counts: Counter = Counter()
    saved = {name: getattr(torch.Tensor, name) for name in READS}

    def counting(name, method):
        def read(self, *args, **kwargs):
            counts[name] += 1
            return method(self, *args, **kwargs)
        return read

    for name, method in saved.items():
        setattr(torch.Tensor, name, counting(name, method))
    try:
        yield counts
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def rnn_extra(family: str) -> int:
    """Reads per encoded batch that are no GPU sync: torch's RNN checks the first entry of
    PackedSequence.batch_sizes, which lives on the CPU."""
    return 0 if family == "transformer" else 1


@pytest.mark.parametrize("family", ["transformer", "rnn-bahdanau"])
def test_a_training_update_reads_the_device_once(family):
    torch.manual_seed(0)
    model = tiny_model(family).train()
    pairs = toy_pairs(64, seed=3)
    t = training.Trainer(model, TrainConfig(lr=3e-3, schedule="constant"), pairs)
    group = [list(range(0, 16)), list(range(16, 32))]
    t.update(group)
    with counted_reads() as reads:
        res = t.update(group)
    assert not res.skipped
    assert sum(reads.values()) <= 1 + rnn_extra(family) * len(group), dict(reads)


class CountingSteps:
    """Wraps a model's `step` to count the decoding steps."""

    def __init__(self, model, monkeypatch):
        self.n, real = 0, model.step

        def step(prev, state):
            self.n += 1
            return real(prev, state)
        monkeypatch.setattr(model, "step", step)


@pytest.mark.parametrize("family", ["transformer", "rnn-bahdanau", "rnn-luong-general"])
def test_search_reads_the_device_once_per_step(family, monkeypatch):
    model = tiny_model(family, seed=2)  # untrained: rows finish at many different steps
    src, src_len = batch_of(SOURCES)
    ml = max_lengths(src_len, 1.5, 2)
    steps = CountingSteps(model, monkeypatch)
    for decode in (lambda: greedy(model, src, src_len, ml),
                   lambda: beam_search(model, src, src_len, 3, 0.6, ml, nbest=2)):
        steps.n = 0
        with counted_reads() as reads:
            decode()
        assert steps.n > 5
        assert sum(reads.values()) <= steps.n + 3 + rnn_extra(family), dict(reads)


@pytest.mark.parametrize("family", ["transformer", "rnn-bahdanau"])
@pytest.mark.parametrize("lag", [1, 3])
def test_search_results_do_not_depend_on_when_the_host_learns(family, lag, monkeypatch):
    """On a GPU the host learns a step late what finished; finished rows and sentences are
    frozen meanwhile, so the results are those of dropping them at once (the CPU's way)."""
    model = tiny_model(family, seed=1)
    src, src_len = batch_of(SOURCES)
    ml = max_lengths(src_len, 1.5, 2)

    def decode():
        g, g_att = greedy(model, src, src_len, ml, return_attention=True)
        b, b_att = beam_search(model, src, src_len, 4, 0.6, ml, nbest=4, return_attention=True)
        return g, g_att, b, b_att

    at_once = decode()
    monkeypatch.setattr(search, "_read_lag", lambda device: lag)
    late = decode()
    # the same tokens; scores and weights up to float rounding (a frozen row in the batch can
    # change how a matrix product is blocked)
    assert late[0] == at_once[0]
    assert [[y for y, _ in h] for h in late[2]] == [[y for y, _ in h] for h in at_once[2]]
    assert [s for h in late[2] for _, s in h] == pytest.approx(
        [s for h in at_once[2] for _, s in h], abs=1e-5)
    for a, b in ((late[1], at_once[1]), (late[3], at_once[3])):
        assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b))


def same_batches(a: list[Batch], b: list[Batch]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x.src, y.src) and torch.equal(x.src_len, y.src_len) and
        torch.equal(x.tgt_in, y.tgt_in) and torch.equal(x.tgt_out, y.tgt_out) and
        torch.equal(x.index, y.index) and x.ntokens == y.ntokens for x, y in zip(a, b))


def test_prefetch_yields_the_same_batches_in_the_same_order():
    pairs = toy_pairs(40, seed=7)
    keys = [list(range(i, i + 5)) for i in range(0, 40, 5)]
    plain = Prefetch(keys, lambda k: collate(pairs, k), "cpu")
    assert [k for k, _ in plain] == keys
    ahead = Prefetch(keys, lambda k: collate(pairs, k), "cpu")
    ahead.ahead()
    assert ahead.ready is None  # on the CPU reading ahead does nothing
    ahead.gpu = True  # the GPU's way (Batch.to("cpu") moves nothing): one batch ahead
    got = []
    for key, batch in ahead:
        got.append((key, batch))
        ahead.ahead()
        ahead.ahead()  # asking twice reads no further
    assert [k for k, _ in got] == keys
    assert same_batches([b for _, b in got], [collate(pairs, k) for k in keys])


def test_updates_from_the_prefetching_stream_equal_updates_on_their_own():
    """The stream an epoch's updates read (one batch ahead, as on a GPU) gives bit-identical
    weights to collating each update's batches when it runs: reading ahead changes nothing a
    resumed run depends on."""
    pairs = toy_pairs(96, seed=4)
    batches = [list(range(i, i + 12)) for i in range(0, 96, 12)]
    cfg = TrainConfig(lr=3e-3, schedule="constant", accum_steps=3)

    def trained(stream: bool) -> dict:
        torch.manual_seed(0)
        t = training.Trainer(tiny_model("rnn-bahdanau").train(), cfg, pairs)
        s = t.prefetch(batches, start=3)
        s.gpu = True  # read ahead as on a GPU
        for i in range(3, len(batches), t.per_update):
            t.update(batches[i:i + t.per_update], s if stream else None)
        return t.model.state_dict()

    a, b = trained(True), trained(False)
    assert all(torch.equal(a[k], b[k]) for k in a)
    t = training.Trainer(tiny_model("transformer"), cfg, pairs)
    with pytest.raises(RuntimeError, match="out of step"):
        t.update(batches[:3], t.prefetch(batches, start=3))
