"""What a comparison directory may reuse: whether its shared tokenizer, a trained system or a
decoded test set is what the comparison asks for now, and if not, what changed.

Nothing is reused unless it is what the comparison asks for now: the tokenizer only when its
settings and training data are the same, a trained system only when its resolved recipe (all but
decoding, test sets and device) equals the one it was trained with, a hypothesis file only when
it was decoded from the same source lines with the same decoding settings. eval (the BLEU
tokenizer, docs/scoring.md) counts as training, since validation BLEU chose best.pt and when to
stop. Records written before a field existed count that field at the value it had then, so that
finished comparisons stay reusable.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from nmt import identity, layout
from nmt.config import DecodeConfig, Recipe, read_yaml, recipe_from_dict, to_dict
from nmt.data import held_out, load_split, read_lines, split_paths
from nmt.errors import NMTError
from nmt.evaluation import resolve_tokenize
from nmt.rundir import flat

# recipe fields that do not change what training computes: a finished system is reused across
# changes to them (decoding and test sets are redone as needed)
NOT_TRAINING = ("name", "decode.", "data.test", "data.max_test_pairs", "train.device",
                "train.threads", "train.tensorboard", "train.progress_every",
                "train.progress_seconds", "train.cuda_graphs")
# decode fields whose default changed since they were added, at their value before them
DECODED_BEFORE = {"amp": False}
# decode fields that change how fast a test set is decoded, not its translations: a hypothesis
# file is reused across them
NOT_DECODING = ("batch_tokens",)
# fields the shared tokenizer is built from
TOKENIZER_KEYS = ("tokenizer.", "data.source", "data.path", "data.hf_config", "data.src_lang",
                  "data.tgt_lang", "data.src_field", "data.tgt_field", "data.train",
                  "data.src_file", "data.tgt_file", "data.header", "data.holdout",
                  "data.max_train_pairs")


def _pick(r: Recipe | dict, keep) -> dict:
    """The flattened recipe fields for which keep(key) holds. data.path is compared as an
    absolute path (a run records it so; the comparison's recipe may give it relative)."""
    got = {k: v for k, v in flat(r if isinstance(r, dict) else to_dict(r)).items() if keep(k)}
    if got.get("data.path") and Path(got["data.path"]).exists():
        got["data.path"] = os.path.abspath(got["data.path"])
    return got


def training_key(r: Recipe | dict) -> dict:
    """The fields of r that decide what training computes (all but NOT_TRAINING): a trained
    system is reused only for the same key."""
    key = _pick(r, lambda k: not k.startswith(NOT_TRAINING))
    # validation scores with the tokenizer `auto` stands for: the same tokenizer named outright
    # is the same training
    if "eval.tokenize" in key:
        key["eval.tokenize"] = resolve_tokenize(key["eval.tokenize"], key["data.tgt_lang"])
    return key


def tokenizer_key(r: Recipe | dict) -> dict:
    """The fields of r the shared tokenizer is built from (TOKENIZER_KEYS)."""
    return _pick(r, lambda k: k.startswith(TOKENIZER_KEYS))


def _before_auto(old: dict, new: dict) -> dict:
    """old (what was built or trained) as the fields added since would have recorded it: a
    record without tokenizer.sample_sentences trained on every sentence, and its
    character_coverage 1.0 is what `auto` chooses for the Latin-script corpora nmt handled then;
    both count as what is asked now, so that finished comparisons stay reusable."""
    old = dict(old)
    if "tokenizer.sample_sentences" not in old and "tokenizer.sample_sentences" in new:
        old["tokenizer.sample_sentences"] = new["tokenizer.sample_sentences"]
        if old.get("tokenizer.character_coverage") == 1.0 \
                and new.get("tokenizer.character_coverage") == "auto":
            old["tokenizer.character_coverage"] = "auto"
    return old


def _changes(old: dict, new: dict) -> str:
    old = _before_auto(old, new)
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return "; ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys)


def stale_tokenizer(tok_dir: Path, r: Recipe) -> str | None:
    """Why the shared tokenizer in tok_dir is not the one r asks for (None: it is, or none)."""
    settings = tok_dir / layout.TOKENIZER_SETTINGS
    if not any(tok_dir.glob("*.model")):
        return None
    if settings.is_file():
        built = json.loads(settings.read_text())
    else:  # written before settings.json existed: a system's resolved recipe records them
        trained = sorted(layout.ComparisonDir(tok_dir.parent).systems.glob(f"*/{layout.RECIPE}"))
        if not trained:
            return "it was built without a record of its settings"
        built = tokenizer_key(read_yaml(trained[0]))
        settings.write_text(json.dumps(built, indent=2))
    # a field added since it was built counts at its default, which is what it was built with
    return _changes(tokenizer_key(Recipe()) | built, tokenizer_key(r)) or \
        _data_changed(tok_dir, r, ("train",))


def _data_identity(dc, split: str) -> dict:
    """The content identity of a split of dc as it is now: of its files (their digests are
    remembered, nmt/identity.py), or of its text where it has none (a hub dataset)."""
    paths = split_paths(dc, split)
    if paths:
        return identity.of_files(paths)
    limit = dc.max_train_pairs if split == dc.train else dc.max_valid_pairs
    return identity.of_corpus(load_split(dc, split, limit=limit))


def _data_changed(d: Path, r: Recipe, splits=("train", "valid")) -> str | None:
    """"data changed: train.en" when the data recorded in d (data.json: what a run or the
    shared tokenizer was made from) differs from r's now; None when it is the same, or when d
    has no record (made before data.json existed)."""
    try:
        recorded = json.loads((d / layout.DATA_RECORD).read_text())
    except (OSError, ValueError):
        return None
    names = {"train": r.data.train, "valid": r.data.valid}
    for split in splits:
        if split in recorded:
            what = identity.changed(recorded[split], _data_identity(r.data, names[split]))
            if what:
                return f"data changed: {what}"
    return None


def stale_system(run_dir: Path, r: Recipe, tok_dir: Path) -> str | None:
    """Why the run in run_dir is not what r asks for (None: it is, or there is no run yet)."""
    saved = run_dir / layout.RECIPE
    if not saved.is_file() or not (run_dir / layout.LAST).is_file():
        return None  # nothing trained yet (a start without a checkpoint is simply redone)
    # read as a Recipe, so that a field added since the run was trained counts at its default,
    # which is what the run trained with (as `nmt train --resume` reads it)
    try:
        raw = read_yaml(saved)
        # a run trained before the eval section existed validated with 13a, whatever its target
        raw.setdefault("eval", {"tokenize": "13a"})
        if isinstance(raw.get("tokenizer"), dict):  # recorded before sample_sentences existed?
            raw["tokenizer"] = _before_auto(
                {f"tokenizer.{k}": v for k, v in raw["tokenizer"].items()}, tokenizer_key(r))
            raw["tokenizer"] = {k.split(".", 1)[1]: v for k, v in raw["tokenizer"].items()}
        trained = recipe_from_dict(raw, where=str(saved))
    except NMTError as e:
        return f"its recipe cannot be read any more: {e}"
    change = _changes(training_key(trained), training_key(r))
    if change:
        return change
    # test sets are not part of training, except held out of its corpus: more or other held-out
    # splits leave another training part (and new test pairs it may have trained on)
    if held_out(trained.data) != held_out(r.data):
        return (f"the splits held out of its corpus changed ({', '.join(held_out(trained.data))}"
                f" -> {', '.join(held_out(r.data))}), and with them its training part")
    if _tokenizer_files(run_dir / layout.TOKENIZER) != _tokenizer_files(tok_dir):
        return "it was trained with another tokenizer"
    return _data_changed(run_dir, r)


def _tokenizer_files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.glob("*.model"))}


def decode_key(r: Recipe, src: list[str]) -> dict:
    """What a hypothesis file was decoded from and how; it is reused only for the same key."""
    digest = hashlib.sha256("\n".join(src).encode("utf-8")).hexdigest()
    return {"decode": to_dict(r.decode), "source_sha256": digest, "lines": len(src)}


def fresh_hyp(hyp: Path, key: dict) -> bool:
    """Whether hyp (with its record beside it, SPLIT.json) was decoded as `key` (decode_key)
    asks, and holds one line per source line."""
    info = layout.decoding_record(hyp)
    if not (hyp.is_file() and info.is_file()):
        return False
    saved = json.loads(info.read_text())
    if "decode" in saved:
        # a decode field added since counts at the value the file was decoded with: its
        # default then (float32 search, before decode.amp existed)
        saved["decode"] = {**to_dict(DecodeConfig()), **DECODED_BEFORE, **saved["decode"]}
        same = all(_decoding(saved.get(k)) == _decoding(v) for k, v in key.items())
    else:  # written before the key was recorded: its beam and size are all there is to check
        same = saved.get("beam") == key["decode"]["beam"] and saved.get("sentences") == key["lines"]
    return same and len(read_lines(hyp)) == key["lines"]


def _decoding(value):
    """A decode key's "decode" mapping without NOT_DECODING; any other value as it is."""
    if not isinstance(value, dict):
        return value
    return {k: v for k, v in value.items() if k not in NOT_DECODING}
