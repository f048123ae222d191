"""Decoding options in one place (nmt/decode_options.py): the command line collects them, the
Python API passes them, and one set of rules applies them to a checkpoint's decode settings;
`nmt eval`'s scores and table are made in nmt.evaluation, for cli.py to print."""
from dataclasses import fields, replace
from pathlib import Path

import pytest
import typer.main
from rich.console import Console

from cli import app
from nmt.api import decode_options
from nmt.config import DecodeConfig
from nmt.decode_options import FLAGS, DecodeOptions
from nmt.errors import NMTError
from nmt.evaluation import score_systems, score_table

BASE = DecodeConfig(beam=4, alpha=0.8, max_len_a=1.2, max_len_b=7, batch_tokens=512,
                    shortlist=10, shortlist_frequent=20, amp=False)


def test_no_options_keep_the_recipe():
    assert DecodeOptions().apply(BASE) == BASE
    assert DecodeOptions().apply(replace(BASE, sample=True, beam=1)).sample


def test_each_option_changes_its_field_only():
    changes = {"beam": (6, "beam", 6), "alpha": (0, "alpha", 0.0),
               "batch_tokens": (100, "batch_tokens", 100), "amp": ("false", "amp", False),
               "max_len": ("2x+3", "max_len_a", 2.0), "shortlist": (0, "shortlist", 0),
               "shortlist_frequent": (5, "shortlist_frequent", 5)}
    for option, (value, name, want) in changes.items():
        got = DecodeOptions(**{option: value}).apply(BASE)
        assert getattr(got, name) == want, option
        same = {f.name for f in fields(BASE)} - {name} - ({"max_len_b"} if option == "max_len"
                                                          else set())
        assert all(getattr(got, f) == getattr(BASE, f) for f in same), option
    sampled = DecodeOptions(sample=True, temperature=0.5, top_k=3, top_p=0.9, seed=2).apply(BASE)
    assert (sampled.sample, sampled.beam, sampled.temperature, sampled.top_k, sampled.top_p,
            sampled.seed) == (True, 1, 0.5, 3, 0.9, 2)


def test_the_api_applies_the_same_rules():
    for kw in ({}, {"beam": 2, "nbest": 2}, {"max_len": "80", "alpha": 1},
               {"sample": True, "top_p": 0.5}):
        assert decode_options(BASE, **kw) == DecodeOptions(**kw).apply(BASE)
    for kw, message in (({"top_k": 3}, "--top-k only apply to sampling"),
                        ({"sample": True, "beam": 3}, "drop --beam 3"),
                        ({"nbest": 5}, "add --beam 5"), ({"beam": 0}, "--beam 0"),
                        ({"max_len": "1.5y"}, "--max-len"), ({"top_p": 2.0, "sample": True},
                                                             "decode.top_p")):
        for apply in (lambda: DecodeOptions(**kw).apply(BASE), lambda: decode_options(BASE, **kw)):
            with pytest.raises(NMTError, match=message):
                apply()


def test_given_lists_what_changes_translations_in_help_order():
    assert DecodeOptions().given() == [] and DecodeOptions(nbest=3, batch_tokens=9).given() == []
    opts = DecodeOptions(shortlist=0, top_k=0, alpha=0.0, sample=True, beam=2)
    assert opts.given() == ["--beam", "--alpha", "--sample", "--top-k", "--shortlist"]
    assert opts.given(ensemble=[Path("b.pt")]) == ["--beam", "--alpha", "--sample", "--top-k",
                                                    "--ensemble", "--shortlist"]


def test_a_ctranslate2_export_takes_beam_search_options_only():
    opts = DecodeOptions(beam=3, nbest=2, batch_tokens=64, alpha=0.2, max_len="20",
                         temperature=0.7)
    assert opts.for_ctranslate2(Path("ct2")) == DecodeOptions(beam=3, nbest=2, batch_tokens=64,
                                                              alpha=0.2, max_len="20")
    for bad, message in (({"shortlist": 5}, "--shortlist applies to .pt"),
                         ({"shortlist_frequent": 0}, "--shortlist applies to .pt"),
                         ({"sample": True}, "beam search alone"), ({"amp": "bf16"}, "--amp")):
        with pytest.raises(NMTError, match=message):
            DecodeOptions(**bad).for_ctranslate2(Path("ct2"))
    with pytest.raises(NMTError, match="--ensemble"):
        DecodeOptions().for_ctranslate2(Path("ct2"), ensemble=[Path("b.pt")])


def test_the_commands_collect_every_option():
    """`nmt translate` offers every DecodeOptions field under its FLAGS name; `nmt eval` every
    one but --nbest (it scores one translation per line)."""
    group = typer.main.get_command(app)
    for command, left_out in (("translate", set()), ("eval", {"--nbest"})):
        opts = {o for p in group.commands[command].params for o in getattr(p, "opts", [])}
        wanted = {FLAGS[f.name] for f in fields(DecodeOptions)} | {"--ensemble"}
        assert wanted - left_out <= opts, command


def test_score_systems_and_its_table():
    refs = [["a man rides a bike .", "two dogs play in the snow .", "a woman sings"]]
    hyps = {"runs/a/test.hyp": ["a man rides a bicycle .", "two dogs play in snow .",
                                "a woman sings"],
            "runs/b/test.hyp": ["the man rides a bike .", "two dogs play .", "a woman"]}
    one = score_systems(dict(list(hyps.items())[:1]), refs)
    assert list(one) == ["systems", "signatures"]
    both = score_systems(hyps, refs)
    assert list(both) == ["systems", "signatures", "baseline", "bootstrap"]
    assert both["baseline"] == "runs/a/test.hyp" and set(both["bootstrap"]) == set(hyps)
    assert both["systems"]["runs/a/test.hyp"]["bleu"] > both["systems"]["runs/b/test.hyp"]["bleu"]
    scores = score_table({"refs": ["ref.txt"], **both})
    assert scores.table.row_count == 2 and len(scores.table.columns) == 6
    assert scores.perplexity is None
    assert [s.split(" signature: ")[0] for s in scores.signatures] == ["bleu", "chrf", "ter"]
    console = Console(width=200, record=True)
    console.print(scores.table)
    shown = console.export_text()
    assert "a/test.hyp" in shown and "baseline" in shown  # same file names: the paths shown
    ppl = score_table({"refs": ["ref.txt"], **one, "ppl": 12.3456, "nll": 2.5133, "beam": 5,
                       "decode": {"sample": False, "shortlist": 0, "shortlist_frequent": 100}})
    assert ppl.table.row_count == 1 and "12.35" in ppl.perplexity and "beam 5" in ppl.perplexity
