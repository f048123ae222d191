"""Vocabulary shortlist: which target pieces a sentence's translation may use (decode.shortlist).

Beam search on a CPU spends most of a step in the output layer, a (rows, d) x (d, V) product
over the whole vocabulary. A translation uses few of the V pieces, and which ones is predicted
well by its source pieces (Marian's lexical shortlist; there from word-alignment probabilities,
here from sentence-level co-occurrence). Built once from the encoded training pairs:

- for every source piece s its SHORTLIST_MAX best target pieces t by the Dice coefficient of
  the sentences containing them, dice(s, t) = 2 c(s, t) / (c(s) + c(t)), c counting training
  pairs (each piece once per sentence; ties by the smaller id), best first;
- every target piece ordered by its frequency in the training targets (ties by id).

A decoded batch may use the union of the first K candidates of each of its source pieces, the
N most frequent target pieces and every special id up to EOS (so a hypothesis can always end),
sorted: `vocabulary`. Search restricts the output layer to it (nmt.seq2seq.output_subset,
nmt.search) and normalises over it. The union is per batch, not per sentence: one matrix product
serves the whole batch, so a batch of many sentences gets a larger subset.

It is saved as shortlist.pt beside the checkpoint, with a key (digest of the tokenizer and of
the recipe's data section) that says what it was built from: a key that no longer matches
(another tokenizer or training data in the directory) builds it again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from nmt import layout
from nmt.atomic import atomic_write
from nmt.config import SHORTLIST_MAX, DecodeConfig, Recipe
from nmt.data import encode_pairs, load_split
from nmt.errors import NMTError
from nmt.special import EOS
from nmt.tokenizer import Tokenizer

FORMAT = 1
CHUNK = 20_000  # sentence pairs whose co-occurrences are counted together (bounds memory)


@dataclass
class Shortlist:
    candidates: Tensor  # (Vs, SHORTLIST_MAX) target ids per source id, best first, -1 past the end
    frequent: Tensor    # (Vt,) target ids, most frequent in the training targets first
    key: str = ""       # what it was built from (shortlist_key)

    def vocabulary(self, src: Tensor, k: int, n: int) -> Tensor:
        """The sorted ids (V',) a batch of sources src (B, S) may translate into: the first k
        candidates of each of its pieces, the n most frequent target pieces and every id up to
        EOS (PAD, UNK, BOS, EOS: the search keeps their columns). On src's device."""
        if not 1 <= k <= self.candidates.size(1):
            raise NMTError(f"decode.shortlist: {k} candidates per source piece asked; the "
                           f"shortlist holds 1 to {self.candidates.size(1)}")
        pieces = torch.unique(src.cpu())                                   # (P,) sorted
        cand = self.candidates[pieces, :k].flatten()                       # (P*k,)
        ids = torch.cat([torch.arange(EOS + 1), cand[cand >= 0], self.frequent[:n]])
        return torch.unique(ids).to(src.device)                           # (V',) sorted

    def to_state(self) -> dict:
        return {"format": FORMAT, "key": self.key, "candidates": self.candidates,
                "frequent": self.frequent}


def build(pairs: list[tuple[list[int], list[int]]], src_vocab: int, tgt_vocab: int,
          max_k: int = SHORTLIST_MAX, key: str = "") -> Shortlist:
    """The shortlist of encoded training pairs (source ids, target ids): see the module's
    docstring. Deterministic: the same pairs give the same tensors."""
    df_src = np.zeros(src_vocab, np.int64)    # c(s): pairs whose source holds s
    df_tgt = np.zeros(tgt_vocab, np.int64)    # c(t): pairs whose target holds t
    freq = np.zeros(tgt_vocab, np.int64)      # occurrences of t in the targets
    keys = np.zeros(0, np.int64)              # s * Vt + t of the pairs seen, unique ...
    counts = np.zeros(0, np.int64)            # ... and c(s, t)
    for start in range(0, len(pairs), CHUNK):
        chunk, targets = [], []
        for x, y in pairs[start:start + CHUNK]:
            us, ut = np.unique(np.asarray(x, np.int64)), np.unique(np.asarray(y, np.int64))
            df_src[us] += 1
            df_tgt[ut] += 1
            targets.append(np.asarray(y, np.int64))
            chunk.append((us[:, None] * tgt_vocab + ut[None, :]).ravel())  # (|us| * |ut|,)
        freq += np.bincount(np.concatenate(targets or [np.zeros(0, np.int64)]),
                            minlength=tgt_vocab)
        new, c = np.unique(np.concatenate(chunk or [np.zeros(0, np.int64)]), return_counts=True)
        keys, inverse = np.unique(np.concatenate([keys, new]), return_inverse=True)
        counts = np.bincount(inverse, np.concatenate([counts, c]),
                             minlength=keys.size).astype(np.int64)
    s, t = keys // tgt_vocab, keys % tgt_vocab
    dice = 2.0 * counts / np.maximum(df_src[s] + df_tgt[t], 1)
    order = np.lexsort((t, -dice, s))                    # by source, best Dice first, then id
    s, t = s[order], t[order]
    first = np.searchsorted(s, s, side="left")           # where each source's run begins
    rank = np.arange(s.size) - first
    keep = rank < max_k
    candidates = np.full((src_vocab, max_k), -1, np.int64)
    candidates[s[keep], rank[keep]] = t[keep]
    frequent = np.lexsort((np.arange(tgt_vocab), -freq))  # most frequent first, ties by id
    return Shortlist(torch.from_numpy(candidates), torch.from_numpy(frequent), key)


def shortlist_key(tok: Tokenizer, recipe: Recipe) -> str:
    """Digest of what a shortlist is built from: the tokenizer and the recipe's data section."""
    h = hashlib.sha256()
    state = tok.to_state()
    for part in (state["src"], state["tgt"] or b""):
        h.update(part if isinstance(part, bytes) else str(part).encode())
    h.update(json.dumps(dataclasses.asdict(recipe.data), sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _load(path: Path, key: str) -> Shortlist | None:
    """The shortlist saved at `path` if it was built from `key`, else None."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable or truncated: built again (it is derived data)
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("key") != key:
        return None
    return Shortlist(state["candidates"], state["frequent"], key)


def for_checkpoint(checkpoint: str | Path, tok: Tokenizer, recipe: Recipe) -> Shortlist:
    """The shortlist of a checkpoint (a run directory or a .pt file): the one saved beside it,
    or built from the training data its recipe names (load_split, encode_pairs: the pairs
    training kept) and saved there. A directory it cannot write to keeps nothing: the
    shortlist is then built again on each use."""
    checkpoint = Path(checkpoint)
    path = (checkpoint if checkpoint.is_dir() else checkpoint.parent) / layout.SHORTLIST
    key = shortlist_key(tok, recipe)
    found = _load(path, key)
    if found is not None:
        return found
    dc = recipe.data
    print(f"building the vocabulary shortlist from the training data ({dc.train}) -> {path}",
          file=sys.stderr)
    try:
        corpus = load_split(dc, dc.train, limit=dc.max_train_pairs)
    except NMTError as e:
        raise NMTError(f"decode.shortlist: {path} is built from the training data the "
                       f"recipe of {checkpoint} names, which cannot be read ({e}); make it "
                       "readable (e.g. NMT_DATA_DIR, data.path) or decode without "
                       "--shortlist") from None
    pairs, _ = encode_pairs(corpus, tok, dc, train=True)
    shortlist = build(pairs, tok.src_vocab_size, tok.tgt_vocab_size, key=key)
    try:
        with atomic_write(path, binary=True) as f:
            torch.save(shortlist.to_state(), f)
    except OSError as e:
        print(f"warning: could not save the shortlist to {path} ({e.strerror or e}); it will "
              "be built again next time", file=sys.stderr)
    return shortlist


def use_shortlist(model, checkpoint: str | Path, tok: Tokenizer, recipe: Recipe,
                  dcfg: DecodeConfig) -> None:
    """Give `model` (an ensemble too: the first checkpoint's, as they share the tokenizer) its
    shortlist when dcfg.shortlist asks for one; nothing otherwise."""
    if dcfg.shortlist:
        model.shortlist = for_checkpoint(checkpoint, tok, recipe)
