"""Scoring controls: sacreBLEU's tokenizers and lower-casing, through `score`, the bootstrap and
`nmt eval --tokenize/--lowercase`, with signatures that say which were used."""
import json

import pytest
from typer.testing import CliRunner

from cli import app
from nmt.errors import NMTError
from nmt.evaluation import TOKENIZERS, paired_bootstrap, score

runner = CliRunner()
REFS = ["A man rides a bike down the street.", "Two dogs play in the snow.",
        "A woman is reading a book in the park.", "Children run on the beach at sunset."]


def test_lowercase_forgives_case_only_and_says_so():
    hyps = [r.upper() for r in REFS]
    cased, lower = score(hyps, [REFS]), score(hyps, [REFS], lowercase=True)
    assert cased["bleu"] < 10 and lower["bleu"] == pytest.approx(100)
    assert lower["chrf"] == pytest.approx(100) and cased["chrf"] < 100
    assert "case:lc" in lower["signatures"]["bleu"] and "case:mixed" in cased["signatures"]["bleu"]
    assert "case:lc" in lower["signatures"]["chrf"]


def test_tokenizers_change_bleu_and_the_signature():
    assert {"13a", "intl", "zh", "char", "none"} <= set(TOKENIZERS)
    # punctuation glued to a word: 13a splits it off, `none` does not
    hyps = [r.replace(".", " .") for r in REFS]
    assert score(hyps, [REFS])["bleu"] == pytest.approx(100)
    assert score(hyps, [REFS], tokenize="none")["bleu"] < 100
    assert "tok:none" in score(hyps, [REFS], tokenize="none")["signatures"]["bleu"]
    # Chinese has no spaces: the zh tokenizer splits characters, 13a sees one "word" a line
    zh_ref = ["我们今天去公园散步。", "他喜欢读书和写字。"]
    zh_hyp = ["我们今天去公园跑步。", "他喜欢读书和画画。"]
    assert score(zh_hyp, [zh_ref])["bleu"] < 1
    zh = score(zh_hyp, [zh_ref], tokenize="zh")
    assert zh["bleu"] > 30 and "tok:zh" in zh["signatures"]["bleu"]
    assert "asian:yes" in zh["signatures"]["ter"]
    char = score(zh_hyp, [zh_ref], tokenize="char")
    assert char["bleu"] > 30 and "tok:char" in char["signatures"]["bleu"]
    with pytest.raises(NMTError, match="not one of sacreBLEU's tokenizers.*13a"):
        score(REFS, [REFS], tokenize="moses")


def test_bootstrap_uses_the_same_scoring():
    upper = [r.upper() for r in REFS]
    rows = paired_bootstrap(REFS, {"upper": upper}, [REFS], lowercase=True)
    assert rows["upper"]["score"] == pytest.approx(rows["baseline"]["score"])


def test_cli_eval_tokenize_and_lowercase(tmp_path):
    ref, hyp = tmp_path / "ref.en", tmp_path / "hyp.en"
    ref.write_text("\n".join(REFS) + "\n", encoding="utf-8")
    hyp.write_text("\n".join(r.lower() for r in REFS) + "\n", encoding="utf-8")
    r = runner.invoke(app, ["eval", "--hyp", str(hyp), "--ref", str(ref), "--lowercase",
                            "--tokenize", "intl", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["systems"][str(hyp)]["bleu"] == pytest.approx(100)
    assert "tok:intl" in res["signatures"]["bleu"] and "case:lc" in res["signatures"]["bleu"]
    r = runner.invoke(app, ["eval", "--hyp", str(hyp), "--ref", str(ref)])
    assert r.exit_code == 0 and "case:mixed" in r.stdout
    r = runner.invoke(app, ["eval", "--hyp", str(hyp), "--ref", str(ref), "--tokenize", "nope"])
    assert r.exit_code == 2 and "not one of sacreBLEU's tokenizers" in " ".join(r.stderr.split())
