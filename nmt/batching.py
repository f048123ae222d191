"""Token-budget batches with length bucketing (as in Vaswani et al. 2017, Sec. 5.1: "sentence
pairs were batched together by approximate sequence length"), and padding into tensors.

Pairs of similar length share a batch, so little of each (B, T) tensor is padding, and a batch
holds as many pairs as fit in `max_tokens` padded positions: short sentences come in big
batches, long ones in small batches, and every step costs about the same.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from nmt.tokenizer import BOS, EOS, PAD


@dataclass
class Batch:
    src: Tensor        # (B, S) long, PAD-padded, no BOS, ends with EOS
    src_len: Tensor    # (B,) long, lengths incl. EOS
    tgt_in: Tensor     # (B, T) long: BOS y1..yn  (PAD-padded)
    tgt_out: Tensor    # (B, T) long: y1..yn EOS  (PAD-padded)
    ntokens: int       # non-pad target tokens (= (tgt_out != PAD).sum())
    index: Tensor      # (B,) positions of these pairs in the encoded list (to restore order)

    def to(self, device) -> "Batch":
        # index stays on the CPU: it is only read back (.tolist()) to restore the input order
        return Batch(self.src.to(device), self.src_len.to(device), self.tgt_in.to(device),
                     self.tgt_out.to(device), self.ntokens, self.index)


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
    s, t = s.tolist(), t.tolist()
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
    if shuffle:
        batches = [batches[j] for j in rng.permutation(len(batches))]
    return batches


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
