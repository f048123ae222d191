"""The Python API (nmt/api.py): Translator gives what `nmt translate` gives, attention of the
same output, scores, option errors, and train() from a Recipe object; `import nmt` stays light."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers_ckpt import multi30k_lines
from typer.testing import CliRunner

import nmt
from cli import app
from nmt.api import Attention, Translator
from nmt.errors import NMTError
from nmt.evaluation import score

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rnn_run(trained_rnn_run):
    return trained_rnn_run


@pytest.fixture(scope="module")
def lines(data_dir):
    return multi30k_lines(data_dir, "val", "de", 6)


@pytest.mark.parametrize("which", ["transformer", "rnn"])
def test_translate_equals_the_cli(which, trained_run, rnn_run, lines, tmp_path):
    run = tmp_path / "run"  # a copy: the shortlist case writes shortlist.pt beside best.pt
    shutil.copytree(trained_run if which == "transformer" else rnn_run, run)
    src = lines[:3] + [""] + lines[3:]
    (tmp_path / "in.de").write_text("\n".join(src) + "\n", encoding="utf-8")
    for opts, kw in ((["--beam", "3", "--alpha", "1.0"], {"beam": 3, "alpha": 1.0}),
                     (["--beam", "1", "--max-len", "1x+2"], {"beam": 1, "max_len": "1x+2"}),
                     (["--beam", "3", "--shortlist", "5"], {"beam": 3, "shortlist": 5})):
        r = CliRunner().invoke(app, ["translate", "--checkpoint", str(run), str(tmp_path / "in.de"),
                                     "--device", "cpu", *opts])
        assert r.exit_code == 0, r.output
        cli_out = r.stdout.split("\n")[:-1]
        t = Translator.load(run, device="cpu")
        assert t.translate(src, **kw) == cli_out
        assert Translator.load(run, device="cpu", **kw).translate(src) == cli_out
        assert (getattr(t.model, "shortlist", None) is not None) == ("shortlist" in kw)
        assert cli_out[3] == ""  # empty in, empty out


def test_attention_shapes_and_same_output(trained_run, rnn_run, lines):
    text = lines[0]
    for run, ndim in ((trained_run, 4), (rnn_run, 2)):
        t = Translator.load(run, device="cpu")
        a = t.translate_with_attention(text, beam=3)
        assert isinstance(a, Attention)
        src, out, w = a  # unpacks as (source, target, weights)
        assert a.translation == t.translate([text], beam=3)[0]
        assert src[-1] == "</s>" and out[-1] == "</s>"
        assert w.dim() == ndim and w.shape[-2:] == (len(out), len(src))
        assert torch.allclose(w.sum(-1), torch.ones(w.shape[:-1]), atol=1e-4)
        if ndim == 4:  # (L, H, T, S): every layer, every head
            m = t.recipe.model
            assert w.shape[:2] == (m.dec_layers, m.heads)
    assert t.family == "rnn" and t.attention_kind == "bahdanau" and t.params > 0


def test_text_with_newlines_gives_one_output_per_text(trained_run, lines):
    t = Translator.load(trained_run, device="cpu", beam=2)
    one, two = t.translate(lines[:2])
    assert t.translate([lines[0] + "\n" + lines[1], lines[0]]) == [one + "\n" + two, one]


def test_score_is_sacrebleu_of_the_translations(trained_run, lines, data_dir):
    refs = multi30k_lines(data_dir, "val", "en", 6)
    t = Translator.load(trained_run, device="cpu", beam=2)
    s = t.score(lines, refs)
    assert s["translations"] == t.translate(lines)
    plain = score(s["translations"], [refs])
    assert s["bleu"] == plain["bleu"] and s["chrf"] == plain["chrf"]
    with pytest.raises(NMTError, match="aligned"):
        t.score(lines, refs[:2])


def test_bad_options_name_what_is_wrong(trained_run):
    t = Translator.load(trained_run, device="cpu")
    for kw, what in (({"beam": 0}, "--beam"), ({"alpha": -1}, "--alpha"),
                     ({"max_len": "long"}, "--max-len"), ({"top_p": 0.5}, "add --sample"),
                     ({"sample": True, "top_p": 2.0}, "decode.top_p")):
        with pytest.raises(NMTError, match=what):
            t.translate(["Ein Hund."], **kw)
    with pytest.raises(NMTError, match="list of sentences"):
        t.translate("Ein Hund.")
    with pytest.raises(NMTError, match="not found"):
        Translator.load(trained_run / "missing.pt")


def test_train_from_a_recipe_object(tmp_path, data_dir, monkeypatch):
    from nmt.config import load_recipe

    monkeypatch.setenv("NMT_DATA_DIR", str(data_dir))
    r = load_recipe(ROOT / "recipes" / "smoke" / "transformer.yaml",
                    ["data.max_train_pairs=200", "data.max_valid_pairs=10",
                     "tokenizer.vocab_size=300", "train.batch_tokens=500", "train.max_epochs=0",
                     "train.max_steps=2", "train.valid_every=2", "train.threads=1"])
    s = nmt.train(r, out=tmp_path / "run")
    assert s["steps"] == 2 and (tmp_path / "run" / "best.pt").is_file()
    assert len(Translator.load(tmp_path / "run", device="cpu").translate(["Ein Hund.", ""])) == 2
    with pytest.raises(NMTError, match="sets="):
        nmt.train(r, out=tmp_path / "other", sets=["train.max_steps=1"])


def test_import_nmt_is_light_and_compare_stays_the_module():
    code = ("import sys, nmt; assert 'torch' not in sys.modules; import nmt.compare, nmt.api; "
            "assert nmt.compare.__name__ == 'nmt.compare'; assert nmt.api.compare.__module__ "
            "== 'nmt.api'; print(nmt.Translator.__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "Translator", r.stderr


def test_compare_entry_point_reads_the_recipe_and_returns_the_results(monkeypatch, tmp_path):
    """nmt.api.compare loads the comparison as `nmt compare` does and returns what run()
    returns (results.json's content); run() itself is test_compare's."""
    import nmt.compare
    from nmt.api import compare

    seen = {}

    def fake_run(cmp, out, **kw):
        seen.update(cmp=cmp, out=out, **kw)
        return {"systems": {n: {} for n in cmp.recipes}}

    monkeypatch.setattr(nmt.compare, "run", fake_run)
    r = compare(ROOT / "recipes" / "smoke.yaml", out=tmp_path / "o", sets=["train.max_steps=3"],
                only=["bahdanau"])
    assert set(r["systems"]) == set(seen["cmp"].recipes) and seen["only"] == ["bahdanau"]
    assert seen["out"] == tmp_path / "o"
    assert all(x.train.max_steps == 3 for x in seen["cmp"].recipes.values())
    assert compare(seen["cmp"])["systems"] == r["systems"]  # a loaded Comparison works too
    with pytest.raises(NMTError, match="sets="):
        compare(seen["cmp"], sets=["train.max_steps=1"])
