"""The Transformer (Vaswani et al. 2017, "Attention is all you need").

Pre-norm by default (LayerNorm before each sublayer, one final LayerNorm per stack: trains
without warm-up tricks, Xiong et al. 2020); post-norm (the paper's LayerNorm(x + Sublayer(x)),
Sec. 3.1) as an option. Dropout where the paper puts it (Sec. 5.4): on each sublayer's
output before the residual sum, and on embeddings + positions.

Decoding keeps a cache in the state, per layer: the cross-attention keys/values of the source
(computed once in `start`), and the self-attention keys/values of the positions decoded so far,
in the dtype the layers compute in (bf16 under autocast). Step t attends to t + 1 positions, and
finds them in buffers laid out for it: (B, heads, t + 1, d_head), contiguous, the first t
filled, the last written in place by the step. A beam `reorder` copies the filled positions
anyway and writes them so; a step that no reorder prepared (greedy) copies them once. Laid out
densely, the keys of a step are one batch of small matrices, which the CPU's matrix products
read faster than the same keys inside longer buffers (bench/RESULTS.md, "Decoding").
Two sets of buffers take turns, so the memory is reused rather than new at every step.

Attention weights are computed (by an explicit softmax) only when the caller asks for them.
Otherwise attention runs through F.scaled_dot_product_attention's fused kernels, except in
decoding steps on the CPU, where one query (or a beam's few, sharing a sentence's keys) meets a
few dozen keys: there the explicit matrix products on the dense buffers take less time than the
fused kernel, in float32 and bf16 (bench/log/2026-12-04-transformer-attention-bf16.md).
On CUDA the fused kernels exclude cuDNN's: it builds an execution plan for every new shape, and
every batch (and decoding step) brings new lengths (bench/log/2026-12-04-gpu-h200-check.md).
"""
from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from nmt.config import ModelConfig
from nmt.errors import NMTError
from nmt.seq2seq import OutputLayer, Seq2Seq, embedding, source_mask

KV = tuple[Tensor, Tensor]  # keys, values: (B, heads, length, d_head) each
Buffers = tuple[Tensor, Tensor]  # decoding buffers of keys, values: (B, h, t + 1, dh) each
# the fused attention kernels for CUDA tensors: all but cuDNN's, which torch prefers on Hopper
# but which plans anew for each shape, making every update many times slower
# (bench/log/2026-12-04-gpu-h200-check.md)
CUDA_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
# on a CPU under bf16, attention over at most this many keys runs as explicit products: torch's
# fused CPU kernel took several times their time, forward and backward, at sentence lengths, and
# is faster only from a few hundred keys (float32: fused as fast or faster at every length;
# bench/log/2026-12-04-transformer-attention-bf16.md)
EXPLICIT_MAX_KEYS = 128


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1..head_h) W^O, head_i = Attention(Q W_i^Q, K W_i^K,
    V W_i^V), Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V (Eq. 1 and Sec. 3.2.2).

    Keys and values are projected by `kv()` apart from the queries, so callers can cache them.
    The fast path is F.scaled_dot_product_attention (fused kernels); `need_weights` computes the
    softmax explicitly to return the weights (B, heads, T, S): same outputs, for plots/tests.
    On the CPU a decoding step (`step`), and bf16 attention over short sequences, take the
    explicit path too: it is faster there.
    """

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def split(self, x: Tensor) -> Tensor:
        B, T, d = x.shape
        return x.view(B, T, self.heads, d // self.heads).transpose(1, 2)  # (B, h, T, dh)

    def kv(self, x: Tensor) -> KV:
        return self.split(self.k(x)), self.split(self.v(x))    # (B, h, S, dh) x2

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                causal: bool = False, need_weights: bool = False,
                step: bool = False) -> tuple[Tensor, Tensor | None]:
        """x (B, T, d) queries; k, v (B, h, S, dh); mask (B, 1, 1, S) True where a key may be
        attended; causal: position t sees keys <= t (T == S). Keys, values and mask may also
        have N = B / G rows for one query each (T = 1): G consecutive query rows then share a
        key row (a sentence's beam hypotheses) and attend to it as one block of G queries,
        reading its keys and values once instead of G times."""
        q = self.split(self.q(x))                               # (B, h, T, dh)
        B, h, T, dh = q.shape
        G = B // k.size(0)
        if G > 1:
            q = q.view(k.size(0), G, h, dh).transpose(1, 2)     # (N, h, G, dh)
        w = None
        # on the CPU the explicit products beat the fused kernel for a decoding step, and under
        # bf16 for short sequences (EXPLICIT_MAX_KEYS)
        explicit = q.device.type == "cpu" and (step or (
            q.dtype == torch.bfloat16 and k.size(2) <= EXPLICIT_MAX_KEYS))
        if need_weights or explicit:
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, h, T, S)
            if causal:
                future = torch.ones(q.size(2), k.size(2), dtype=torch.bool,
                                    device=q.device).triu(1)    # (T, S)
                scores = scores.masked_fill(future, float("-inf"))
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            w = scores.float().softmax(-1)                      # float32 under autocast too
            out = w.to(v.dtype) @ v                             # (B, h, T, dh)
            w = w if need_weights else None
        else:
            with sdpa_kernel(CUDA_ATTENTION) if q.is_cuda else nullcontext():
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        if G > 1 and w is not None:
            w = w.transpose(1, 2).reshape(B, h, T, -1)          # (N, h, G, S) -> (B, h, 1, S)
        # (B, h, T, dh) or (N, h, G, dh) -> (B, T, h * dh): rows n * G + g either way
        return self.o(out.transpose(1, 2).reshape(B, T, h * dh)), w  # (B, T, d)


class Sublayers(nn.Module):
    """Residual wiring of Sec. 3.1 with the norm either before (pre) or after (post)."""

    def __init__(self, d: int, n: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(n))
        self.drop = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def inp(self, x: Tensor, i: int) -> Tensor:
        return self.norms[i](x) if self.pre_norm else x

    def add(self, x: Tensor, out: Tensor, i: int) -> Tensor:
        return x + self.drop(out) if self.pre_norm else self.norms[i](x + self.drop(out))


def feed_forward(d: int, ff: int) -> nn.Sequential:
    """FFN(x) = max(0, x W1 + b1) W2 + b2 (Eq. 2)."""
    return nn.Sequential(nn.Linear(d, ff), nn.ReLU(), nn.Linear(ff, d))


class EncoderLayer(Sublayers):
    def __init__(self, d: int, heads: int, ff: int, dropout: float, pre_norm: bool):
        super().__init__(d, 2, dropout, pre_norm)
        self.self_attn, self.ff = MultiHeadAttention(d, heads), feed_forward(d, ff)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        y = self.inp(x, 0)                                      # (B, S, d)
        x = self.add(x, self.self_attn(y, *self.self_attn.kv(y), mask=mask)[0], 0)
        return self.add(x, self.ff(self.inp(x, 1)), 1)


class DecoderLayer(Sublayers):
    def __init__(self, d: int, heads: int, ff: int, dropout: float, pre_norm: bool):
        super().__init__(d, 3, dropout, pre_norm)
        self.self_attn, self.cross_attn = MultiHeadAttention(d, heads), MultiHeadAttention(d, heads)
        self.ff = feed_forward(d, ff)

    def forward(self, x: Tensor, cross: KV, mask: Tensor, cache: Buffers | None = None,
                t: int = 0, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """x (B, T, d). Without a cache: a whole target, causally masked. With a cache (key and
        value buffers (B, h, >= t + T, dh) whose first t positions hold the earlier ones'): the
        next T positions, whose keys/values are written after them (in place), and which see
        every earlier one. Returns the output and the cross-attention weights (B, h, T, S) if
        asked for."""
        y = self.inp(x, 0)
        if cache is None:
            k, v = self.self_attn.kv(y)                         # (B, h, T, dh)
        else:
            n, (keys, values) = t + y.size(1), cache
            keys[:, :, t:n], values[:, :, t:n] = self.self_attn.kv(y)  # (B, h, T, dh) each
            k, v = keys[:, :, :n], values[:, :, :n]            # (B, h, n, dh)
        step = cache is not None
        x = self.add(x, self.self_attn(y, k, v, causal=not step, step=step)[0], 0)
        out, w = self.cross_attn(self.inp(x, 1), *cross, mask=mask, need_weights=need_weights,
                                 step=step)
        x = self.add(x, out, 1)
        return self.add(x, self.ff(self.inp(x, 2)), 2), w


def sinusoids(n: int, d: int) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...) (Sec. 3.5)."""
    pos = torch.arange(n, dtype=torch.float32).unsqueeze(1)    # (n, 1)
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return pe                                                   # (n, d)


class Transformer(Seq2Seq):
    """Encoder-decoder Transformer. Embeddings are scaled by sqrt(d_model) (Sec. 3.4) and start
    at N(0, d^-0.5), so inputs have unit scale while tied output logits start near N(0, 1)."""

    # a beam's hypotheses share their sentence's cross-attention keys and values (one row per
    # sentence, not per hypothesis): K times less to copy and to read at every step
    grouped_source = True

    def __init__(self, cfg: ModelConfig, src_vocab: int, tgt_vocab: int, share_src: bool):
        super().__init__()
        d = cfg.d_model
        self.d, self.max_positions = d, cfg.max_positions
        layer_args = (d, cfg.heads, cfg.ff_dim, cfg.dropout, cfg.pre_norm)
        self.encoder = nn.ModuleList(EncoderLayer(*layer_args) for _ in range(cfg.enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(*layer_args) for _ in range(cfg.dec_layers))
        # post-norm already ends each layer in a LayerNorm; pre-norm needs one on top
        self.enc_norm = nn.LayerNorm(d) if cfg.pre_norm else nn.Identity()
        self.dec_norm = nn.LayerNorm(d) if cfg.pre_norm else nn.Identity()
        self.out = OutputLayer(d, tgt_vocab, bias=False)
        self.drop = nn.Dropout(cfg.dropout)
        for m in self.modules():
            if isinstance(m, nn.Linear):                        # xavier for every linear map
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # embeddings after the loop: when tied, the output matrix *is* the embedding matrix
        self.tgt_embed = embedding(tgt_vocab, d)
        self.src_embed = self.tgt_embed if share_src else embedding(src_vocab, d)
        if cfg.tie_embeddings:
            self.out.weight = self.tgt_embed.weight
        self.pos = embedding(cfg.max_positions, d) if cfg.learned_pos else None
        self.register_buffer("pe", sinusoids(cfg.max_positions, d), persistent=False)

    def embed(self, table: nn.Embedding, tokens: Tensor, offset: int = 0) -> Tensor:
        T = tokens.size(1)
        if offset + T > self.max_positions:
            raise NMTError(f"a sequence of {offset + T} tokens is longer than model.max_positions="
                           f"{self.max_positions}; raise it in the recipe or lower data.max_len")
        pos = torch.arange(offset, offset + T, device=tokens.device)
        pos = self.pe[pos] if self.pos is None else self.pos(pos)  # (T, d)
        return self.drop(table(tokens) * math.sqrt(self.d) + pos)   # (B, T, d)

    def encode(self, src: Tensor, src_len: Tensor) -> dict[str, Tensor]:
        mask = source_mask(src, src_len)                        # (B, S)
        x = self.embed(self.src_embed, src)                     # (B, S, d)
        for layer in self.encoder:
            x = layer(x, mask[:, None, None])
        return {"memory": self.enc_norm(x), "mask": mask}

    def _decode(self, tgt_in: Tensor, enc: dict,
                weights: str) -> tuple[Tensor, list[Tensor | None]]:
        """Whole target at once; the cross-attention weights of `weights`: "none", the "last"
        layer's, or "all" layers' (None for a layer not asked)."""
        x, mask, maps = self.embed(self.tgt_embed, tgt_in), enc["mask"][:, None, None], []
        for i, layer in enumerate(self.decoder):
            want = weights == "all" or weights == "last" and i == len(self.decoder) - 1
            x, w = layer(x, layer.cross_attn.kv(enc["memory"]), mask, need_weights=want)
            maps.append(w)
        return self.out(self.dec_norm(x)), maps                 # (B, T, V)

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor,
                attention: bool = True) -> tuple[Tensor, Tensor | None]:
        """Logits (B, T, V) and, if asked for, the last layer's cross-attention weights with
        the heads averaged (B, T, S)."""
        logits, maps = self._decode(tgt_in, self.encode(src, src_len),
                                    "last" if attention else "none")
        return logits, maps[-1].mean(1) if attention else None

    @torch.no_grad()
    def attention_maps(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> list[Tensor]:
        """Cross-attention weights of every decoder layer, each (B, heads, T, S)."""
        return self._decode(tgt_in, self.encode(src, src_len), "all")[1]

    def start(self, memory: dict[str, Tensor], attention: bool = True) -> dict:
        B = memory["memory"].size(0)
        heads = self.decoder[0].self_attn.heads
        empty = memory["memory"].new_empty(B, heads, 0, self.d // heads)  # no position yet
        return {"mask": memory["mask"],
                "cross": [layer.cross_attn.kv(memory["memory"]) for layer in self.decoder],
                "self": [(empty, empty) for _ in self.decoder], "length": 0,
                "attention": attention}

    def step(self, prev: Tensor, state: dict) -> tuple[Tensor, dict, Tensor | None]:
        t = state["length"]                                     # positions decoded so far
        x = self.embed(self.tgt_embed, prev.unsqueeze(1), t)    # (B, 1, d)
        dtype, buf = _compute_dtype(x), state["self"][0][0]
        if buf.size(2) != t + 1 or buf.dtype != dtype:          # no reorder laid them out
            state = _laid_out(state, None, dtype)
        cache, mask, last = state["self"], state["mask"][:, None, None], len(self.decoder) - 1
        for i, layer in enumerate(self.decoder):
            x, w = layer(x, state["cross"][i], mask, cache=cache[i], t=t,
                         need_weights=state["attention"] and i == last)
        log_probs = self.out(self.dec_norm(x)).squeeze(1).float().log_softmax(-1)  # (B, V)
        attn = None if w is None else w.squeeze(2).mean(1)     # w: (B, h, 1, S) -> (B, S)
        return log_probs, {**state, "self": cache, "length": t + 1}, attn

    def reorder(self, state: dict, index: Tensor, within_sentence: bool = False,
                sentences: Tensor | None = None) -> dict:
        """Seq2Seq.reorder, except that the self-attention buffers are laid out for the next
        step (_laid_out). Given `sentences`, the cross-attention keys and values stay one row
        per sentence (grouped_source)."""
        out = super().reorder({k: v for k, v in state.items() if k not in ("self", "spare")},
                              index, within_sentence, sentences)
        return _laid_out({**out, "self": state["self"], "spare": state.get("spare")}, index)


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the linear layers give here: autocast's while it is on, else x's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def _laid_out(state: dict, index: Tensor | None, dtype: torch.dtype | None = None) -> dict:
    """The state with its self-attention buffers laid out for the next step: the rows `index`
    (all if None) of the t positions decoded so far, in dense buffers (n, h, t + 1, dh) of
    `dtype` (the buffers' own if None) whose last position the step writes. They are written
    into the memory of the buffers the previous lay-out replaced (`spare`: the state passed in
    is consumed, so nothing reads those), so two sets take turns."""
    t = state["length"]
    spare = state.get("spare") or [(None, None)] * len(state["self"])
    cache = [tuple(_dense(buf, index, t, free, dtype or buf.dtype) for buf, free in zip(kv, fr))
             for kv, fr in zip(state["self"], spare)]
    return {**state, "self": cache, "spare": state["self"]}


def _dense(buf: Tensor, index: Tensor | None, t: int, free: Tensor | None,
           dtype: torch.dtype) -> Tensor:
    """Rows `index` (all if None) of buf's first t positions in a dense (n, h, t + 1, dh)
    buffer, inside `free`'s memory when that is large enough (else new memory, with room to
    grow): on a CPU, tens of MB of new memory at every step come from the OS, whose page
    faults cost several times the copy itself (bench/RESULTS.md, "Decoding")."""
    B, h, _, dh = buf.shape
    shape = (B if index is None else index.numel(), h, t + 1, dh)
    size = math.prod(shape)
    if free is not None and free.dtype == dtype \
            and free.untyped_storage().nbytes() >= size * free.element_size():
        new = free.new_empty(0).set_(free.untyped_storage(), 0, shape)  # (n, h, t + 1, dh)
    else:
        new = buf.new_empty(2 * size, dtype=dtype)[:size].view(shape)  # room for later steps
    if index is None:
        new[:, :, :t] = buf[:, :, :t]
    else:
        torch.index_select(buf[:, :, :t], 0, index, out=new[:, :, :t])
    return new
