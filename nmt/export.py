"""Exporting a trained Transformer to CTranslate2, and decoding with the exported model.

CTranslate2 (an optional extra: pip install 'nmt[ctranslate2]') is a C++ inference engine for
Transformers. Our Transformer maps onto its TransformerSpec one to one: pre-norm (or post-norm)
layers, ReLU feed-forward, embeddings scaled by sqrt(d_model), a final LayerNorm per stack in
pre-norm, and the position table (sinusoidal or learned) written out as it is, so positions
match whatever their layout. RNN models have no CTranslate2 counterpart and are refused.

The export directory holds CTranslate2's model.bin, config.json and vocabularies, the
SentencePiece model(s) (`nmt.tokenizer` layout) and nmt_export.json (the recipe's decode
settings), so `nmt translate --checkpoint DIR` can decode with it on its own.

Differences in decoding. CTranslate2 ranks finished hypotheses by log P / |y|^alpha rather
than GNMT's ((5 + |y|) / 6)^alpha, so the two agree exactly on the ranking only with alpha = 0;
its length limit is one per batch (the longest a sentence of the batch may get here) where
ours is one per sentence.
"""
from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import shutil
from pathlib import Path

import sentencepiece as spm
import torch

from nmt import checkpoint, layout, rundir
from nmt.atomic import check_parent
from nmt.config import DecodeConfig, recipe_from_dict
from nmt.distributed import decode_batch_tokens
from nmt.errors import NMTError
from nmt.model import build_model
from nmt.special import BOS, EOS, PAD, UNK
from nmt.tokenizer import Tokenizer

MANIFEST = "nmt_export.json"
QUANTIZATIONS = ("float32", "int8", "int8_float32", "int16", "float16", "bfloat16",
                 "int8_float16", "int8_bfloat16")


def _ctranslate2():
    try:
        import ctranslate2
    except ImportError:
        raise NMTError("CTranslate2 is not installed; pip install 'nmt[ctranslate2]' (or pip "
                       "install ctranslate2)") from None
    return ctranslate2


def is_ctranslate2_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


def _pieces(proto: bytes) -> list[str]:
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(proto)
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


def _linear(spec, layer) -> None:
    spec.weight = layer.weight.detach().numpy()
    if layer.bias is not None:
        spec.bias = layer.bias.detach().numpy()


def _norm(spec, norm) -> None:
    spec.gamma, spec.beta = norm.weight.detach().numpy(), norm.bias.detach().numpy()


def _fused(spec, layers) -> None:
    """CTranslate2 projects queries, keys and values (or keys and values) in one matrix."""
    spec.weight = torch.cat([m.weight.detach() for m in layers]).numpy()
    spec.bias = torch.cat([m.bias.detach() for m in layers]).numpy()


def _attention(spec, attn, self_attention: bool) -> None:
    if self_attention:
        _fused(spec.linear[0], [attn.q, attn.k, attn.v])
    else:
        _linear(spec.linear[0], attn.q)
        _fused(spec.linear[1], [attn.k, attn.v])
    _linear(spec.linear[-1], attn.o)


def _layer(spec, layer, cross: bool) -> None:
    """One encoder (or decoder, `cross`) layer; its norms in order: self-attention,
    (cross-attention,) feed-forward (before each sublayer in pre-norm, after in post-norm)."""
    _attention(spec.self_attention, layer.self_attn, True)
    _norm(spec.self_attention.layer_norm, layer.norms[0])
    if cross:
        _attention(spec.attention, layer.cross_attn, False)
        _norm(spec.attention.layer_norm, layer.norms[1])
    _linear(spec.ffn.linear_0, layer.ff[0])
    _linear(spec.ffn.linear_1, layer.ff[2])
    _norm(spec.ffn.layer_norm, layer.norms[-1])


def _spec(model, cfg, tok_state: dict):
    ct2 = _ctranslate2()
    from ctranslate2.specs import transformer_spec

    spec = transformer_spec.TransformerSpec.from_config(
        (cfg.enc_layers, cfg.dec_layers), cfg.heads, pre_norm=cfg.pre_norm,
        no_final_norm=not cfg.pre_norm)
    positions = (model.pe if model.pos is None else model.pos.weight).detach().numpy()
    for side, stack, embed, norm in (("encoder", model.encoder, model.src_embed, model.enc_norm),
                                     ("decoder", model.decoder, model.tgt_embed, model.dec_norm)):
        s = getattr(spec, side)
        s.scale_embeddings = True
        embeddings = s.embeddings[0] if isinstance(s.embeddings, list) else s.embeddings
        embeddings.weight = embed.weight.detach().numpy()
        s.position_encodings.encodings = positions
        if cfg.pre_norm:
            _norm(s.layer_norm, norm)
        for layer_spec, layer in zip(s.layer, stack):
            _layer(layer_spec, layer, cross=side == "decoder")
    _linear(spec.decoder.projection, model.out)
    src = _pieces(tok_state["src"])
    tgt = src if tok_state["joint"] else _pieces(tok_state["tgt"])
    spec.register_source_vocabulary(src)
    spec.register_target_vocabulary(tgt)
    spec.config.unk_token, spec.config.bos_token = tgt[UNK], tgt[BOS]
    spec.config.eos_token, spec.config.decoder_start_token = tgt[EOS], tgt[BOS]
    spec.config.layer_norm_epsilon = model.enc_norm.eps if cfg.pre_norm else \
        model.encoder[0].norms[0].eps
    return ct2, spec


def export_ctranslate2(source: str | Path, out_dir: str | Path, quantization: str = "float32",
                       force: bool = False) -> Path:
    """Write the Transformer of checkpoint `source` (run directory or .pt) to `out_dir`."""
    if quantization not in QUANTIZATIONS:
        raise NMTError(f"--quantization {quantization!r}: use one of {', '.join(QUANTIZATIONS)}")
    ck = checkpoint.load(source)
    recipe = recipe_from_dict(ck["recipe"], where=f"{ck['path']} (recipe)")
    if recipe.model.arch != "transformer":
        raise NMTError(f"{ck['path']}: an RNN model (attention {recipe.model.attention}); "
                       "CTranslate2 runs Transformers only, so only arch: transformer models "
                       "can be exported")
    out_dir = Path(out_dir)
    _check_out(out_dir, Path(ck["path"]), force)
    tok = Tokenizer.from_state(ck["tokenizer"])
    model = build_model(recipe.model, tok.src_vocab_size, tok.tgt_vocab_size, joint=tok.joint)
    checkpoint.load_weights(model, ck["model"], ck["path"])
    ct2, spec = _spec(model.eval(), recipe.model, ck["tokenizer"])

    class _Converter(ct2.converters.Converter):
        def _load(self):
            return spec

    # written beside -o and renamed onto it once complete: a failure (a full disk) leaves
    # neither a partial export nor a half-replaced old one
    tmp = out_dir.parent / f".{out_dir.name}.export-{os.getpid()}"
    try:
        _Converter().convert(str(tmp), quantization=quantization, force=True)
        tok.save(tmp)
        manifest = {"from": str(ck["path"]), "step": layout.checkpoint_step(ck),
                    "quantization": quantization, "max_positions": recipe.model.max_positions,
                    "decode": {k: v for k, v in vars(recipe.decode).items()}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out_dir.is_dir() and any(out_dir.iterdir()):  # --force over an earlier export
            old = out_dir.parent / f".{out_dir.name}.replaced-{os.getpid()}"
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NMTError(f"-o {out_dir}: disk full while writing the export "
                           f"({e.filename or tmp}: {e.strerror}); nothing was left in "
                           f"{out_dir.parent}. Free space, then export again") from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _is_run_dir(d: Path) -> bool:
    """A training run directory: a checkpoint, a lock a training holds, or the lock file beside
    anything a run writes (a `.lock` alone is too common a name: pytest's temporary directories
    have one)."""
    lock = d / layout.LOCK
    return rundir.has_checkpoint(d) or (lock.exists() and (bool(rundir.outputs(d)) or
                                                           _held(lock)))


def _held(lock: Path) -> bool:
    """Whether a process holds the flock training takes on `lock`."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here


def _check_out(out_dir: Path, source: Path, force: bool) -> None:
    """-o is a new directory, an empty one or (with --force) an earlier export; never a file,
    a training run directory, a directory inside one, or one that holds the checkpoint."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NMTError(f"-o {out_dir}: is a file; give a directory for the export")
    check_parent(out_dir, f"-o {out_dir}")
    resolved = out_dir.resolve()
    for d in (resolved, *resolved.parents):
        if _is_run_dir(d):
            raise NMTError(f"-o {out_dir}: {d} is a training run directory; export into a "
                           f"directory of its own, outside any run")
    if resolved in source.resolve().parents:
        raise NMTError(f"-o {out_dir}: it holds the run being exported ({source}); choose "
                       f"another -o")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise NMTError(f"{out_dir} is not empty; choose another -o or pass --force to "
                           "replace it")
        if not (out_dir / MANIFEST).is_file():
            raise NMTError(f"-o {out_dir}: not empty and not an earlier export (no {MANIFEST}); "
                           f"--force replaces only an export, choose another -o")


class CT2Model:
    """An exported model loaded into CTranslate2, decoding lines like prediction._decode."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int = 0):
        ct2 = _ctranslate2()
        path = Path(path)
        self.manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        self.tok = Tokenizer.load(path)
        state = self.tok.to_state()
        self.src_vocab = _pieces(state["src"])
        tgt = self.src_vocab if state["joint"] else _pieces(state["tgt"])
        self.tgt_ids = {p: i for i, p in enumerate(tgt)}
        self.never = [[tgt[PAD]], [tgt[BOS]]]  # never outputs, as search masks them
        self.max_positions = int(self.manifest["max_positions"])
        self.translator = ct2.Translator(str(path), device=device, intra_threads=threads)

    def decode_config(self) -> DecodeConfig:
        return DecodeConfig(**self.manifest["decode"])

    def translate(self, lines: list[str], dcfg: DecodeConfig) -> list[list[tuple[str, float]]]:
        """Per line its n-best (translation, score); an empty line gets [("", 0.0)]. The score
        is CTranslate2's (log P / |y|^alpha)."""
        out: list[list[tuple[str, float]]] = [[("", 0.0)] for _ in lines]
        todo = [i for i, s in enumerate(lines) if s.strip()]
        if not todo:
            return out
        cap = self.max_positions - 1  # room for EOS; longer lines are cut, as nmt cuts them
        ids = self.tok.encode_src([lines[i].strip() for i in todo])
        src = [[self.src_vocab[t] for t in x[:cap]] + [self.src_vocab[EOS]] for x in ids]
        # ours: at most ceil(a * |x| + b) tokens before EOS, CTranslate2's likewise, but one
        # limit per call: sentences are decoded in groups that share theirs
        budget = decode_batch_tokens(dcfg.batch_tokens, self.translator.device)
        limits = [min(math.ceil(dcfg.max_len_a * len(x) + dcfg.max_len_b - 1e-9),
                      self.max_positions - 1) for x in src]
        for limit in sorted(set(limits)):
            group = [j for j, m in enumerate(limits) if m == limit]
            res = self.translator.translate_batch(
                [src[j] for j in group], beam_size=dcfg.beam, length_penalty=dcfg.alpha,
                num_hypotheses=dcfg.nbest, max_decoding_length=limit, return_scores=True,
                max_batch_size=budget, batch_type="tokens",
                suppress_sequences=self.never)
            for j, r in zip(group, res):
                texts = self.tok.decode_tgt([[self.tgt_ids[p] for p in h]
                                             for h in r.hypotheses])
                out[todo[j]] = list(zip(texts, r.scores))
        return out
