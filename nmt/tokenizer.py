"""SentencePiece subwords (Kudo & Richardson 2018): unigram LM (Kudo 2018) or BPE (Sennrich et al.
2016), one joint model over both languages by default, or one model per side.

Special ids are fixed once (nmt/special.py) and every model is trained with them, so
PAD/UNK/BOS/EOS mean the same in every vocabulary and the model code never asks the tokenizer.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import sentencepiece as spm

from nmt.config import TokenizerConfig
from nmt.errors import NMTError
from nmt.special import BOS, EOS, PAD, SPECIAL, UNK  # also imported from here by export, tests

JOINT_FILE, SRC_FILE, TGT_FILE = "spm.model", "src.model", "tgt.model"
INFO_FILE = "tokenizer.json"  # what was built: pieces per model (asked and built), sample, coverage


# scripts whose many rare characters SentencePiece's own advice is to leave partly to <unk>
# (character_coverage 0.9995 for Japanese and Chinese): Han, kana, Hangul
CJK = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0xAC00, 0xD7AF),
       (0x1100, 0x11FF), (0x20000, 0x2FA1F))
CJK_COVERAGE = 0.9995
SAMPLE_SEED = 0  # the sentences SentencePiece trains on are the same for a given corpus
NOT_CJK = re.compile("[^" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in CJK) + "]+")
NOT_LETTER = re.compile(r"[\W\d_]+")


def coverage_for(lines: list[str]) -> float:
    """character_coverage `auto`: 0.9995 when CJK characters (Han, kana, Hangul) make up more
    than a tenth of the letters of these sentences, else 1.0 (Latin, Cyrillic, Greek, Arabic...:
    alphabets small enough to keep every character)."""
    text = "\n".join(lines[:5000])  # a prefix says which script a corpus is in
    letters, cjk = len(NOT_LETTER.sub("", text)), len(NOT_CJK.sub("", text))
    return CJK_COVERAGE if letters and cjk > letters / 10 else 1.0


def sample(lines: list[str], k: int) -> list[str]:
    """At most k of the non-empty lines, drawn without replacement with a fixed seed and kept
    in corpus order; all of them (the same list) when there are no more than k (k = 0: all)."""
    lines = [s for s in lines if s.strip()]
    if not k or len(lines) <= k:
        return lines
    pick = np.sort(np.random.default_rng(SAMPLE_SEED).choice(len(lines), k, replace=False))
    return [lines[i] for i in pick]


def _spm_train(lines: list[str], vocab_size: int, cfg: TokenizerConfig, coverage: float,
               **extra) -> bytes:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf,
        vocab_size=vocab_size, model_type=cfg.model_type, character_coverage=coverage,
        pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS,
        num_threads=os.cpu_count() or 1, minloglevel=2, **extra)
    return buf.getvalue()


def _train_model(lines: list[str], vocab_size: int, cfg: TokenizerConfig, what: str,
                 notes: list[str] | None = None, info: dict | None = None) -> bytes:
    """Train one SentencePiece model in memory; returns the serialized model proto.

    vocab_size is an upper bound: where the corpus allows fewer pieces, the model is built at
    the size SentencePiece can reach (unigram: its soft limit; bpe: a retry at the size it
    reports) and a line saying so goes to `notes`. `info` receives what was built."""
    total = sum(1 for s in lines if s.strip())
    lines = sample(lines, cfg.sample_sentences)
    if not lines:
        raise NMTError(f"tokenizer: no non-empty {what} sentences to train on")
    coverage = (coverage_for(lines) if cfg.character_coverage == "auto"
                else float(cfg.character_coverage))
    where = (f"{len(lines):,} {what} sentences" if len(lines) == total else
             f"{len(lines):,} of {total:,} {what} sentences (tokenizer.sample_sentences)")
    try:
        try:
            proto = _spm_train(lines, vocab_size, cfg, coverage)
        except RuntimeError as e:
            m = re.search(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)",
                          str(e))
            if not m:
                raise
            most = int(m.group(1))
            # the first try keeps the model byte-identical to one trained before the bound
            # existed whenever the corpus allows the full size
            proto = (_spm_train(lines, vocab_size, cfg, coverage, hard_vocab_limit=False)
                     if cfg.model_type == "unigram" else
                     _spm_train(lines, most, cfg, coverage))
            built = _size(proto)
            crs = (" (its sentences hold carriage returns: a file with CR-only line endings "
                   "reads as one long line; convert it to LF line endings)"
                   if any("\r" in s for s in lines) else "")
            if notes is not None:
                notes.append(f"tokenizer: built a {built:,}-piece {what} {cfg.model_type} model, "
                             f"not {vocab_size:,}: {where} allow no more{crs}")
    except RuntimeError as e:
        m = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", str(e))
        if m:
            raise NMTError(f"tokenizer.vocab_size: {vocab_size} pieces cannot hold the "
                           f"{int(m.group(2)) - 4} distinct characters (and 4 special pieces) "
                           f"of {where}; set a larger vocab_size (at least {m.group(2)}), or "
                           f"a lower tokenizer.character_coverage") from None
        raise NMTError(f"tokenizer: SentencePiece could not train a {vocab_size}-piece "
                       f"{cfg.model_type} model on {where} ({e})") from None
    if info is not None:
        info[what] = {"vocab_size": _size(proto), "asked": vocab_size, "sentences": len(lines),
                      "of": total, "character_coverage": coverage}
    return proto


def describe(info: dict) -> str:
    """One line per model of tokenizer.json: pieces built (and asked for), the sentences it was
    trained on, the character coverage; then any note."""
    lines = []
    for what, m in info.get("models", {}).items():
        asked = f" (asked for {m['asked']:,})" if m["asked"] != m["vocab_size"] else ""
        sampled = f" of {m['of']:,}" if m["of"] != m["sentences"] else ""
        lines.append(f"tokenizer {what}: {m['vocab_size']:,} pieces{asked}, trained on "
                     f"{m['sentences']:,}{sampled} sentences, character coverage "
                     f"{m['character_coverage']:g}")
    return "\n".join(lines + list(info.get("notes", [])))


def _size(proto: bytes) -> int:
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(proto)
    return sp.get_piece_size()


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
        self.notes: list[str] = []   # what training built other than asked (Tokenizer.train)
        self.info: dict | None = None  # tokenizer.json: set by train, read by load

    # ---- building and storing

    @staticmethod
    def train(src_lines: list[str], tgt_lines: list[str], out_dir: Path,
              cfg: TokenizerConfig, log=None) -> "Tokenizer":
        """Train on the given sentences and write spm.model, or src.model + tgt.model, with
        tokenizer.json (what was built). Each line of `notes` (a smaller vocabulary than asked)
        also goes to `log` (a callable) when given."""
        notes: list[str] = []
        info: dict = {}
        if cfg.joint:
            tok = Tokenizer(_train_model(src_lines + tgt_lines, cfg.vocab_size, cfg, "joint",
                                         notes, info))
        else:
            tok = Tokenizer(_train_model(src_lines, cfg.vocab_size, cfg, "source", notes, info),
                            _train_model(tgt_lines, cfg.vocab_size, cfg, "target", notes, info))
        tok.notes, tok.info = notes, {"models": info, "notes": notes}
        tok.save(out_dir)
        for line in notes if log is not None else ():
            log(line)
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
        if self.info is not None:
            (out_dir / INFO_FILE).write_text(json.dumps(self.info, indent=2))
        else:  # a tokenizer copied from elsewhere: no record of how it was built
            (out_dir / INFO_FILE).unlink(missing_ok=True)
        return [out_dir / name for name in files]

    @staticmethod
    def load(dir: Path) -> "Tokenizer":
        dir = Path(dir)
        if (dir / JOINT_FILE).is_file():
            tok = Tokenizer((dir / JOINT_FILE).read_bytes(), where=str(dir / JOINT_FILE))
        elif (dir / SRC_FILE).is_file() and (dir / TGT_FILE).is_file():
            tok = Tokenizer((dir / SRC_FILE).read_bytes(), (dir / TGT_FILE).read_bytes(),
                            where=str(dir))
        else:
            tok = None
        if tok is not None:
            try:
                tok.info = json.loads((dir / INFO_FILE).read_text())
                tok.notes = list(tok.info.get("notes", []))
            except (OSError, ValueError, AttributeError):
                pass  # built before tokenizer.json existed, or copied without it
            return tok
        raise NMTError(f"{dir}: no tokenizer here (expected {JOINT_FILE}, or {SRC_FILE} and "
                       f"{TGT_FILE}); build one with `nmt tokenizer build`")

    def fingerprint(self) -> str:
        """sha256 of the model(s): what an encoded corpus was encoded with."""
        h = hashlib.sha256()
        for proto in self._protos:
            h.update(b"-" if proto is None else hashlib.sha256(proto).digest())
        return h.hexdigest()

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
