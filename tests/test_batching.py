import time

import pytest
import torch

from nmt.batching import BATCHERS, Batch, collate, mixed_batches, padding_fraction, token_batches
from nmt.config import DataConfig, TokenizerConfig
from nmt.data import Corpus, encode_pairs, read_parallel
from nmt.tokenizer import BOS, EOS, PAD, Tokenizer


@pytest.fixture(scope="session")
def multi30k_8k(data_dir, tmp_path_factory):
    """The default tokenizer (8k joint unigram) on all of Multi30k de-en train, built once per
    session; also returns how long the build took."""
    d = data_dir / "multi30k"
    corpus = Corpus(*read_parallel(d / "train.de.gz", d / "train.en.gz"), "multi30k:train")
    start = time.perf_counter()
    tok = Tokenizer.train(corpus.src, corpus.tgt, tmp_path_factory.mktemp("tok8k"),
                          TokenizerConfig())
    return tok, time.perf_counter() - start, corpus


@pytest.fixture(scope="session")
def train_pairs(multi30k_8k):
    tok, _, corpus = multi30k_8k
    pairs, _ = encode_pairs(corpus, tok, DataConfig(), train=True)
    return pairs, [len(s) for s, _ in pairs], [len(t) for _, t in pairs]


def test_8k_joint_tokenizer_builds_in_seconds(multi30k_8k):
    tok, seconds, corpus = multi30k_8k
    print(f"8k joint unigram on {2 * len(corpus.src)} sentences: {seconds:.1f} s")
    assert tok.joint and tok.src_vocab_size == 8000
    assert seconds < 60  # seconds, not minutes, even on a busy 2-core machine


def test_multi30k_4096_token_batches_waste_under_10_percent(train_pairs):
    pairs, sl, tl = train_pairs
    batches = token_batches(sl, tl, 4096, seed=1, epoch=0)
    waste = padding_fraction(batches, sl, tl)
    print(f"padding in 4096-token batches of Multi30k de-en: {100 * waste:.1f}%")
    assert waste < 0.10
    # and it is the padding the tensors really get
    some = batches[:10]
    tensors = [collate(pairs, b) for b in some]
    pad = sum(int((b.src == PAD).sum() + (b.tgt_out == PAD).sum()) for b in tensors)
    total = sum(b.src.numel() + b.tgt_out.numel() for b in tensors)
    assert padding_fraction(some, sl, tl) == pytest.approx(pad / total)


@pytest.mark.parametrize("batching", sorted(BATCHERS))
def test_every_index_once_per_epoch_within_budget(train_pairs, batching):
    _, sl, tl = train_pairs
    for epoch in (0, 1):
        batches = BATCHERS[batching](sl, tl, 4096, seed=7, epoch=epoch)
        flat = sorted(i for b in batches for i in b)
        assert flat == list(range(len(sl)))
        for b in batches:
            longest = max(max(sl[i], tl[i]) for i in b) + 1  # + EOS / BOS
            assert len(b) * longest <= 4096 or len(b) == 1


@pytest.mark.parametrize("batching", sorted(BATCHERS))
def test_same_seed_and_epoch_same_batches_else_different(train_pairs, batching):
    _, sl, tl = train_pairs
    make = BATCHERS[batching]
    a = make(sl, tl, 4096, seed=3, epoch=2)
    assert a == make(sl, tl, 4096, seed=3, epoch=2)
    assert a != make(sl, tl, 4096, seed=3, epoch=3)
    assert a != make(sl, tl, 4096, seed=4, epoch=2)
    # different batches, not merely a different batch order
    assert sorted(map(sorted, a)) != sorted(map(sorted, make(sl, tl, 4096, 3, 3)))


def test_mixed_batches_mix_lengths_at_the_cost_of_padding(train_pairs):
    """Bucketing keeps a batch's target lengths within a token or two; mixed batches span
    most of the corpus's range, and pay for it in padding (fewer real tokens per batch)."""
    _, sl, tl = train_pairs
    bucket, mixed = token_batches(sl, tl, 4096, 5, 0), mixed_batches(sl, tl, 4096, 5, 0)

    def spread(batches):  # median over batches of (longest - shortest target)
        return sorted(max(tl[i] for i in b) - min(tl[i] for i in b) for b in batches)[
            len(batches) // 2]
    assert spread(bucket) <= 2 < 10 <= spread(mixed)
    assert padding_fraction(mixed, sl, tl) > 2 * padding_fraction(bucket, sl, tl)
    assert len(mixed) > len(bucket)  # the same budget holds fewer pairs


def test_no_shuffle_is_length_ordered_and_seed_free():
    sl, tl = [5, 1, 9, 3, 3, 7], [4, 2, 8, 3, 1, 6]
    a = token_batches(sl, tl, 20, seed=1, epoch=0, shuffle=False)
    assert a == token_batches(sl, tl, 20, seed=2, epoch=5, shuffle=False)
    flat = [i for b in a for i in b]
    assert [tl[i] for i in flat] == sorted(tl)


def test_overlong_pair_gets_its_own_batch():
    batches = token_batches([3, 50, 3], [3, 60, 3], max_tokens=16, seed=0, epoch=0)
    assert [1] in batches and sorted(i for b in batches for i in b) == [0, 1, 2]


def test_collate_shapes_shift_and_order():
    pairs = [([5, 6, 7], [8, 9]), ([], [10, 11, 12, 13]), ([14], [15])]
    b = collate(pairs, [2, 0, 1])
    assert isinstance(b, Batch)
    assert b.src.dtype == b.tgt_in.dtype == b.tgt_out.dtype == torch.long
    assert b.src.shape == (3, 4) and b.tgt_in.shape == b.tgt_out.shape == (3, 5)
    assert b.src_len.tolist() == [2, 4, 1]  # EOS counted; the empty source is just [EOS]
    assert b.src[2].tolist() == [EOS, PAD, PAD, PAD]
    for row, n in enumerate(b.src_len.tolist()):
        assert b.src[row, n - 1] == EOS and (b.src[row, n:] == PAD).all()
    assert (b.tgt_in[:, 0] == BOS).all()
    real = b.tgt_out != PAD
    assert b.ntokens == int(real.sum()) == (1 + 1) + (2 + 1) + (4 + 1)
    assert torch.equal(b.tgt_in[:, 1:][real[:, 1:]], b.tgt_out[:, :-1][real[:, 1:]])
    assert b.tgt_out[2].tolist() == [10, 11, 12, 13, EOS]  # row 2 is pair 1
    assert b.tgt_in[2].tolist() == [BOS, 10, 11, 12, 13]
    restored = [None] * 3
    for row, i in enumerate(b.index.tolist()):
        restored[i] = b.tgt_out[row][b.tgt_out[row] != PAD].tolist()[:-1]
    assert restored == [t for _, t in pairs]
    moved = b.to("cpu")
    assert torch.equal(moved.src, b.src) and moved.ntokens == b.ntokens
