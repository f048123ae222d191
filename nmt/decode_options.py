"""Decoding options given with a command, an API call or a serving request: one dataclass, and
the one set of rules that applies it to a checkpoint's decode settings.

`nmt translate` and `nmt eval --checkpoint` (cli.py only collects typer's options into a
DecodeOptions), `Translator.load`/`translate`/`score` (nmt.api) and `nmt serve`'s requests (through
Translator.options) all come here, so an option means the same everywhere and a wrong one is
refused with the same message, which names the command-line option (--beam, --top-p, ...).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Sequence

from nmt.config import DecodeConfig, Recipe, validate
from nmt.errors import NMTError

# each option's name on the command line, in the order `nmt translate --help` lists them;
# --ensemble (which checkpoints decode together, not how: Translator.load's `ensemble`) is not
# a DecodeOptions field but is listed among them where options are refused
FLAGS = {"beam": "--beam", "nbest": "--nbest", "batch_tokens": "--batch-tokens",
         "alpha": "--alpha", "max_len": "--max-len", "sample": "--sample",
         "temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p",
         "seed": "--seed", "ensemble": "--ensemble", "amp": "--amp", "shortlist": "--shortlist",
         "shortlist_frequent": "--shortlist-frequent"}
# options that change only how many lines a batch holds or how many translations a line
# gives, not what a line translates to
NOT_TRANSLATING = ("nbest", "batch_tokens")


def parse_max_len(text: str) -> tuple[float, int]:
    """--max-len N -> (a, b) = (0, N); Rx -> (R, 0); Rx+N -> (R, N): at most a * |x| + b."""
    m = re.fullmatch(r"\s*(?:(\d+(?:\.\d*)?)\s*x\s*(?:\+\s*(\d+))?|(\d+))\s*", str(text))
    if not m:
        raise NMTError(f"--max-len {text!r}: give a number of tokens (80), a ratio of the "
                       "source length (1.5x) or both (1.5x+10)")
    if m.group(3) is not None:
        return 0.0, int(m.group(3))
    return float(m.group(1)), int(m.group(2) or 0)


@dataclass(frozen=True)
class DecodeOptions:
    """Changes to a checkpoint recipe's decode settings (config.DecodeConfig, which documents
    each): None, like sample False, keeps the recipe's value; nbest is always given (1: one
    translation per line)."""
    beam: int | None = None
    nbest: int = 1
    batch_tokens: int | None = None
    alpha: float | None = None
    max_len: str | None = None      # "80" tokens, "1.5x" or "1.5x+10" of the source length
    sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    amp: str | bool | None = None   # auto, bf16, false (a command line's "false" is False)
    shortlist: int | None = None
    shortlist_frequent: int | None = None

    def apply(self, base: DecodeConfig) -> DecodeConfig:
        """`base` with these changes, checked as a recipe's decode section would be (an error
        names the option: `--top-p 2` as decode.top_p, a wrong type as --beam)."""
        sample = self.sample or base.sample
        given = {"--temperature": self.temperature, "--top-k": self.top_k,
                 "--top-p": self.top_p, "--seed": self.seed}
        stray = [k for k, v in given.items() if v is not None]
        if stray and not sample:
            raise NMTError(f"{', '.join(stray)} only apply to sampling; add --sample")
        if sample and (self.beam or 1) > 1:
            raise NMTError(f"--sample draws one translation per line; drop --beam {self.beam}")
        if sample and self.nbest > 1:
            raise NMTError(f"--sample draws one translation per line; drop --nbest {self.nbest}")
        for name, v in (("--beam", self.beam), ("--batch-tokens", self.batch_tokens),
                        ("--nbest", self.nbest)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise NMTError(f"{name} {v!r}: must be a whole number >= 1")
        alpha = self.alpha
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
                                  or not alpha >= 0):
            raise NMTError(f"--alpha {alpha!r}: must be a number >= 0")
        beam = base.beam if self.beam is None else self.beam
        if self.nbest > beam and not sample:
            raise NMTError(f"--nbest {self.nbest} needs a beam at least that wide (beam is "
                           f"{beam}); add --beam {self.nbest}")
        a, b = (base.max_len_a, base.max_len_b) if self.max_len is None else \
            parse_max_len(self.max_len)
        pick = lambda new, old: old if new is None else new  # noqa: E731
        amp = {"false": False, "true": True}.get(self.amp, self.amp) \
            if isinstance(self.amp, str) else self.amp
        dcfg = replace(base, beam=1 if sample else beam, nbest=self.nbest,
                       batch_tokens=pick(self.batch_tokens, base.batch_tokens),
                       alpha=float(pick(alpha, base.alpha)), max_len_a=a, max_len_b=b,
                       sample=sample, temperature=pick(self.temperature, base.temperature),
                       top_k=pick(self.top_k, base.top_k), top_p=pick(self.top_p, base.top_p),
                       seed=pick(self.seed, base.seed), amp=pick(amp, base.amp),
                       shortlist=pick(self.shortlist, base.shortlist),
                       shortlist_frequent=pick(self.shortlist_frequent,
                                               base.shortlist_frequent))
        validate(Recipe(decode=dcfg), where="command line")  # e.g. --top-p 2 names decode.top_p
        return dcfg

    def given(self, ensemble: Sequence = ()) -> list[str]:
        """The options given that change what a line translates to, by their command-line
        names in FLAGS' order, with --ensemble when `ensemble` names checkpoints: what
        `nmt eval --hyp`, which scores files as they are, refuses."""
        set_ = {f.name for f in fields(self) if f.name not in NOT_TRANSLATING
                and getattr(self, f.name) != f.default}  # the default keeps the recipe's
        return [flag for name, flag in FLAGS.items()
                if name in set_ or (name == "ensemble" and ensemble)]

    def for_ctranslate2(self, path: Path, ensemble: Sequence = ()) -> DecodeOptions:
        """The options a CTranslate2 export (`nmt export`) decodes with: beam search alone, in
        the precision it was exported in, so --shortlist, --sample, --ensemble and --amp are
        refused; the sampling settings, which apply only with --sample, are left out."""
        if self.shortlist or self.shortlist_frequent is not None:
            raise NMTError(f"{path} is a CTranslate2 export: --shortlist applies to .pt "
                           "checkpoints; drop it, or translate with the .pt")
        if self.sample or ensemble or self.amp is not None:
            raise NMTError(f"{path} is a CTranslate2 export: it decodes by beam search alone, "
                           "in the precision it was exported in; drop --sample/--ensemble/--amp, "
                           "or translate with the .pt checkpoint")
        return DecodeOptions(beam=self.beam, nbest=self.nbest, batch_tokens=self.batch_tokens,
                             alpha=self.alpha, max_len=self.max_len)
