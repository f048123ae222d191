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
what its slowest sentence costs on ever fewer rows.

Sampling (for back-translation, and to see what a model believes) runs the greedy loop but draws
each token from the model's distribution reshaped by a temperature T and optionally cut to the
k likeliest tokens (top-k; Fan et al. 2018) and to the nucleus, the smallest set of likeliest
tokens whose probability reaches p (top-p; Holtzman et al. 2020). A seeded generator makes it
reproducible; the score reported is still the model's own log P(y|x) / lp(y).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from nmt.config import DecodeConfig
from nmt.tokenizer import BOS, EOS, PAD

NEG_INF = float("-inf")
Hyp = tuple[list[int], float]


def max_lengths(src_len: Tensor, a: float, b: float, cap: int | None = None) -> Tensor:
    """ceil(a * |x| + b) output tokens per sentence (|x| with EOS), at most `cap`."""
    m = torch.ceil(src_len.double() * a + b - 1e-9).long().clamp(min=0)  # (B,)
    return m.clamp(max=cap) if cap is not None else m


def length_penalty(length: Tensor | float, alpha: float) -> Tensor | float:
    """GNMT length penalty lp(y) = ((5 + |y|) / 6)^alpha, Wu et al. 2016, Sec. 7."""
    return ((5.0 + length) / 6.0) ** alpha


def _lengths(max_len: int | Tensor, batch: int, device) -> Tensor:
    if isinstance(max_len, Tensor):
        return max_len.to(device=device, dtype=torch.long)
    return torch.full((batch,), int(max_len), dtype=torch.long, device=device)


def _valid_log_probs(logp: Tensor, force_eos: Tensor) -> Tensor:
    """PAD and BOS are never outputs; rows at their length limit may only end (EOS keeps its
    real log-probability, so a cut-off hypothesis is scored honestly). Writes into `logp`:
    `step` returns a fresh tensor each time, and a copy per token would cost as much as this."""
    logp = logp.float()
    logp[:, PAD] = NEG_INF
    logp[:, BOS] = NEG_INF
    if bool(force_eos.any()):
        rows = force_eos.nonzero().squeeze(1)
        eos = logp[rows, EOS]
        logp.index_fill_(0, rows, NEG_INF)
        logp[rows, EOS] = eos
    return logp


def _strip(row: list[int]) -> list[int]:
    return row[:row.index(EOS)] if EOS in row else row


def _attention_rows(attn: Tensor, ntok: int, src_len: int) -> Tensor:
    return attn[: ntok + 1, :src_len].cpu()  # (T, S): one row per output token, EOS last


# ----------------------------------------------------------------------------- greedy

@torch.inference_mode()
def _greedy(model, src: Tensor, src_len: Tensor, max_len: int | Tensor, want_attn: bool,
            pick: Callable[[Tensor], Tensor] | None = None):
    """Tokens (B, L+1) ending in EOS, summed log-probs (B,), attention (B, L+1, S) or None.

    `pick(log_probs (n, V)) -> tokens (n,)` chooses each next token (a sampler); None = argmax."""
    B, S = src.shape
    dev = src.device
    maxlen = _lengths(max_len, B, dev)  # (B,)
    L = int(maxlen.max()) if B else 0
    tokens = src.new_full((B, L + 1), PAD)  # (B, L+1)
    logprob = torch.zeros(B, device=dev)  # (B,)
    attn_out = torch.zeros(B, L + 1, S, device=dev) if want_attn else None
    have_attn = False
    state = model.start(model.encode(src, src_len))
    alive = torch.arange(B, device=dev)  # batch positions of the rows still decoding
    prev = src.new_full((B,), BOS)
    for t in range(L + 1):
        logp, state, attn = model.step(prev, state)  # (n, V)
        logp = _valid_log_probs(logp, t >= maxlen[alive])
        if pick is None:
            best, tok = logp.max(dim=-1)  # (n,)
        else:
            tok = pick(logp)  # (n,)
            best = logp.gather(1, tok[:, None]).squeeze(1)
        tokens[alive, t] = tok
        logprob[alive] += best
        if want_attn and attn is not None:
            attn_out[alive, t] = attn.float()
            have_attn = True
        ended = tok == EOS
        if bool(ended.any()):  # drop finished rows: later steps only pay for the rest
            keep = (~ended).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            alive, prev = alive[keep], tok[keep]
            state = model.reorder(state, keep)
        else:
            prev = tok
    return tokens, logprob, (attn_out if have_attn else None)


def greedy(model, src: Tensor, src_len: Tensor, max_len: int | Tensor,
           return_attention: bool = False):
    """Greedy decoding. `max_len`: one limit for all, or (B,) per sentence (see max_lengths).

    Returns per sentence its tokens; with `return_attention`, also per sentence a (T, S) tensor
    (T = tokens + EOS, S = its source length) or None for a model without attention.
    """
    tokens, _, attn = _greedy(model, src, src_len, max_len, return_attention)
    out = [_strip(row) for row in tokens.tolist()]
    if not return_attention:
        return out
    lens = src_len.tolist()
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

@torch.inference_mode()
def _beam(model, src: Tensor, src_len: Tensor, K: int, alpha: float,
          max_len: int | Tensor, want_attn: bool):
    """Finished hypotheses per sentence: tokens (B, K, L+1), scores (B, K) sorted best first,
    attention (B, K, L+1, S) or None."""
    B, S = src.shape
    dev = src.device
    maxlen = _lengths(max_len, B, dev)  # (B,)
    L = int(maxlen.max()) if B else 0
    W = L + 1  # history width: tokens and the final EOS
    out_tok = src.new_full((B, K, W), PAD)
    out_score = torch.full((B, K), NEG_INF, device=dev)
    out_attn = torch.zeros(B, K, W, S, device=dev) if want_attn else None
    if B == 0:
        return out_tok, out_score, out_attn

    state = model.start(model.encode(src, src_len))
    state = model.reorder(state, torch.arange(B, device=dev).repeat_interleave(K))  # (B*K, ...)
    sent = torch.arange(B, device=dev)  # original index of each active sentence
    ml = maxlen
    # Only beam 0 is live at first, so the K copies of a sentence do not yield K equal hyps.
    scores = torch.full((B, K), NEG_INF, device=dev)  # (N, K) summed log-probs, live hyps
    scores[:, 0] = 0.0
    hist = src.new_full((B * K, W), PAD)  # (N*K, W) live token histories
    fin_tok = src.new_full((B, K, W), PAD)  # (N, K, W) finished, best first
    fin_score = torch.full((B, K), NEG_INF, device=dev)  # (N, K) length-normalised
    ahist = fin_attn = None
    prev = src.new_full((B * K,), BOS)
    ranks = torch.arange(2 * K, device=dev)
    for t in range(W):
        N = sent.numel()
        logp, state, attn = model.step(prev, state)  # (N*K, V)
        V = logp.size(-1)
        logp = _valid_log_probs(logp, (t >= ml).repeat_interleave(K))
        cand = (scores.view(-1, 1) + logp).view(N, K * V)  # (N, K*V)
        top, idx = cand.topk(2 * K, dim=1)  # (N, 2K), best first
        tok = idx % V  # (N, 2K)
        row = idx // V + torch.arange(N, device=dev)[:, None] * K  # (N, 2K) parent rows
        cand_hist = hist[row.view(-1)].view(N, 2 * K, W)
        cand_hist[:, :, t] = tok
        if want_attn and attn is not None:
            if ahist is None:
                ahist = torch.zeros(N * K, W, S, device=dev)
                fin_attn = torch.zeros(N, K, W, S, device=dev)
            cand_attn = ahist[row.view(-1)].view(N, 2 * K, W, S)
            cand_attn[:, :, t] = attn.float()[row.view(-1)].view(N, 2 * K, S)

        # Finish the EOS extensions that made the top K; keep the K best of old and new.
        is_eos = tok == EOS
        finishing = is_eos & (ranks < K)
        norm = (top / length_penalty(t + 1.0, alpha)).masked_fill(~finishing, NEG_INF)
        fin_score, pick = torch.cat([fin_score, norm], 1).topk(K, dim=1)  # (N, K)
        fin_tok = torch.cat([fin_tok, cand_hist], 1).gather(1, pick[..., None].expand(-1, -1, W))
        if ahist is not None:
            both = torch.cat([fin_attn, cand_attn], 1)
            fin_attn = both.gather(1, pick[..., None, None].expand(-1, -1, W, S))

        # The K best non-EOS extensions live on.
        scores, keep = top.masked_fill(is_eos, NEG_INF).topk(K, dim=1)  # (N, K)
        parent = row.gather(1, keep)  # (N, K)
        prev = tok.gather(1, keep).view(-1)  # (N*K,)
        hist = cand_hist.gather(1, keep[..., None].expand(-1, -1, W)).view(N * K, W)
        if ahist is not None:
            ahist = cand_attn.gather(1, keep[..., None, None].expand(-1, -1, W, S))
            ahist = ahist.view(N * K, W, S)

        best_live = scores[:, 0] / length_penalty(t + 1.0, alpha)  # (N,)
        done = fin_score[:, -1] >= best_live  # also true once nothing is live (-inf)
        shrunk = bool(done.any())
        if shrunk:
            d = done.nonzero().squeeze(1)
            out_tok[sent[d]] = fin_tok[d]
            out_score[sent[d]] = fin_score[d]
            if ahist is not None:
                out_attn[sent[d]] = fin_attn[d]
            go = (~done).nonzero().squeeze(1)
            if go.numel() == 0:
                break
            sent, ml, scores, fin_tok, fin_score = sent[go], ml[go], scores[go], fin_tok[go], \
                fin_score[go]
            rows = (go[:, None] * K + torch.arange(K, device=dev)).view(-1)  # (N'*K,)
            parent, prev, hist = parent[go], prev[rows], hist[rows]
            if ahist is not None:
                ahist, fin_attn = ahist[rows], fin_attn[go]
        # parents are hypotheses of the same sentence unless finished sentences left the batch
        state = model.reorder(state, parent.view(-1), within_sentence=not shrunk)
    return out_tok, out_score, (out_attn if want_attn and fin_attn is not None else None)


def beam_search(model, src: Tensor, src_len: Tensor, beam: int, alpha: float,
                max_len: int | Tensor, nbest: int = 1, return_attention: bool = False):
    """Per sentence its `nbest` best (tokens, length-normalised log-prob), best first.

    With `return_attention`, also per sentence the (T, S) attention of its best hypothesis
    (None for a model without attention).
    """
    if not 1 <= nbest <= beam:
        raise ValueError(f"nbest must be between 1 and the beam size {beam}, got {nbest}")
    tokens, scores, attn = _beam(model, src, src_len, beam, alpha, max_len, return_attention)
    out: list[list[Hyp]] = []
    for rows, ss in zip(tokens.tolist(), scores.tolist()):
        # -inf only fills slots when the vocabulary is smaller than the beam
        out.append([(_strip(r), s) for r, s in zip(rows[:nbest], ss[:nbest]) if s > NEG_INF])
    if not return_attention:
        return out
    lens = src_len.tolist()
    attns = [None if attn is None else _attention_rows(attn[i, 0], len(h[0][0]), lens[i])
             for i, h in enumerate(out)]
    return out, attns


def translate_batch(model, batch_src: Tensor, batch_src_len: Tensor, dcfg: DecodeConfig,
                    cap: int | None = None,
                    generator: torch.Generator | None = None) -> list[list[Hyp]]:
    """Decode one batch as the recipe says: per sentence `dcfg.nbest` (tokens, score).

    The score is always log P(y|x) / lp(y) with dcfg.alpha, so greedy (beam 1), sampled and
    beam scores read the same. `cap` bounds the output length (e.g. the model's position
    table). With dcfg.sample, tokens are drawn with `generator` (decoding_generator).
    """
    maxlen = max_lengths(batch_src_len, dcfg.max_len_a, dcfg.max_len_b, cap)
    if dcfg.beam > 1 and not dcfg.sample:
        return beam_search(model, batch_src, batch_src_len, dcfg.beam, dcfg.alpha, maxlen,
                           dcfg.nbest)
    pick = None
    if dcfg.sample:
        if generator is None:
            raise ValueError("sampling needs a generator (decoding_generator)")
        pick = sampler(dcfg.temperature, dcfg.top_k, dcfg.top_p, generator)
    tokens, logprob, _ = _greedy(model, batch_src, batch_src_len, maxlen, False, pick)
    out = [_strip(r) for r in tokens.tolist()]
    return [[(y, lp / length_penalty(len(y) + 1.0, dcfg.alpha))]
            for y, lp in zip(out, logprob.tolist())]


def max_output_len(model) -> int | None:
    """The longest output a model can produce: its position table less the BOS slot."""
    positions = getattr(model, "max_positions", None)
    return None if positions is None else int(positions) - 1
