"""Decoding controls on `nmt translate` and `nmt eval --checkpoint`: --alpha, --max-len,
--sample (--temperature/--top-k/--top-p/--seed), --ensemble and --amp."""
import json

import pytest
from helpers_ckpt import make_checkpoint, multi30k_lines
from typer.testing import CliRunner

from cli import app
from nmt import checkpoint
from nmt.config import Recipe, to_dict
from nmt.decode_options import parse_max_len
from nmt.errors import NMTError
from nmt.model import build_model
from nmt.tokenizer import Tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    """A tiny Transformer and a tiny RNN sharing one tokenizer, and a model with another."""
    t = tmp_path_factory.mktemp("t")
    make_checkpoint(t, data_dir, "transformer", train_steps=30)
    r = tmp_path_factory.mktemp("r")
    make_checkpoint(r, data_dir, "rnn")
    o = tmp_path_factory.mktemp("o")
    recipe = Recipe(name="other")
    recipe.tokenizer.vocab_size = 200
    m = recipe.model
    m.d_model, m.heads, m.ff_dim, m.enc_layers, m.dec_layers, m.max_positions = 32, 4, 64, 1, 1, 64
    lines = multi30k_lines(data_dir, "train", "de", 200)
    tok = Tokenizer.train(lines, lines, o / "tokenizer", recipe.tokenizer)
    checkpoint.save(o / "best.pt", {"recipe": to_dict(recipe), "tokenizer": tok.to_state(),
                                    "model": build_model(m, 200, 200).state_dict()})
    return {"t": t, "r": r, "other": o}


@pytest.fixture(scope="module")
def src_file(tmp_path_factory, data_dir):
    p = tmp_path_factory.mktemp("src") / "in.de"
    lines = multi30k_lines(data_dir, "val", "de", 8)
    p.write_text("\n".join(lines[:4] + [""] + lines[4:]) + "\n", encoding="utf-8")
    return p


def _translate(run, src, *args):
    r = runner.invoke(app, ["translate", "--checkpoint", str(run), str(src), "--device", "cpu",
                            *args])
    assert r.exit_code == 0, r.output
    return r.stdout.split("\n")[:-1]


def test_max_len_forms():
    assert parse_max_len("80") == (0.0, 80)
    assert parse_max_len("1.5x") == (1.5, 0)
    assert parse_max_len("2x+10") == (2.0, 10)
    for bad in ("x", "-3", "1.5y", "2x-1", ""):
        with pytest.raises(NMTError, match="--max-len"):
            parse_max_len(bad)


def test_translate_length_controls(runs, src_file):
    base = _translate(runs["t"], src_file, "--beam", "3")
    assert len(base) == 9 and base[4] == ""
    short = _translate(runs["t"], src_file, "--beam", "3", "--max-len", "2")
    tok = Tokenizer.from_state(checkpoint.load(runs["t"])["tokenizer"])
    assert all(len(y) <= 2 for y in tok.encode_tgt(short))
    assert any(len(y) > 2 for y in tok.encode_tgt(base))  # the limit did cut something
    ratio = _translate(runs["t"], src_file, "--beam", "3", "--max-len", "0.5x")
    srcs = tok.encode_src(src_file.read_text(encoding="utf-8").splitlines())
    assert all(len(y) <= -(-0.5 * (len(x) + 1) // 1) for x, y in
               zip(srcs, tok.encode_tgt(ratio)))
    # --alpha changes the scores the n-best list reports (1 = the recipe's 0.6 here)
    a0 = _translate(runs["t"], src_file, "--beam", "3", "--nbest", "3", "--alpha", "0")
    a1 = _translate(runs["t"], src_file, "--beam", "3", "--nbest", "3", "--alpha", "1.5")
    assert [r.split("\t")[2] for r in a0] != [r.split("\t")[2] for r in a1]


def test_translate_sampling_is_seeded(runs, src_file):
    a = _translate(runs["t"], src_file, "--sample", "--seed", "3", "--temperature", "1.2")
    b = _translate(runs["t"], src_file, "--sample", "--seed", "3", "--temperature", "1.2")
    assert a == b and len(a) == 9 and a[4] == ""
    others = [_translate(runs["t"], src_file, "--sample", "--seed", str(s), "--temperature",
                         "1.2") for s in (4, 5)]
    assert any(o != a for o in others)
    greedy = _translate(runs["t"], src_file, "--beam", "1")
    assert _translate(runs["t"], src_file, "--sample", "--top-k", "1") == greedy
    assert _translate(runs["t"], src_file, "--sample", "--top-p", "0.000001") == greedy


def test_ensemble_mixes_rnn_and_transformer(runs, src_file, tmp_path):
    out = _translate(runs["t"], src_file, "--ensemble", str(runs["r"]), "--beam", "3")
    assert len(out) == 9 and out[4] == ""
    ref = tmp_path / "ref.en"
    ref.write_text("\n".join(out) + "\n", encoding="utf-8")
    r = runner.invoke(app, ["eval", "--checkpoint", str(runs["t"]), "--ensemble",
                            str(runs["r"]), "--src", str(src_file), "--ref", str(ref),
                            "--beam", "3", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    system = res["systems"][str(runs["t"])]
    assert system["chrf"] == pytest.approx(100.0)  # eval decodes as translate did
    assert res["ensemble"] == [str(runs["r"])] and res["ppl"] > 1


def test_eval_sampling_reports_its_settings(runs, src_file, tmp_path):
    ref = tmp_path / "ref.en"
    ref.write_text("a\n" * 9, encoding="utf-8")
    r = runner.invoke(app, ["eval", "--checkpoint", str(runs["t"]), "--src", str(src_file),
                            "--ref", str(ref), "--sample", "--top-p", "0.9", "--seed", "1",
                            "--alpha", "0", "--max-len", "1.5x+5", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)["decode"]
    assert d["sample"] and d["top_p"] == 0.9 and d["seed"] == 1 and d["alpha"] == 0
    assert (d["max_len_a"], d["max_len_b"]) == (1.5, 5)


def test_translate_amp_decodes_every_line_and_eval_reports_it(runs, src_file, tmp_path):
    """--amp bf16 searches under bf16 autocast, false in float32 (tests/test_fast_paths.py
    checks the dtypes): still one line per input, the empty line empty; auto is the default."""
    for run in (runs["t"], runs["r"]):
        default = _translate(run, src_file)
        assert _translate(run, src_file, "--amp", "auto") == default
        for amp in ("false", "bf16"):
            out = _translate(run, src_file, "--amp", amp)
            assert len(out) == len(default) == 9 and out[4] == ""
    ref = tmp_path / "ref.en"
    ref.write_text("a\n" * 9, encoding="utf-8")
    r = runner.invoke(app, ["eval", "--checkpoint", str(runs["t"]), "--src", str(src_file),
                            "--ref", str(ref), "--amp", "auto", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["decode"]["amp"] == "auto"


@pytest.mark.parametrize("args, message", [
    (["--temperature", "0.5"], "add --sample"),
    (["--sample", "--beam", "4"], "drop --beam 4"),
    (["--sample", "--nbest", "2"], "drop --nbest 2"),
    (["--sample", "--top-p", "1.5"], "decode.top_p"),
    (["--sample", "--temperature", "0"], "decode.temperature"),
    (["--max-len", "long"], "--max-len"),
    (["--ensemble", "{other}"], "tokenizer differs"),
    (["--ensemble", "nowhere.pt"], "checkpoint not found"),
    (["--amp", "fp16"], "decode.amp"),
])
def test_decoding_option_errors(runs, src_file, args, message):
    args = [a.replace("{other}", str(runs["other"])) for a in args]
    r = runner.invoke(app, ["translate", "--checkpoint", str(runs["t"]), str(src_file),
                            "--device", "cpu", *args])
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.stderr.split()) and "Traceback" not in r.output


def test_eval_without_checkpoint_refuses_decoding_options(tmp_path):
    f = tmp_path / "h.txt"
    f.write_text("a\n", encoding="utf-8")
    r = runner.invoke(app, ["eval", "--hyp", str(f), "--ref", str(f), "--sample"])
    assert r.exit_code == 2 and "needs --checkpoint" in " ".join(r.stderr.split())
    r = runner.invoke(app, ["eval", "--hyp", str(f), "--ref", str(f), "--amp", "bf16"])
    assert r.exit_code == 2 and "--amp control decoding" in " ".join(r.stderr.split())
