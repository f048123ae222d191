"""Token-budget batches with length bucketing (as in Vaswani et al. 2017, Sec. 5.1: "sentence
pairs were batched together by approximate sequence length"), and padding into tensors.

Pairs of similar length share a batch, so little of each (B, T) tensor is padding, and a batch
holds as many pairs as fit in `max_tokens` padded positions: short sentences come in big
batches, long ones in small batches, and every step costs about the same.

Moving batches to a GPU never makes the host wait for it: host tensors are pinned and copied
asynchronously (transfer.to_device), the source lengths stay on the CPU (the RNN encoder packs
with them there; models copy them to the device for the source mask themselves), and `Prefetch`
prepares the next batch while the GPU still computes the current one. On the CPU all of it is a
no-op.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Iterable, Iterator, TypeVar

import numpy as np
import torch
from torch import Tensor

from nmt.special import BOS, EOS, PAD
from nmt.transfer import to_device


@dataclass
class Batch:
    src: Tensor        # (B, S) long, PAD-padded, no BOS, ends with EOS
    src_len: Tensor    # (B,) long, lengths incl. EOS
    tgt_in: Tensor     # (B, T) long: BOS y1..yn  (PAD-padded)
    tgt_out: Tensor    # (B, T) long: y1..yn EOS  (PAD-padded)
    ntokens: int       # non-pad target tokens (= (tgt_out != PAD).sum())
    index: Tensor      # (B,) positions of these pairs in the encoded list (to restore order)

    def to(self, device) -> "Batch":
        """The token tensors on `device` (see to_device); src_len and index stay on the CPU:
        the lengths are read there (packing, search limits), the index only restores order."""
        device = torch.device(device)
        if device.type == "cpu":
            return self
        # pinned, so that a model's copy of the lengths to the device is asynchronous too
        return Batch(to_device(self.src, device), self.src_len.pin_memory(),
                     to_device(self.tgt_in, device), to_device(self.tgt_out, device),
                     self.ntokens, self.index)


K = TypeVar("K")


class Prefetch(Generic[K]):
    """Iterate (key, batch) over `keys`, each batch made by `load(key)` (e.g. collate) and moved
    to `device`, able to prepare the next one early.

    `ahead()` loads the next batch now: called right after work for the current batch was
    queued on the GPU, the host collates, pins and starts copying batch i+1 while the GPU still
    computes batch i. Without it (or on the CPU, where the host computes what it queues, so
    there is nothing to overlap and `ahead()` does nothing) each batch is loaded when asked
    for. Either way the same batches come in the same order.
    """

    def __init__(self, keys: Iterable[K], load: Callable[[K], Batch], device):
        self.keys, self.load, self.device = iter(keys), load, torch.device(device)
        self.gpu = self.device.type == "cuda"
        self.ready: tuple[K, Batch] | None = None

    def __iter__(self) -> Iterator[tuple[K, Batch]]:
        return self

    def __next__(self) -> tuple[K, Batch]:
        if self.ready is None:
            key = next(self.keys)
            return key, self.load(key).to(self.device)
        item, self.ready = self.ready, None
        return item

    def ahead(self) -> None:
        if self.gpu and self.ready is None:
            key = next(self.keys, _END)
            if key is not _END:
                self.ready = key, self.load(key).to(self.device)


_END = object()


def token_batches(src_lens: list[int], tgt_lens: list[int], max_tokens: int, seed: int,
                  epoch: int, shuffle: bool = True) -> list[list[int]]:
    """Group pair indices into batches of at most `max_tokens` padded positions per side.

    Lengths are those of the encoded token lists; the EOS (source, tgt_out) / BOS (tgt_in) each
    side gets in `collate` is counted here, so a batch of n pairs has n * (max len + 1) <=
    max_tokens on both sides. A single pair longer than the budget gets a batch of its own.
    Pairs are sorted by (target, source) length with seeded random tie-breaks, so equal-length
    pairs meet different neighbours each epoch; the batch order is then shuffled. Everything
    derives from (seed, epoch), so a resumed run sees the same batches. shuffle=False (decoding)
    keeps the plain length order and no randomness.
    """
    s = (np.asarray(src_lens, dtype=np.int64) + 1)
    t = (np.asarray(tgt_lens, dtype=np.int64) + 1)
    rng = np.random.default_rng([seed % 2**32, epoch])
    keys = (rng.random(len(s)), s, t) if shuffle else (s, t)
    order = np.lexsort(keys).tolist()  # last key is the primary one
    batches = _fill(order, s.tolist(), t.tolist(), max_tokens)
    if shuffle:
        batches = [batches[j] for j in rng.permutation(len(batches))]
    return batches


def mixed_batches(src_lens: list[int], tgt_lens: list[int], max_tokens: int, seed: int,
                  epoch: int) -> list[list[int]]:
    """token_batches without bucketing: the pairs in a seeded random order, cut into batches
    under the same budget of padded positions, so a batch mixes lengths. Each batch then holds
    more padding and fewer real tokens; with RNNs some find the mix generalises better
    (train.batching: mixed, judged by BLEU per minute in bench/RESULTS.md, "Settings judged")."""
    order = np.random.default_rng([seed % 2**32, epoch]).permutation(len(src_lens)).tolist()
    s = (np.asarray(src_lens, dtype=np.int64) + 1).tolist()  # lists or arrays of lengths alike
    t = (np.asarray(tgt_lens, dtype=np.int64) + 1).tolist()
    return _fill(order, s, t, max_tokens)


def _fill(order: list[int], s: list[int], t: list[int], max_tokens: int) -> list[list[int]]:
    """Pairs in `order` into consecutive batches of at most max_tokens padded positions per
    side (s, t: lengths with EOS/BOS); a pair over the budget alone gets a batch of its own."""
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order:
        size = max(longest, s[i], t[i])
        if cur and size * (len(cur) + 1) > max_tokens:
            batches.append(cur)
            cur, size = [], max(s[i], t[i])
        cur.append(i)
        longest = size
    if cur:
        batches.append(cur)
    return batches


BATCHERS = {"bucket": token_batches, "mixed": mixed_batches}  # train.batching


def padding_fraction(batches: list[list[int]], src_lens: list[int], tgt_lens: list[int]) -> float:
    """Share of padded positions in the source and target tensors these batches make."""
    real = total = 0
    for b in batches:
        s = [src_lens[i] + 1 for i in b]
        t = [tgt_lens[i] + 1 for i in b]
        real += sum(s) + sum(t)
        total += len(b) * (max(s) + max(t))
    return 1 - real / total if total else 0.0


def collate(pairs: list[tuple[list[int], list[int]]], indices: list[int]) -> Batch:
    """Pad the chosen pairs into a Batch: source + EOS; target shifted into BOS y / y EOS."""
    src = [pairs[i][0] + [EOS] for i in indices]
    tgt = [pairs[i][1] for i in indices]
    S = max(map(len, src))
    T = max(map(len, tgt)) + 1
    return Batch(
        src=torch.tensor([x + [PAD] * (S - len(x)) for x in src]),                # (B, S)
        src_len=torch.tensor([len(x) for x in src]),                             # (B,)
        tgt_in=torch.tensor([[BOS] + y + [PAD] * (T - 1 - len(y)) for y in tgt]),  # (B, T)
        tgt_out=torch.tensor([y + [EOS] + [PAD] * (T - 1 - len(y)) for y in tgt]),  # (B, T)
        ntokens=sum(len(y) + 1 for y in tgt),
        index=torch.tensor(list(indices)),                                       # (B,)
    )
