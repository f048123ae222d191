"""The Python API: use a trained model, train one, run a comparison, from Python.

    >>> from nmt import Translator
    >>> t = Translator.load("runs/bahdanau")              # a run directory (its best.pt) or a .pt
    >>> t.translate(["Ein Mann fährt Fahrrad."], beam=5)
    ['A man is riding a bike.']
    >>> src, out, weights = t.translate_with_attention("Ein Mann fährt Fahrrad.")
    >>> weights.shape                                     # RNN: (T, S); Transformer: (L, H, T, S)
    >>> t.score(["Ein Mann fährt Fahrrad."], ["A man rides a bike."])   # {'bleu': .., 'chrf': ..}

    >>> from nmt import train
    >>> summary = train("recipes/smoke.yaml", out="runs/smoke-t", sets=["train.max_steps=50"])
    >>> from nmt.api import compare
    >>> results = compare("recipes/smoke.yaml", out="runs/smoke")

`Translator.translate` gives what `nmt translate` writes for the same lines and options (the
same code decodes both: translate_cmd goes through `DecodeOptions` and `Translator`).

Why `nmt.api.compare` and not `nmt.compare`: `nmt.compare` is the subpackage nmt/compare/
(what `nmt compare` runs). Python sets a package attribute to a submodule as soon as anything
imports it, so a function `nmt.compare` would be replaced by the module the first time any code
ran `import nmt.compare`. `nmt.Translator` and `nmt.train` have no such clash (the training
module is nmt/training.py) and are exported lazily: `import nmt` stays light (no torch).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import torch

from nmt.checkpoint import load_for_inference
from nmt import compare as comparison  # the module; `compare` below is the entry point
from nmt.config import DecodeConfig, load_recipe, Recipe, validate
from nmt.decode_options import DecodeOptions
from nmt.distributed import resolve_device
from nmt.ensemble import load_ensemble
from nmt.errors import NMTError
from nmt.evaluation import metrics, resolve_tokenize, score, translate_and_score
from nmt.export import is_ctranslate2_dir
from nmt.prediction import _one_line, decoding_precision, eval_mode, source_cap, translate_lines
from nmt.search import decoding_generator, max_output_len, translate_batch
from nmt.seq2seq import count_parameters
from nmt.shortlist import use_shortlist
from nmt.special import BOS, EOS
from nmt.training import train as train_run

__all__ = ["Translator", "Attention", "decode_options", "train", "compare"]

# splits one text into the lines translated one by one (a pasted paragraph keeps its lines)
_NEWLINES = re.compile(r"\r\n|\r|\n")


def decode_options(base: DecodeConfig, **changes) -> DecodeConfig:
    """`base` (a checkpoint recipe's decode settings) with the given changes (the fields of
    nmt.decode_options.DecodeOptions, by name: beam, alpha, max_len, sample, ...; None keeps
    the recipe's), checked as a recipe's would be: DecodeOptions(**changes).apply(base), the
    rules `nmt translate`, `nmt eval` and `nmt serve` apply too."""
    return DecodeOptions(**changes).apply(base)


@dataclass
class Attention:
    """One sentence's translation with the attention that produced it. Unpacks as
    `source, target, weights = ...`.

    source: the source pieces (with "</s>"); target: the output pieces (with "</s>");
    weights: (T, S) for an RNN with attention, (L, H, T, S) for a Transformer (every decoder
    layer's cross-attention, every head; `.mean(1)` is each layer's head average), None for an
    RNN without attention. Row t is what output piece t attends to; each row sums to 1.
    translation: the detokenised output, what `translate` gives for the same text and options.
    """
    source: list[str]
    target: list[str]
    weights: torch.Tensor | None
    translation: str

    def __iter__(self) -> Iterator:
        return iter((self.source, self.target, self.weights))


class Translator:
    """A trained model loaded once, ready to translate many times (CPU or GPU).

        >>> t = Translator.load("runs/transformer", device="cpu", beam=5, alpha=0.6)
        >>> t.translate(["Zwei Hunde spielen im Schnee.", ""])   # one output per input
        ['Two dogs are playing in the snow.', '']

    Keyword options are the fields of nmt.decode_options.DecodeOptions (beam, alpha, max_len,
    batch_tokens, sample, temperature, top_k, top_p, seed, amp, shortlist, shortlist_frequent)
    and mean what `nmt translate`'s options mean; given to `load` they become this
    Translator's defaults, given to a call they change that call only.
    """

    def __init__(self, model, tok, recipe: Recipe, device: torch.device,
                 decode: DecodeConfig, path: Path | None = None, ensemble: bool = False):
        self.model, self.tok, self.recipe, self.device = model, tok, recipe, device
        self.decode, self.path, self.ensemble = decode, path, ensemble

    @classmethod
    def load(cls, path: str | Path, device: str = "auto",
             ensemble: Sequence[str | Path] = (), **decode) -> "Translator":
        """Load a run directory (its best.pt) or a .pt checkpoint; `ensemble`: more
        checkpoints decoded together with it (same tokenizer). NMTError names what is wrong."""
        ensemble = [Path(p) for p in ensemble]
        for p in [Path(path), *ensemble]:
            if is_ctranslate2_dir(p):
                raise NMTError(f"{p} is a CTranslate2 export: only `nmt translate --checkpoint "
                               f"{p}` decodes it (score its output with nmt eval --hyp), or use "
                               f"the .pt it was exported from")
        dev = resolve_device(device)
        if ensemble:
            model, tok, recipe = load_ensemble([Path(path), *ensemble], dev)
        else:
            model, tok, recipe = load_for_inference(path, dev)
        return cls(model, tok, recipe, dev, DecodeOptions(**decode).apply(recipe.decode),
                   Path(path), bool(ensemble))

    # ---- what the model is
    @property
    def family(self) -> str:
        """"transformer" or "rnn"."""
        return self.recipe.model.arch

    @property
    def attention_kind(self) -> str:
        """The RNN's attention (none, bahdanau, luong-dot, ...), or "multi-head" for a
        Transformer."""
        return "multi-head" if self.family == "transformer" else self.recipe.model.attention

    @property
    def params(self) -> int:
        return count_parameters(self.model)

    def options(self, **decode) -> DecodeConfig:
        """This Translator's decode settings with a call's changes (checked)."""
        return DecodeOptions(**decode).apply(self.decode) if decode else self.decode

    # ---- translating
    def translate(self, texts: Sequence[str], progress: bool = False, **decode) -> list[str]:
        """One translation per text, in order (an empty text gives ""). A text holding
        several lines is translated line by line and its translations joined with "\\n", so
        a pasted paragraph keeps its lines and the output count stays the input count."""
        if isinstance(texts, str):
            raise NMTError("translate takes a list of sentences; for one, pass [text]")

        dcfg = self.options(**decode)
        self._shortlist(dcfg)
        lines, spans = [], []
        for text in texts:
            parts = _NEWLINES.split(text)
            spans.append((len(lines), len(parts)))
            lines += parts
        out = translate_lines(self.model, self.tok, lines, dcfg, self.device, progress=progress)
        return ["\n".join(out[i:i + n]) for i, n in spans]

    def _shortlist(self, dcfg: DecodeConfig) -> None:
        """Load (or build, once) the run's vocabulary shortlist when `dcfg` asks for one."""
        if dcfg.shortlist and getattr(self.model, "shortlist", None) is None:
            use_shortlist(self.model, self.path, self.tok, self.recipe, dcfg)

    @torch.inference_mode()
    def translate_with_attention(self, text: str, **decode) -> Attention:
        """Translate one sentence (the same search and output as `translate`) and give the
        attention of that output, computed by teacher forcing it through the model in float32
        (see `Attention` for the shapes). Newlines in `text` are read as spaces."""
        if self.ensemble:
            raise NMTError("an ensemble has no single attention to show; load one checkpoint")
        dcfg = replace(self.options(**decode), nbest=1)
        text = " ".join(_NEWLINES.split(text)).strip()
        cap = source_cap(self.model) - 1
        ids = self.tok.encode_src([text])[0][:cap] + [EOS] if text else [EOS]
        src = torch.tensor([ids], device=self.device)                       # (1, S)
        src_len = torch.tensor([len(ids)])                                  # (1,) on the CPU
        out_ids: list[int] = []
        if text:
            with eval_mode(self.model), decoding_precision(self.device, dcfg.amp):
                hyps = translate_batch(self.model, src, src_len, dcfg,
                                       max_output_len(self.model),
                                       decoding_generator(dcfg, self.device))
            out_ids = hyps[0][0][0]
        tgt_in = torch.tensor([[BOS] + out_ids], device=self.device)        # (1, T)
        with eval_mode(self.model), decoding_precision(self.device):
            if hasattr(self.model, "attention_maps"):
                layers = self.model.attention_maps(src, src_len.to(self.device), tgt_in)
                weights = torch.stack([a[0] for a in layers]).float().cpu()  # (L, H, T, S)
            else:
                _, attn = self.model(src, src_len.to(self.device), tgt_in)   # (1, T, S)
                weights = None if attn is None else attn[0].float().cpu()
        pieces = self.tok.src_pieces(text)[:cap] if text else []
        return Attention(source=pieces + ["</s>"],
                         target=self.tok.tgt_pieces(out_ids) + ["</s>"], weights=weights,
                         translation=_one_line(self.tok.decode_tgt([out_ids])[0]))

    def score(self, src: Sequence[str], refs: Sequence[str] | Sequence[Sequence[str]],
              tokenize: str = "13a", lowercase: bool = False, **decode) -> dict:
        """Translate `src` and score it with sacreBLEU against `refs` (one list of reference
        lines, or several such lists): {"bleu", "chrf", "ter", "signatures",
        "translations"}, as `nmt eval --hyp` scores a file of these translations."""
        refs = [list(refs)] if refs and isinstance(refs[0], str) else [list(r) for r in refs]
        for r in refs:
            if len(r) != len(src):
                raise NMTError(f"score: {len(src)} source sentences but {len(r)} references; "
                               "they must be aligned")
        hyps = self.translate(list(src), **decode)
        return {**score(hyps, refs, tokenize, lowercase), "translations": hyps}

    def evaluate(self, src: list[str], refs: list[list[str]], options: DecodeOptions,
                 tokenize: str = "auto", tgt_lang: str = "", lowercase: bool = False,
                 progress: bool = False) -> dict:
        """`nmt eval --checkpoint`: `src` translated with the checkpoint's decode settings and
        `options`, and the teacher-forced perplexity of the first reference stream. The BLEU
        tokenizer `auto` is the recipe's eval.tokenize for `tgt_lang` (default: the recipe's
        target language), and the recipe's eval.lowercase applies too. Returns {"tokenize",
        "lowercase", "translations", "beam", "nll", "ppl", "decode": the settings that decided
        the translations}; scoring them against the references is the caller's
        (evaluation.score_systems, with any other systems' files)."""
        if tokenize == "auto":
            tokenize = resolve_tokenize(self.recipe.eval.tokenize,
                                        tgt_lang or self.recipe.data.tgt_lang)
            lowercase = lowercase or self.recipe.eval.lowercase
        metrics(tokenize, lowercase)  # a package the tokenizer lacks: an error before decoding
        dcfg = options.apply(self.decode)
        self._shortlist(dcfg)
        hyps, tf = translate_and_score(self.model, self.tok, src, refs, dcfg, self.device,
                                       progress=progress)
        decided = {k: v for k, v in asdict(dcfg).items()
                   if k not in ("beam", "nbest", "batch_tokens")}  # beam is in tf; the others group
        return {"tokenize": tokenize, "lowercase": lowercase, "translations": hyps, **tf,
                "decode": decided}


def _recipe(recipe: str | Path | Recipe, sets: Sequence[str]) -> Recipe:
    if isinstance(recipe, Recipe):
        if sets:
            raise NMTError("sets= changes a recipe file as it is read; with a Recipe object, "
                           "change its fields instead")
        return validate(recipe, where=f"recipe {recipe.name or '(object)'}")
    return load_recipe(recipe, list(sets))


def train(recipe: str | Path | Recipe | None = None, out: str | Path | None = None, *,
          sets: Sequence[str] = (), resume: bool = False, overwrite: bool = False,
          quiet: bool = True, device: str | None = None) -> dict:
    """Train a recipe (a YAML path or a `Recipe`) into `out` (default runs/<recipe name>), as
    `nmt train` does; returns the run's summary: {"run_dir", "best_bleu", "steps", "epochs",
    "time", "train_time", "tokens_per_s", "params", "stopped", "interrupted"}.

        >>> from nmt import train
        >>> s = train("recipes/smoke.yaml", out="runs/t", sets=["train.max_steps=100"])
        >>> Translator.load(s["run_dir"]).translate(["Ein Hund."])
        >>> train(out="runs/t", resume=True, sets=["train.max_steps=200"])   # continue it
    """
    sets = list(sets) + ([f"train.device={device}"] if device else [])
    if resume:  # the run's own recipe with `sets`, read from its last.pt under its lock
        if out is None:
            raise NMTError("resume=True needs out=RUN_DIR: the run to continue")
        return train_run(None, Path(out), resume=True, overwrite=overwrite, quiet=quiet,
                         overrides=sets)
    if recipe is None:
        raise NMTError("give a recipe (a YAML path or a Recipe) to train, or resume=True with "
                       "out=RUN_DIR")
    r = _recipe(recipe, sets)
    out = Path(out) if out is not None else Path("runs") / r.name
    return train_run(r, out, overwrite=overwrite, quiet=quiet)


def compare(recipe, out: str | Path | None = None, *, sets: Sequence[str] = (),
            only: Sequence[str] = (), device: str = "auto", quiet: bool = True,
            retrain: bool = False, seeds: int | None = None, jobs: int = 1) -> dict:
    """Run a comparison (a YAML path or a loaded `nmt.compare.Comparison`) into `out`
    (default runs/<its name>), as `nmt compare` does, and return what it writes to
    results.json: per system its summary, test scores and curve, the significance tests.

    This is `nmt.api.compare`, not `nmt.compare`: that name is the subpackage nmt/compare/,
    which replaces any package attribute of the same name once it is imported.

        >>> from nmt.api import compare
        >>> r = compare("recipes/smoke.yaml", out="runs/smoke")
        >>> {n: s["tests"]["test_2016_flickr"]["bleu"] for n, s in r["systems"].items()}
    """
    if isinstance(recipe, comparison.Comparison):
        if sets or seeds is not None:
            raise NMTError("sets= and seeds= apply when reading a comparison file; with a "
                           "Comparison object, change it instead")
        cmp = recipe
    else:
        cmp = comparison.load_comparison(recipe, list(sets), seeds=seeds)
    return comparison.run(cmp, Path(out) if out is not None else Path("runs") / cmp.name,
                          only=list(only), device=device, quiet=quiet, retrain=retrain, jobs=jobs)
