"""SentencePiece subwords (Kudo & Richardson 2018): unigram LM (Kudo 2018) or BPE (Sennrich et al.
2016), one joint model over both languages by default, or one model per side.

Special ids are fixed here, once, and every model is trained with them, so PAD/UNK/BOS/EOS mean
the same in every vocabulary and the model code never asks the tokenizer.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import sentencepiece as spm

from nmt.config import TokenizerConfig
from nmt.errors import NMTError

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIAL = (PAD, BOS, EOS)  # ids that never reach detokenized text (UNK shows as ⁇)

JOINT_FILE, SRC_FILE, TGT_FILE = "spm.model", "src.model", "tgt.model"


def _train_model(lines: list[str], vocab_size: int, cfg: TokenizerConfig, what: str) -> bytes:
    """Train one SentencePiece model in memory; returns the serialized model proto."""
    lines = [s for s in lines if s.strip()]
    if not lines:
        raise NMTError(f"tokenizer: no non-empty {what} sentences to train on")
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=buf,
            vocab_size=vocab_size, model_type=cfg.model_type,
            character_coverage=cfg.character_coverage,
            pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS,
            num_threads=os.cpu_count() or 1, minloglevel=2)
    except RuntimeError as e:  # e.g. "Vocabulary size too high" on a small corpus
        raise NMTError(f"tokenizer: SentencePiece could not train a {vocab_size}-piece "
                       f"{cfg.model_type} model on {len(lines)} {what} sentences ({e}); "
                       f"try a smaller vocab_size") from None
    return buf.getvalue()


def _processor(proto: bytes, where: str) -> spm.SentencePieceProcessor:
    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(proto)
    except (RuntimeError, OSError) as e:
        raise NMTError(f"{where}: not a SentencePiece model ({e})") from None
    ids = [sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()]
    if ids != [PAD, UNK, BOS, EOS]:
        raise NMTError(f"{where}: special ids pad/unk/bos/eos are {ids}, expected "
                       f"{[PAD, UNK, BOS, EOS]}; rebuild it with `nmt tokenizer build`")
    return sp


class Tokenizer:
    """Source and target SentencePiece models (the same object when joint)."""

    def __init__(self, src: bytes, tgt: bytes | None = None, where: str = "tokenizer"):
        self.joint = tgt is None
        self._protos = (src, tgt)
        self._src = _processor(src, where)
        self._tgt = self._src if tgt is None else _processor(tgt, where)
        self.src_vocab_size = self._src.get_piece_size()
        self.tgt_vocab_size = self._tgt.get_piece_size()

    # ---- building and storing

    @staticmethod
    def train(src_lines: list[str], tgt_lines: list[str], out_dir: Path,
              cfg: TokenizerConfig) -> "Tokenizer":
        """Train on the given sentences and write spm.model, or src.model + tgt.model."""
        if cfg.joint:
            tok = Tokenizer(_train_model(src_lines + tgt_lines, cfg.vocab_size, cfg, "joint"))
        else:
            tok = Tokenizer(_train_model(src_lines, cfg.vocab_size, cfg, "source"),
                            _train_model(tgt_lines, cfg.vocab_size, cfg, "target"))
        tok.save(out_dir)
        return tok

    def save(self, out_dir: Path) -> list[Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        src, tgt = self._protos
        files = {JOINT_FILE: src} if self.joint else {SRC_FILE: src, TGT_FILE: tgt}
        # a stale model of the other layout would shadow this one in load()
        for name in (JOINT_FILE, SRC_FILE, TGT_FILE):
            if name not in files:
                (out_dir / name).unlink(missing_ok=True)
        for name, proto in files.items():
            (out_dir / name).write_bytes(proto)
        return [out_dir / name for name in files]

    @staticmethod
    def load(dir: Path) -> "Tokenizer":
        dir = Path(dir)
        if (dir / JOINT_FILE).is_file():
            return Tokenizer((dir / JOINT_FILE).read_bytes(), where=str(dir / JOINT_FILE))
        if (dir / SRC_FILE).is_file() and (dir / TGT_FILE).is_file():
            return Tokenizer((dir / SRC_FILE).read_bytes(), (dir / TGT_FILE).read_bytes(),
                             where=str(dir))
        raise NMTError(f"{dir}: no tokenizer here (expected {JOINT_FILE}, or {SRC_FILE} and "
                       f"{TGT_FILE}); build one with `nmt tokenizer build`")

    def to_state(self) -> dict:
        src, tgt = self._protos
        return {"joint": self.joint, "src": src, "tgt": tgt}

    @staticmethod
    def from_state(state: dict) -> "Tokenizer":
        return Tokenizer(state["src"], None if state["joint"] else state["tgt"],
                         where="checkpoint tokenizer")

    # ---- using

    def encode_src(self, lines: list[str]) -> list[list[int]]:
        return self._src.encode(lines, out_type=int, num_threads=os.cpu_count() or 1)

    def encode_tgt(self, lines: list[str]) -> list[list[int]]:
        return self._tgt.encode(lines, out_type=int, num_threads=os.cpu_count() or 1)

    def decode_tgt(self, ids: list[list[int]]) -> list[str]:
        for seq in ids:
            for i in seq:
                if not 0 <= i < self.tgt_vocab_size:
                    raise NMTError(f"token id {i} is outside the target vocabulary "
                                   f"(0..{self.tgt_vocab_size - 1})")
        return self._tgt.decode([[i for i in seq if i not in SPECIAL] for seq in ids])

    def src_pieces(self, line: str) -> list[str]:
        return self._src.encode(line, out_type=str)

    def tgt_pieces(self, ids: list[int]) -> list[str]:
        return [self._tgt.id_to_piece(i) for i in ids]
