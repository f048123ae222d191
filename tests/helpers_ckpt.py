"""Helpers for the decoding tests: tiny models of every family, one trained on a toy task, and a
tiny checkpoint (real tokenizer + model) that `nmt translate` / `nmt eval` can load."""
from __future__ import annotations

import gzip
from pathlib import Path

import torch
import torch.nn.functional as F

from nmt import checkpoint
from nmt.batching import collate
from nmt.config import ModelConfig, Recipe, to_dict
from nmt.model import build_model
from nmt.tokenizer import EOS, PAD, Tokenizer

TOY_VOCAB = 16  # ids 4..15 are "words"

FAMILIES = {
    "rnn-bahdanau": ModelConfig(arch="rnn", attention="bahdanau", emb_dim=32, hidden_size=64,
                                enc_layers=1, dec_layers=1, dropout=0.0),
    "rnn-none": ModelConfig(arch="rnn", attention="none", emb_dim=32, hidden_size=64,
                            enc_layers=1, dec_layers=1, dropout=0.0),
    "rnn-luong-general": ModelConfig(arch="rnn", attention="luong-general", rnn_type="lstm",
                                     emb_dim=32, hidden_size=64, enc_layers=1, dec_layers=2,
                                     dropout=0.0),
    "transformer": ModelConfig(arch="transformer", d_model=32, heads=4, ff_dim=64, enc_layers=1,
                               dec_layers=2, dropout=0.0),
}


def tiny_model(family: str, seed: int = 0, vocab: int = TOY_VOCAB):
    torch.manual_seed(seed)
    return build_model(FAMILIES[family], vocab, vocab).eval()


def toy_pairs(n: int, seed: int, lengths=(3, 8)) -> list[tuple[list[int], list[int]]]:
    """Reverse a random sequence: a task every family learns in a few hundred steps."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        L = int(torch.randint(lengths[0], lengths[1] + 1, (1,), generator=g))
        x = torch.randint(4, TOY_VOCAB, (L,), generator=g).tolist()
        out.append((x, x[::-1]))
    return out


def train_toy(family: str, steps: int = 200, seed: int = 0):
    """A model of `family` trained to reverse sequences (~5 s on 2 cores)."""
    model = tiny_model(family, seed).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    pairs = toy_pairs(steps * 32, seed + 1)
    for step in range(steps):
        b = collate(pairs, list(range(step * 32, (step + 1) * 32)))
        logits, _ = model(b.src, b.src_len, b.tgt_in)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), b.tgt_out.flatten(), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def sequence_logprob(model, src, src_len, hyps: list[list[int]]) -> list[float]:
    """log P(y EOS | x) by teacher forcing, independent of the search code."""
    b = collate([([], y) for y in hyps], list(range(len(hyps))))
    with torch.inference_mode():
        logits, _ = model(src, src_len, b.tgt_in)
    lp = logits.float().log_softmax(-1).gather(2, b.tgt_out.unsqueeze(2)).squeeze(2)  # (B, T)
    return lp.masked_fill(b.tgt_out == PAD, 0.0).sum(1).tolist()


def batch_of(seqs: list[list[int]]):
    """(src, src_len) tensors for token lists, EOS appended, PAD-padded."""
    b = collate([(x, []) for x in seqs], list(range(len(seqs))))
    assert (b.src.gather(1, (b.src_len - 1)[:, None]) == EOS).all()
    return b.src, b.src_len


def multi30k_lines(data_dir: Path, split: str, lang: str, n: int) -> list[str]:
    with gzip.open(data_dir / "multi30k" / f"{split}.{lang}.gz", "rt", encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


def make_checkpoint(out_dir: Path, data_dir: Path, arch: str = "transformer",
                    max_positions: int = 64, train_steps: int = 0) -> Path:
    """RUN_DIR/best.pt with a ~300-piece tokenizer trained on 300 Multi30k lines and a tiny
    (untrained unless train_steps) model, written the way training writes checkpoints."""
    src = multi30k_lines(data_dir, "train", "de", 300)
    tgt = multi30k_lines(data_dir, "train", "en", 300)
    recipe = Recipe(name="tiny")
    recipe.tokenizer.vocab_size = 300
    m = recipe.model
    m.arch, m.d_model, m.heads, m.ff_dim, m.enc_layers, m.dec_layers = arch, 32, 4, 64, 1, 1
    m.emb_dim, m.hidden_size, m.dropout, m.max_positions = 32, 64, 0.0, max_positions
    tok = Tokenizer.train(src, tgt, out_dir / "tokenizer", recipe.tokenizer)
    torch.manual_seed(0)
    model = build_model(m, tok.src_vocab_size, tok.tgt_vocab_size)
    if train_steps:
        from nmt.batching import token_batches

        n = max_positions - 1
        pairs = [(x[:n], y[:n]) for x, y in zip(tok.encode_src(src), tok.encode_tgt(tgt))]
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        batches = token_batches([len(x) for x, _ in pairs], [len(y) for _, y in pairs], 1500,
                                0, 0)
        for step in range(train_steps):
            b = collate(pairs, batches[step % len(batches)])
            logits, _ = model(b.src, b.src_len, b.tgt_in)
            loss = F.cross_entropy(logits.flatten(0, 1), b.tgt_out.flatten(), ignore_index=PAD)
            opt.zero_grad()
            loss.backward()
            opt.step()
    path = out_dir / "best.pt"
    checkpoint.save(path, {"recipe": to_dict(recipe), "tokenizer": tok.to_state(),
                           "model": model.state_dict()})
    return path
