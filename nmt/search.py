"""Decoding: greedy and batched beam search, for every model, through the decoding protocol only.

A model is driven by `encode` -> `start` -> `step` (one token for every row) and `reorder`
(index_select of the decoder state; fairseq's `reorder_incremental_state`). Nothing here looks at
the model's type, so RNNs with or without attention and the Transformer decode the same way.

Lengths. A sentence with |x| source tokens (|x| counts the source EOS, as `Batch.src_len` does)
gets at most ceil(a * |x| + b) output tokens; at that step EOS is forced, so every hypothesis
ends with a real EOS whose log-probability is part of its score. Token lists returned here
exclude BOS and EOS.

Beam search (Sutskever et al. 2014; batched as in fairseq). The B sentences x K beams are one
flat batch of B*K rows. Each step takes the top 2K of the K*V extensions of a sentence in one
`topk`; EOS extensions ranked within the top K are finished (fairseq's rule: that is what
makes beam 1 identical to greedy), the K best non-EOS extensions stay alive. Finished hypotheses
are ranked by the GNMT length-normalised score log P(y|x) / lp(y), lp(y) = ((5 + |y|) / 6)^alpha
(Wu et al. 2016, Sec. 7), with |y| counting the EOS. A sentence is done when it holds K finished
hypotheses and its best live one, scored at the current length, no longer beats the worst of
them: log-probabilities only fall, so with alpha = 0 this is exact; with alpha > 0 it assumes,
like fairseq and Hugging Face, that a longer hypothesis will not overtake through the penalty.
Done sentences leave the batch (their rows are dropped in the same `reorder`), so a batch costs
what its slowest sentence costs on ever fewer rows. A reorder that does more than re-rank within
sentences names the sentences that stay (`sentences`), rows K per sentence, so a model may keep
its source side once per sentence instead of once per hypothesis (the Transformer's
cross-attention keys and values).

Host reads. A loop step reads from the device once: the flags of what has finished, which the
host needs to drop finished rows (_Finished). A finished row or sentence is frozen on the device
the step it finishes, so on a GPU the host reads those flags a step late, from a non-blocking
copy, and the GPU never waits for Python; the results are those of dropping at once. Length
limits are known on the host from the start, so forcing EOS reads nothing.

Vocabulary shortlist (decode.shortlist; Marian's lexical shortlist). When the model carries a
shortlist (Seq2Seq.shortlist), a batch is decoded with the output layer restricted to `vocab`,
the union of the candidates of its source pieces (nmt.shortlist): `step` then returns log-probs
(n, V') over those ids only, normalised over them, and the search maps each chosen column j
back to the vocabulary id vocab[j] before it is stored or fed back. A subset is sorted and
holds every id up to EOS, so PAD, BOS and EOS keep their columns and the rules above read the
same. With every id in it, the search is the full softmax's.

Sampling (for back-translation, and to see what a model believes) runs the greedy loop but draws
each token from the model's distribution reshaped by a temperature T and optionally cut to the
k likeliest tokens (top-k; Fan et al. 2018) and to the nucleus, the smallest set of likeliest
tokens whose probability reaches p (top-p; Holtzman et al. 2020). A seeded generator makes it
reproducible; the score reported is still the model's own log P(y|x) / lp(y).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from nmt.config import DecodeConfig
from nmt.seq2seq import output_subset
from nmt.special import BOS, EOS, PAD
from nmt.transfer import to_device

NEG_INF = float("-inf")
Hyp = tuple[list[int], float]


def max_lengths(src_len: Tensor, a: float, b: float, cap: int | None = None) -> Tensor:
    """ceil(a * |x| + b) output tokens per sentence (|x| with EOS), at most `cap`."""
    m = torch.ceil(src_len.double() * a + b - 1e-9).long().clamp(min=0)  # (B,)
    return m.clamp(max=cap) if cap is not None else m


def length_penalty(length: Tensor | float, alpha: float) -> Tensor | float:
    """GNMT length penalty lp(y) = ((5 + |y|) / 6)^alpha, Wu et al. 2016, Sec. 7."""
    return ((5.0 + length) / 6.0) ** alpha


def _limits(max_len: int | Tensor, batch: int) -> list[int]:
    """Per sentence its output limit, on the host: the loop bounds and which rows must end
    come from it, so no step reads a limit back from the device."""
    if isinstance(max_len, Tensor):
        return max_len.tolist()  # a read, once, if the caller put the limits on the GPU
    return [int(max_len)] * batch


def _valid_log_probs(logp: Tensor, forced: list[int]) -> Tensor:
    """PAD and BOS are never outputs; the rows `forced`, at their length limit, may only end
    (EOS keeps its real log-probability, so a cut-off hypothesis is scored honestly). The host
    knows which rows those are (_limits), so nothing here waits for the GPU, and only those
    rows are touched. Writes into `logp`: `step` returns a fresh tensor each time, and a copy
    per token would cost as much as this."""
    logp = logp.float()
    logp[:, PAD] = NEG_INF
    logp[:, BOS] = NEG_INF
    if forced:
        rows = to_device(torch.tensor(forced), logp.device)
        eos = logp[rows, EOS]
        logp.index_fill_(0, rows, NEG_INF)
        logp[rows, EOS] = eos
    return logp


TOPK_BLOCK = 64  # vocabulary entries per block of _topk


def _topk(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """x.topk(k, dim=1) of x (n, V), sorted: values and indices (n, k), the same values.

    On the CPU a row's top k are found faster in two stages: the maximum of each block of
    TOPK_BLOCK entries (one vectorised pass), then the top k among the k blocks with the best
    maxima (and the < TOPK_BLOCK entries past the last whole block). Exact: an entry of the
    top k lies in one of those blocks, else k blocks would hold larger entries. Among tied
    values the indices may differ from torch.topk's. (Faster than torch.topk for a beam step's
    rows: bench/log/2026-12-03-cpu-bench-2.md.)"""
    n, V = x.shape
    nb = V // TOPK_BLOCK
    if x.device.type != "cpu" or nb <= 2 * k:
        return x.topk(k, dim=1)
    head = x[:, :nb * TOPK_BLOCK].view(n, nb, TOPK_BLOCK)            # (n, nb, b)
    blocks = head.amax(-1).topk(k, dim=1).indices                     # (n, k)
    within = torch.arange(TOPK_BLOCK, device=x.device)
    cand = head.gather(1, blocks[:, :, None].expand(-1, -1, TOPK_BLOCK)).view(n, -1)
    index = (blocks[:, :, None] * TOPK_BLOCK + within).view(n, -1)    # (n, k*b)
    if nb * TOPK_BLOCK < V:                                           # the tail, whole
        cand = torch.cat([cand, x[:, nb * TOPK_BLOCK:]], 1)
        tail = torch.arange(nb * TOPK_BLOCK, V, device=x.device)
        index = torch.cat([index, tail.expand(n, -1)], 1)
    values, pos = cand.topk(k, dim=1)
    return values, index.gather(1, pos)


def _check_vocabulary(vocab: Tensor | None) -> None:
    """A vocabulary subset must be sorted and hold every id up to EOS, so that PAD, BOS and
    EOS keep their columns (the module's docstring); anything else is a caller's bug."""
    if vocab is None:
        return
    v = vocab.cpu()
    if v.numel() <= EOS or not torch.equal(v[:EOS + 1], torch.arange(EOS + 1)) \
            or not bool((v[1:] > v[:-1]).all()):
        raise ValueError("a vocabulary subset must be sorted, without repeats, and begin with "
                         f"the ids 0..{EOS} (PAD, UNK, BOS, EOS)")


def _read_lag(device: torch.device) -> int:
    """Steps between queueing the finished flags for the host and reading them: on a GPU one,
    so the copy overlaps the next step and the GPU never waits for Python; on the CPU none
    (the values are there at once, and reading late would only cost work)."""
    return 1 if device.type == "cuda" else 0


class _Finished:
    """The host's view of which rows (greedy) or sentences (beam) have finished.

    Each step queues the device flags of the items in the batch, with their ids (batch
    positions, on the host); a flag stays set and a finished item is frozen on the device, so
    learning it late changes nothing but the work left. On a GPU the flags travel by a
    non-blocking copy into pinned memory read `lag` steps later; that read is the loops' only
    host read per step."""

    def __init__(self, device: torch.device):
        self.lag, self.gpu = _read_lag(device), device.type == "cuda"
        self.queue: deque[tuple[Tensor, list[int], torch.cuda.Event | None]] = deque()

    def update(self, flags: Tensor, ids: list[int]) -> set[int]:
        """Queue flags (n,) of the items `ids`; the ids known finished now (maybe none)."""
        event = None
        if self.gpu:
            flags = flags.to("cpu", non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        self.queue.append((flags, ids, event))
        if len(self.queue) <= self.lag:
            return set()
        flags, ids, event = self.queue.popleft()
        if event is not None:
            event.synchronize()  # recorded `lag` steps ago: normally long done
        return {i for i, f in zip(ids, flags.tolist()) if f}


def _strip(row: list[int]) -> list[int]:
    return row[:row.index(EOS)] if EOS in row else row


def _attention_rows(attn: Tensor, ntok: int, src_len: int) -> Tensor:
    return attn[: ntok + 1, :src_len]  # (T, S): one row per output token, EOS last


# ----------------------------------------------------------------------------- greedy

@torch.no_grad()  # not inference_mode: see _beam
def _greedy(model, src: Tensor, src_len: Tensor, max_len: int | Tensor, want_attn: bool,
            pick: Callable[[Tensor], Tensor] | None = None, vocab: Tensor | None = None):
    """Tokens (B, L+1) ending in EOS, summed log-probs (B,), attention (B, L+1, S) or None.

    `pick(log_probs (n, V)) -> tokens (n,)` chooses each next token (a sampler); None = argmax.
    `vocab` (V',): the ids of the columns `step` returns (the output layer restricted to them).
    A row that emitted EOS adds nothing more; the host drops it from the batch when it learns
    of it (_Finished), so later steps only pay for the rest."""
    B, S = src.shape
    dev = src.device
    limits = _limits(max_len, B)
    L = max(limits, default=0)
    tokens = src.new_full((B, L + 1), PAD)  # (B, L+1)
    logprob = torch.zeros(B, device=dev)  # (B,)
    attn_out = torch.zeros(B, L + 1, S, device=dev) if want_attn else None
    have_attn = False
    state = model.start(model.encode(src, src_len), attention=want_attn)
    rows = list(range(B))  # batch positions of the rows still decoding, on the host ...
    alive = torch.arange(B, device=dev)  # ... and on the device
    ended = torch.zeros(B, dtype=torch.bool, device=dev)  # (n,) the row has emitted EOS
    finished = _Finished(dev)
    prev = src.new_full((B,), BOS)
    for t in range(L + 1 if B else 0):
        logp, state, attn = model.step(prev, state)  # (n, V)
        logp = _valid_log_probs(logp, [j for j, i in enumerate(rows) if limits[i] <= t])
        if pick is None:
            best, tok = (x.squeeze(1) for x in _topk(logp, 1))  # (n,)
        else:
            tok = pick(logp)  # (n,)
            best = logp.gather(1, tok[:, None]).squeeze(1)
        if vocab is not None:
            tok = vocab[tok]  # column -> vocabulary id
        tokens[alive, t] = tok  # after a row's EOS: ignored (_strip)
        logprob[alive] += best.masked_fill(ended, 0.0)
        if want_attn and attn is not None:
            attn_out[alive, t] = attn.float()
            have_attn = True
        ended, prev = ended | (tok == EOS), tok
        gone = finished.update(ended, rows)
        if gone:  # drop the finished rows: later steps only pay for the rest
            keep = [j for j, i in enumerate(rows) if i not in gone]
            if not keep:
                break
            if len(keep) < len(rows):
                rows, idx = [rows[j] for j in keep], to_device(torch.tensor(keep), dev)
                alive, ended, prev = alive[idx], ended[idx], prev[idx]
                state = model.reorder(state, idx)
    return tokens, logprob, (attn_out if have_attn else None)


def greedy(model, src: Tensor, src_len: Tensor, max_len: int | Tensor,
           return_attention: bool = False, vocab: Tensor | None = None):
    """Greedy decoding. `max_len`: one limit for all, or (B,) per sentence (see max_lengths);
    `vocab`: the output layer restricted to these ids (see the module's docstring).

    Returns per sentence its tokens; with `return_attention`, also per sentence a (T, S) tensor
    (T = tokens + EOS, S = its source length) or None for a model without attention.
    """
    _check_vocabulary(vocab)
    with output_subset(model, vocab):
        tokens, _, attn = _greedy(model, src, src_len, max_len, return_attention, vocab=vocab)
    out = [_strip(row) for row in tokens.tolist()]
    if not return_attention:
        return out
    lens, attn = src_len.tolist(), None if attn is None else attn.cpu()
    attns = [None if attn is None else _attention_rows(attn[i], len(y), lens[i])
             for i, y in enumerate(out)]
    return out, attns


# ----------------------------------------------------------------------------- sampling

def sampling_log_probs(logp: Tensor, temperature: float = 1.0, top_k: int = 0,
                       top_p: float = 1.0) -> Tensor:
    """The distribution a sampler draws from, as log-probs (n, V) (-inf outside its support).

    q = softmax(log p / T), then cut to the top-k tokens (ties with the k-th kept) and to the
    nucleus: the likeliest tokens, in order, until their mass first reaches p (the likeliest
    is always kept), and renormalised.
    """
    z = (logp.float() / temperature).log_softmax(-1)  # (n, V)
    if 0 < top_k < z.size(-1):
        kth = z.topk(top_k, dim=-1).values[:, -1:]  # (n, 1)
        z = z.masked_fill(z < kth, NEG_INF)
    if top_p < 1.0:
        sz, order = z.sort(dim=-1, descending=True)  # (n, V)
        q = sz.softmax(-1)
        drop = q.cumsum(-1) - q >= top_p  # the likelier tokens already hold mass p
        z = z.masked_fill(torch.empty_like(drop).scatter_(1, order, drop), NEG_INF)
    return z.log_softmax(-1)


def sampler(temperature: float, top_k: int, top_p: float,
            generator: torch.Generator) -> Callable[[Tensor], Tensor]:
    """A `pick` for the greedy loop that draws each token from sampling_log_probs."""
    def pick(logp: Tensor) -> Tensor:
        q = sampling_log_probs(logp, temperature, top_k, top_p).exp()  # (n, V)
        return torch.multinomial(q, 1, generator=generator).squeeze(1)
    return pick


def decoding_generator(dcfg: DecodeConfig, device) -> torch.Generator | None:
    """The seeded generator a sampling decode draws from (None when not sampling)."""
    if not dcfg.sample:
        return None
    return torch.Generator(device=device).manual_seed(dcfg.seed)


# ----------------------------------------------------------------------------- beam search

@dataclass
class _Beams:
    """The search of the N sentences in the batch, K hypotheses each (rows n*K .. n*K+K-1 are
    sentence n's): the live hypotheses and the K best finished ones of every sentence."""
    ids: list[int]       # batch position of each sentence (host)
    scores: Tensor       # (N, K) summed log-probs of the live hypotheses
    prev: Tensor         # (N*K,) their last tokens
    hist: Tensor         # (N*K, W) their tokens so far
    fin_tok: Tensor      # (N, K, W) finished hypotheses, best first
    fin_score: Tensor    # (N, K) their length-normalised scores
    ahist: Tensor | None = None     # (N*K, W, S) attention of the live hypotheses
    fin_attn: Tensor | None = None  # (N, K, W, S) attention of the finished ones

    def select(self, go: Tensor, ids: list[int], K: int) -> _Beams:
        """The sentences `go` (N',) only."""
        rows = (go[:, None] * K + torch.arange(K, device=go.device)).view(-1)  # (N'*K,)
        return _Beams(ids, self.scores[go], self.prev[rows], self.hist[rows],
                      self.fin_tok[go], self.fin_score[go],
                      None if self.ahist is None else self.ahist[rows],
                      None if self.fin_attn is None else self.fin_attn[go])


def _pick(x: Tensor, index: Tensor) -> Tensor:
    """x (N, M, ...), index (N, K) -> (N, K, ...): x[n, index[n, k]]."""
    index = index.view(*index.shape, *[1] * (x.dim() - 2))
    return x.gather(1, index.expand(-1, -1, *x.shape[2:]))


def _extend(b: _Beams, logp: Tensor, attn: Tensor | None, t: int, K: int,
            alpha: float, vocab: Tensor | None = None) -> Tensor:
    """Step t of the search, in place on `b`: of the K*V extensions of a sentence's live
    hypotheses the top 2K come from one topk; the EOS extensions among the top K finish (the
    K best of old and new finished ones are kept), the K best others live on. logp (N*K, V)
    is consumed (its columns are the ids `vocab` if given); returns the parent row of each new
    live hypothesis (N, K)."""
    N, W, V = b.scores.size(0), b.hist.size(1), logp.size(-1)
    # A sentence's top 2K extensions are among the top 2K of each of its rows: rank within
    # rows first (adding a row's score changes no order in it), then among those K*2K.
    row_top, row_tok = _topk(logp, min(2 * K, V))  # (N*K, 2K)
    if vocab is not None:
        row_tok = vocab[row_tok]  # columns -> vocabulary ids
    cand = row_top.add_(b.scores.view(-1, 1)).view(N, -1)  # (N, K*2K) log P of each extension
    top, pos = cand.topk(2 * K, dim=1)  # (N, 2K), best first
    tok = row_tok.view(N, -1).gather(1, pos)  # (N, 2K)
    row = (pos // row_top.size(1) + torch.arange(0, N * K, K, device=pos.device)[:, None]
           ).view(-1)  # (N*2K,)
    cand_hist = b.hist[row].view(N, 2 * K, W)
    cand_hist[:, :, t] = tok
    cand_attn = None
    if attn is not None:
        if b.ahist is None:
            S = attn.size(-1)
            b.ahist, b.fin_attn = attn.new_zeros(N * K, W, S), attn.new_zeros(N, K, W, S)
        cand_attn = b.ahist[row].view(N, 2 * K, W, -1)
        cand_attn[:, :, t] = attn.float()[row].view(N, 2 * K, -1)

    # Finish the EOS extensions that made the top K; keep the K best of old and new.
    is_eos = tok == EOS
    finishing = is_eos & (torch.arange(2 * K, device=tok.device) < K)
    norm = (top / length_penalty(t + 1.0, alpha)).masked_fill(~finishing, NEG_INF)
    b.fin_score, pick = torch.cat([b.fin_score, norm], 1).topk(K, dim=1)  # (N, K)
    b.fin_tok = _pick(torch.cat([b.fin_tok, cand_hist], 1), pick)
    if cand_attn is not None:
        b.fin_attn = _pick(torch.cat([b.fin_attn, cand_attn], 1), pick)

    # The K best non-EOS extensions live on.
    b.scores, keep = top.masked_fill(is_eos, NEG_INF).topk(K, dim=1)  # (N, K)
    b.prev = tok.gather(1, keep).view(-1)  # (N*K,)
    b.hist = _pick(cand_hist, keep).view(N * K, W)
    if cand_attn is not None:
        b.ahist = _pick(cand_attn, keep).flatten(0, 1)
    return row.view(N, 2 * K).gather(1, keep)


def _done(b: _Beams, t: int, alpha: float) -> Tensor:
    """(N,) the sentences done after step t: K finished hypotheses, and the best live one,
    scored at the current length, no longer beats the worst of them (also true once nothing
    is live). A done sentence is frozen: its live scores become -inf, so nothing of it
    changes until the host drops it from the batch."""
    best_live = b.scores[:, 0] / length_penalty(t + 1.0, alpha)  # (N,)
    done = b.fin_score[:, -1] >= best_live
    b.scores.masked_fill_(done[:, None], NEG_INF)
    return done


def _store(out: tuple[Tensor, Tensor, Tensor | None], b: _Beams, js: list[int]) -> None:
    """Copy the finished hypotheses of the batch's sentences `js` into the results."""
    tok, score, attn = out
    src = to_device(torch.tensor(js, dtype=torch.long), tok.device)
    dst = to_device(torch.tensor([b.ids[j] for j in js], dtype=torch.long), tok.device)
    tok[dst], score[dst] = b.fin_tok[src], b.fin_score[src]
    if attn is not None and b.fin_attn is not None:
        attn[dst] = b.fin_attn[src]


# no_grad, not inference_mode: under inference_mode autocast casts every weight again at every
# step (its cache skips it there); under no_grad one bf16 copy of each lasts the decoding
@torch.no_grad()
def _beam(model, src: Tensor, src_len: Tensor, K: int, alpha: float,
          max_len: int | Tensor, want_attn: bool, vocab: Tensor | None = None):
    """Finished hypotheses per sentence: tokens (B, K, L+1), scores (B, K) sorted best first,
    attention (B, K, L+1, S) or None."""
    B, S = src.shape
    dev = src.device
    limits = _limits(max_len, B)
    W = max(limits, default=0) + 1  # history width: tokens and the final EOS
    out = (src.new_full((B, K, W), PAD), torch.full((B, K), NEG_INF, device=dev),
           torch.zeros(B, K, W, S, device=dev) if want_attn else None)
    if B == 0:
        return out

    # The first step runs on one row per sentence (B rows, not B*K: the K copies would be
    # equal); its parents then expand the state to K rows per sentence.
    state = model.start(model.encode(src, src_len), attention=want_attn)
    # Only beam 0 is live at first, so the K copies of a sentence do not yield K equal hyps.
    scores = torch.full((B, K), NEG_INF, device=dev)
    scores[:, 0] = 0.0
    b = _Beams(list(range(B)), scores, src.new_full((B * K,), BOS),
               src.new_full((B * K, W), PAD), src.new_full((B, K, W), PAD),
               torch.full((B, K), NEG_INF, device=dev))
    finished = _Finished(dev)
    for t in range(W):
        logp, state, attn = model.step(b.prev[::K] if t == 0 else b.prev, state)  # (N*K, V)
        if t == 0:  # (B, V) -> (B*K, V): rows k > 0 score -inf (their beams are not live)
            logp = logp.repeat_interleave(K, 0)
            attn = None if attn is None else attn.repeat_interleave(K, 0)
        logp = _valid_log_probs(logp, [j * K + k for j, i in enumerate(b.ids)
                                       if limits[i] <= t for k in range(K)])
        parent = _extend(b, logp, attn if want_attn else None, t, K, alpha, vocab)  # (N, K)
        gone = finished.update(_done(b, t, alpha), b.ids)
        keep = [j for j, i in enumerate(b.ids) if i not in gone]
        shrunk = len(keep) < len(b.ids)
        if shrunk:  # done sentences leave the batch
            _store(out, b, [j for j, i in enumerate(b.ids) if i in gone])
            go = to_device(torch.tensor(keep, dtype=torch.long), dev)
            b, parent = b.select(go, [b.ids[j] for j in keep], K), parent[go]
            if not keep:
                break
        # parents are hypotheses of the same sentence unless finished sentences left the batch
        # (or, after the first step, the state had one row per sentence); then the rows come
        # K per sentence kept, which a model may use to keep one source-side row per sentence
        sentences = go if shrunk else torch.arange(len(keep), device=dev) if t == 0 else None
        state = model.reorder(state, parent.view(-1) // K if t == 0 else parent.view(-1),
                              within_sentence=sentences is None, sentences=sentences)
    _store(out, b, list(range(len(b.ids))))  # at its limit every hypothesis has ended
    tok, score, attn = out
    return tok, score, attn if b.fin_attn is not None else None


def beam_search(model, src: Tensor, src_len: Tensor, beam: int, alpha: float,
                max_len: int | Tensor, nbest: int = 1, return_attention: bool = False,
                vocab: Tensor | None = None):
    """Per sentence its `nbest` best (tokens, length-normalised log-prob), best first.

    With `return_attention`, also per sentence the (T, S) attention of its best hypothesis
    (None for a model without attention). `vocab`: the output layer restricted to these ids
    (see the module's docstring).
    """
    if not 1 <= nbest <= beam:
        raise ValueError(f"nbest must be between 1 and the beam size {beam}, got {nbest}")
    _check_vocabulary(vocab)
    with output_subset(model, vocab):
        tokens, scores, attn = _beam(model, src, src_len, beam, alpha, max_len,
                                     return_attention, vocab)
    out: list[list[Hyp]] = []
    for rows, ss in zip(tokens.tolist(), scores.tolist()):
        # -inf only fills slots when the vocabulary is smaller than the beam
        out.append([(_strip(r), s) for r, s in zip(rows[:nbest], ss[:nbest]) if s > NEG_INF])
    if not return_attention:
        return out
    lens, attn = src_len.tolist(), None if attn is None else attn.cpu()
    attns = [None if attn is None else _attention_rows(attn[i, 0], len(h[0][0]), lens[i])
             for i, h in enumerate(out)]
    return out, attns


def translate_batch(model, batch_src: Tensor, batch_src_len: Tensor, dcfg: DecodeConfig,
                    cap: int | None = None,
                    generator: torch.Generator | None = None) -> list[list[Hyp]]:
    """Decode one batch as the recipe says: per sentence `dcfg.nbest` (tokens, score).

    The score is always log P(y|x) / lp(y) with dcfg.alpha, so greedy (beam 1), sampled and
    beam scores read the same. `cap` bounds the output length (e.g. the model's position
    table). With dcfg.sample, tokens are drawn with `generator` (decoding_generator). With
    dcfg.shortlist and a model that carries a shortlist, the output layer is restricted to the
    batch's candidates (the scores are then normalised over them).
    """
    maxlen = max_lengths(batch_src_len, dcfg.max_len_a, dcfg.max_len_b, cap)
    vocab = None
    if dcfg.shortlist and getattr(model, "shortlist", None) is not None:
        vocab = model.shortlist.vocabulary(batch_src, dcfg.shortlist, dcfg.shortlist_frequent)
    if dcfg.beam > 1 and not dcfg.sample:
        return beam_search(model, batch_src, batch_src_len, dcfg.beam, dcfg.alpha, maxlen,
                           dcfg.nbest, vocab=vocab)
    pick = None
    if dcfg.sample:
        if generator is None:
            raise ValueError("sampling needs a generator (decoding_generator)")
        pick = sampler(dcfg.temperature, dcfg.top_k, dcfg.top_p, generator)
    _check_vocabulary(vocab)
    with output_subset(model, vocab):
        tokens, logprob, _ = _greedy(model, batch_src, batch_src_len, maxlen, False, pick, vocab)
    out = [_strip(r) for r in tokens.tolist()]
    return [[(y, lp / length_penalty(len(y) + 1.0, dcfg.alpha))]
            for y, lp in zip(out, logprob.tolist())]


def max_output_len(model) -> int | None:
    """The longest output a model can produce: its position table less the BOS slot."""
    positions = getattr(model, "max_positions", None)
    return None if positions is None else int(positions) - 1
