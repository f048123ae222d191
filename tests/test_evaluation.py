"""sacreBLEU scores, paired bootstrap, and `nmt eval`."""
import dataclasses
import json
import math

import pytest
import sacrebleu
from helpers_ckpt import batch_of, make_checkpoint, multi30k_lines, sequence_logprob
from typer.testing import CliRunner

from cli import app
from nmt.api import Translator
from nmt.checkpoint import load_for_inference
from nmt.config import DecodeConfig
from nmt.decode_options import DecodeOptions
from nmt.errors import NMTError
from nmt.evaluation import paired_bootstrap, read_aligned, score

pytestmark = pytest.mark.usefixtures("one_thread")

runner = CliRunner()


@pytest.fixture(scope="module")
def refs(data_dir):
    return multi30k_lines(data_dir, "test_2016_flickr", "en", 200)


def _damage(lines, every):
    """Drop the last two words of every `every`-th line: a worse system, by a known amount."""
    return [" ".join(s.split()[:-2]) if i % every == 0 else s for i, s in enumerate(lines)]


def test_score_has_three_metrics_and_their_signatures(refs):
    perfect = score(refs, [refs])
    assert perfect["bleu"] == pytest.approx(100) and perfect["chrf"] == pytest.approx(100)
    assert perfect["ter"] == pytest.approx(0)
    sig = perfect["signatures"]
    assert "tok:13a" in sig["bleu"] and "case:mixed" in sig["bleu"] and "nrefs:1" in sig["bleu"]
    assert "nc:6" in sig["chrf"] and "tok:tercom" in sig["ter"]
    worse, worst = score(_damage(refs, 3), [refs]), score(_damage(refs, 1), [refs])
    assert 100 > worse["bleu"] > worst["bleu"] and worse["ter"] < worst["ter"]
    # a second reference that matches the hypothesis can only help
    hyp = _damage(refs, 1)
    assert score(hyp, [refs, hyp])["bleu"] > score(hyp, [refs])["bleu"]
    assert "nrefs:2" in score(hyp, [refs, hyp])["signatures"]["bleu"]


def test_score_rejects_misaligned_references(refs):
    with pytest.raises(NMTError, match="200 hypotheses but reference set 1 has 199"):
        score(refs, [refs[:-1]])


def test_paired_bootstrap(refs):
    base = _damage(refs, 1)
    rows = paired_bootstrap(base, {"better": _damage(refs, 2), "same": list(base),
                                   "close": _damage(refs, 1)[:-1] + [refs[-1]]}, [refs], "base")
    assert list(rows) == ["base", "better", "same", "close"]
    assert rows["base"]["p_value"] is None and rows["base"]["chrf"]["p_value"] is None
    assert rows["better"]["p_value"] < 0.05 and rows["better"]["chrf"]["p_value"] < 0.05
    assert rows["same"]["p_value"] == 1.0
    assert rows["close"]["p_value"] > 0.05  # one sentence of 200 differs: not significant
    for r in rows.values():
        for m in (r, r["chrf"]):
            assert m["ci"] > 0 and abs(m["mean"] - m["score"]) < 2 * m["ci"]
    assert rows["better"]["score"] == pytest.approx(score(_damage(refs, 2), [refs])["bleu"])
    with pytest.raises(NMTError, match="has 199 lines"):
        paired_bootstrap(base, {"short": base[:-1]}, [refs])


def test_read_aligned_names_the_files(tmp_path):
    h, r = tmp_path / "h.txt", tmp_path / "r.txt"
    h.write_text("a\nb\n", encoding="utf-8")
    r.write_text("a\nb\nc\n", encoding="utf-8")
    with pytest.raises(NMTError, match=r"h\.txt has 2 lines but .*r\.txt has 3"):
        read_aligned([str(h)], [str(r)])
    (tmp_path / "e.txt").write_text("", encoding="utf-8")
    with pytest.raises(NMTError, match=r"e\.txt: the hypothesis file is empty"):
        read_aligned([str(tmp_path / "e.txt")], [str(r)])
    (tmp_path / "bad.txt").write_bytes(b"ok\nok\n\xc3\x28\n")
    with pytest.raises(NMTError, match=r"bad\.txt: line 3 is not valid UTF-8"):
        read_aligned([str(h)], [str(tmp_path / "bad.txt")])
    hyps, refs = read_aligned([str(h)], [str(h), str(h)])
    assert hyps == {str(h): ["a", "b"]} and refs == [["a", "b"], ["a", "b"]]


# ----------------------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def files(tmp_path_factory, refs):
    d = tmp_path_factory.mktemp("eval")
    paths = {}
    for name, lines in {"ref": refs, "base": _damage(refs, 1), "better": _damage(refs, 2),
                        "short": refs[:-1]}.items():
        paths[name] = d / f"{name}.txt"
        paths[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def test_cli_eval_table_and_json(files):
    r = runner.invoke(app, ["eval", "--hyp", str(files["base"]), "--ref", str(files["ref"])])
    assert r.exit_code == 0, r.output
    for word in ("BLEU", "chrF", "TER", "tok:13a", "base.txt"):
        assert word in r.stdout
    r = runner.invoke(app, ["eval", "--hyp", str(files["base"]), "--ref", str(files["ref"]),
                            "--json"])
    out = json.loads(r.stdout)
    assert out["systems"][str(files["base"])]["bleu"] == pytest.approx(
        score(files["base"].read_text().splitlines(), [files["ref"].read_text().splitlines()])[
            "bleu"])
    assert set(out["signatures"]) == {"bleu", "chrf", "ter"} and "bootstrap" not in out


def test_cli_eval_several_systems_is_a_significance_test(files):
    args = ["eval", "--hyp", str(files["base"]), "--hyp", str(files["better"]), "--ref",
            str(files["ref"])]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "baseline" in r.stdout and "0.0010*" in r.stdout and "better.txt" in r.stdout
    out = json.loads(runner.invoke(app, args + ["--json"]).stdout)
    assert out["baseline"] == str(files["base"])
    assert out["bootstrap"][str(files["better"])]["p_value"] < 0.05


@pytest.mark.parametrize("args, message", [
    (["--hyp", "{short}", "--ref", "{ref}"], "has 199 lines but"),
    (["--hyp", "{base}", "--ref", "missing.txt"], "missing.txt: file not found"),
    (["--hyp", "{base}"], "no reference"),
    (["--ref", "{ref}"], "give --hyp FILE"),
    (["--checkpoint", "{base}", "--ref", "{ref}"], "give --src and --ref"),
    (["--hyp", "{base}", "--hyp", "{base}", "--ref", "{ref}"], "given twice"),
])
def test_cli_eval_errors(files, args, message):
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    r = runner.invoke(app, ["eval", *args])
    assert r.exit_code == 2, r.output
    assert message in r.stderr and "Traceback" not in r.output


def test_cli_eval_translates_a_checkpoint(tmp_path, data_dir):
    make_checkpoint(tmp_path, data_dir, "rnn", max_positions=64)
    src, ref = tmp_path / "src.de", tmp_path / "ref.en"
    src.write_text("\n".join(multi30k_lines(data_dir, "val", "de", 15)) + "\n", encoding="utf-8")
    ref.write_text("\n".join(multi30k_lines(data_dir, "val", "en", 15)) + "\n", encoding="utf-8")
    r = runner.invoke(app, ["eval", "--checkpoint", str(tmp_path), "--src", str(src), "--ref",
                            str(ref), "--beam", "2", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["beam"] == 2 and out["ppl"] == pytest.approx(math.exp(out["nll"]))
    # the record of how it decoded: every decode setting but the beam (above) and the two that
    # only group lines or count translations
    assert set(out["decode"]) == {f.name for f in dataclasses.fields(DecodeConfig)} - {
        "beam", "nbest", "batch_tokens"}
    # the Python API's evaluate is what the command runs: the same translations and perplexity
    api = Translator.load(tmp_path, "cpu").evaluate(
        src.read_text(encoding="utf-8").splitlines(), [ref.read_text().splitlines()],
        DecodeOptions(beam=2))
    assert api["nll"] == pytest.approx(out["nll"]) and api["decode"] == out["decode"]
    assert api["tokenize"] == out["tokenize"] == "13a"
    # its scores are sacreBLEU's on what `nmt translate` writes with the same settings
    hyp = tmp_path / "hyp.en"
    r = runner.invoke(app, ["translate", str(src), "--checkpoint", str(tmp_path), "-o",
                            str(hyp), "--beam", "2", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    hyps, refs = hyp.read_text(encoding="utf-8").splitlines(), [ref.read_text().splitlines()]
    got = out["systems"][str(tmp_path)]
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, refs).score)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, refs).score) and got["chrf"] > 0
    # its perplexity is the model's own: -log P(ref | src) per target token, by teacher forcing
    model, tok, _ = load_for_inference(tmp_path)
    src_ids = tok.encode_src(src.read_text(encoding="utf-8").splitlines())
    ref_ids = tok.encode_tgt(refs[0])
    logp = sum(sequence_logprob(model, *batch_of([x]), [y])[0] for x, y in zip(src_ids, ref_ids))
    assert out["nll"] == pytest.approx(-logp / sum(len(y) + 1 for y in ref_ids), rel=1e-4)
    short = tmp_path / "short.en"
    short.write_text("one line\n", encoding="utf-8")
    r = runner.invoke(app, ["eval", "--checkpoint", str(tmp_path), "--src", str(src), "--ref",
                            str(short)])
    assert r.exit_code == 2 and "line-aligned" in r.stderr
