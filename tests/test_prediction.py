"""Translating lines and files (library and `nmt translate`), and teacher-forced loss."""
import math

import pytest
import torch
import torch.nn.functional as F
from helpers_ckpt import multi30k_lines
from typer.testing import CliRunner

from cli import app
from nmt import prediction
from nmt.checkpoint import load_for_inference
from nmt.config import DecodeConfig
from nmt.errors import NMTError
from nmt.prediction import teacher_forced_loss, translate_file, translate_lines
from nmt.tokenizer import BOS, EOS

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
LONG = " ".join(["ein Mann fährt Fahrrad"] * 60)  # ~300 pieces: over max_positions = 64


@pytest.fixture(scope="module")
def run_dir(trained_run):
    return trained_run


@pytest.fixture(scope="module")
def loaded(run_dir):
    return load_for_inference(run_dir, CPU)


@pytest.fixture(scope="module")
def lines(data_dir):
    src = multi30k_lines(data_dir, "val", "de", 12)
    return src[:4] + ["", "   "] + src[4:9] + [""] + src[9:]


@pytest.mark.parametrize("beam", [1, 3])
def test_translate_lines_keeps_every_line_in_order(loaded, lines, beam):
    model, tok, recipe = loaded
    dcfg = DecodeConfig(beam=beam, batch_tokens=60)  # several batches
    out = translate_lines(model, tok, lines, dcfg, CPU)
    assert len(out) == len(lines)
    for line, hyp in zip(lines, out):
        if not line.strip():
            assert hyp == ""
        assert "\n" not in hyp
    # sorting into batches and back changes nothing: each line alone gives the same
    alone = [translate_lines(model, tok, [s], dcfg, CPU)[0] for s in lines]
    assert out == alone
    assert any(out), "a trained model says something"


def test_a_batch_the_gpu_has_no_memory_for_is_searched_in_halves(loaded, lines, monkeypatch,
                                                                   capsys):
    model, tok, _ = loaded
    dcfg = DecodeConfig(beam=3, batch_tokens=10_000)  # every line in one batch
    whole = translate_lines(model, tok, lines, dcfg, CPU)
    search, sizes = prediction.translate_batch, []

    def small_gpu(model, src, *args):  # a device that holds at most 3 sentences' beams
        sizes.append(src.size(0))
        if src.size(0) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (pretend)")
        return search(model, src, *args)

    monkeypatch.setattr(prediction, "translate_batch", small_gpu)
    assert translate_lines(model, tok, lines, dcfg, CPU) == whole  # same lines, same order
    n = sum(1 for line in lines if line.strip())
    assert sizes[0] == n and max(sizes[1:]) <= n // 2 + 1
    assert sum(s for s in sizes if s <= 3) == n  # each sentence searched once in the end
    assert "did not fit in memory" in capsys.readouterr().err
    # a sentence alone that does not fit: one error that says what to do
    monkeypatch.setattr(prediction, "translate_batch",
                        lambda *a: (_ for _ in ()).throw(torch.OutOfMemoryError("pretend")))
    with pytest.raises(NMTError, match="one sentence does not fit.*--beam"):
        translate_lines(model, tok, lines[:1], dcfg, CPU)


def test_translation_leaves_the_callers_mode_alone(loaded, lines):
    model, tok, _ = loaded
    model.train()
    try:
        translate_lines(model, tok, lines[:2], DecodeConfig(beam=2), CPU)
        assert model.training
    finally:
        model.eval()


def test_an_overlong_line_is_truncated_with_a_warning_never_dropped(loaded, capsys):
    model, tok, _ = loaded
    out = translate_lines(model, tok, ["ein Hund", LONG, "eine Frau"], DecodeConfig(beam=2), CPU)
    assert len(out) == 3
    err = capsys.readouterr().err
    assert "line 2" in err and "truncat" in err
    assert len(tok.encode_tgt([out[1]])[0]) <= model.max_positions - 1


def test_translate_file_streams_in_chunks(loaded, lines, tmp_path, monkeypatch):
    model, tok, _ = loaded
    src = tmp_path / "in.de"
    src.write_bytes(("\r\n".join(lines) + "\r\n").encode())  # CRLF input too
    monkeypatch.setattr(prediction, "CHUNK_LINES", 5)
    dcfg = DecodeConfig(beam=3)
    out = tmp_path / "out.en"
    assert translate_file(model, tok, src, out, dcfg, CPU) == len(lines)
    assert out.read_text(encoding="utf-8").split("\n")[:-1] == translate_lines(
        model, tok, lines, dcfg, CPU)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.de", "out.en"]  # no temp left

    nb = tmp_path / "nbest.tsv"
    translate_file(model, tok, src, nb, dcfg, CPU, nbest=3)
    rows = [r.split("\t") for r in nb.read_text(encoding="utf-8").split("\n")[:-1]]
    assert all(len(r) == 4 for r in rows)
    for no, line in enumerate(lines, 1):
        mine = [r for r in rows if r[0] == str(no)]
        assert [r[1] for r in mine] == (["1"] if not line.strip() else ["1", "2", "3"])
        scores = [float(r[2]) for r in mine]
        assert scores == sorted(scores, reverse=True)
    best = [r[3] for r in rows if r[1] == "1"]
    assert best == translate_lines(model, tok, lines, dcfg, CPU)


def test_bad_input_is_a_clear_error(loaded, tmp_path):
    model, tok, _ = loaded
    bad = tmp_path / "bad.de"
    bad.write_bytes(b"ein Hund\nzwei Hunde\n\xff\xfe kaputt\n")
    with pytest.raises(NMTError, match=r"bad\.de: line 3 is not valid UTF-8"):
        translate_file(model, tok, bad, tmp_path / "out", DecodeConfig(beam=1), CPU)
    assert not (tmp_path / "out").exists()
    with pytest.raises(NMTError, match="needs a beam"):
        translate_file(model, tok, bad, None, DecodeConfig(beam=2), CPU, nbest=3)


def test_teacher_forced_loss_is_the_mean_token_nll(loaded, data_dir):
    model, tok, _ = loaded
    src = multi30k_lines(data_dir, "val", "de", 20)
    tgt = multi30k_lines(data_dir, "val", "en", 20)
    pairs = [(x, y) for x, y in zip(tok.encode_src(src), tok.encode_tgt(tgt))
             if max(len(x), len(y)) < model.max_positions][:9]  # what the model reads whole
    assert len(pairs) == 9
    nll, ppl = teacher_forced_loss(model, pairs, 100, CPU)
    assert ppl == pytest.approx(math.exp(nll))
    assert teacher_forced_loss(model, pairs, 10_000, CPU)[0] == pytest.approx(nll, rel=1e-5)
    total = n = 0.0
    for x, y in pairs:  # one sentence at a time, by hand
        with torch.inference_mode():
            logits, _ = model(torch.tensor([x + [EOS]]), torch.tensor([len(x) + 1]),
                              torch.tensor([[BOS] + y]))
        total += F.cross_entropy(logits[0], torch.tensor(y + [EOS]), reduction="sum").item()
        n += len(y) + 1
    assert nll == pytest.approx(total / n, rel=1e-4)
    assert 1 < ppl < tok.tgt_vocab_size  # trained a little: better than uniform


# ----------------------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_translate_one_line_per_line(run_dir, lines, tmp_path):
    src = tmp_path / "in.de"
    src.write_text("\n".join(lines + [LONG, ""]) + "\n", encoding="utf-8")
    out = tmp_path / "out.en"
    r = runner.invoke(app, ["translate", "--checkpoint", str(run_dir), str(src), "-o", str(out),
                            "--beam", "2", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    got = out.read_text(encoding="utf-8").split("\n")
    assert got[-1] == "" and len(got) - 1 == len(lines) + 2
    assert [g == "" for g in got[:-1]] == [not s.strip() for s in lines + [LONG, ""]]
    assert "truncat" in r.stderr and r.stdout == ""


def test_cli_translate_stdin_to_stdout_and_nbest(run_dir, lines):
    text = "\n".join(lines[:6]) + "\n"
    r = runner.invoke(app, ["translate", "--checkpoint", str(run_dir / "best.pt"), "--beam",
                            "1", "--device", "cpu"], input=text)
    assert r.exit_code == 0, r.output
    assert len(r.stdout.split("\n")) - 1 == 6 and r.stderr == ""
    r = runner.invoke(app, ["translate", "--checkpoint", str(run_dir), "-", "--beam", "4",
                            "--nbest", "2", "--device", "cpu"], input=text)
    assert r.exit_code == 0, r.output
    rows = [x.split("\t") for x in r.stdout.split("\n")[:-1]]
    empties = sum(not s.strip() for s in lines[:6])
    assert len(rows) == 2 * (6 - empties) + empties
    assert all(len(x) == 4 and x[0].isdigit() and x[1] in ("1", "2") for x in rows)


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "nowhere"], "checkpoint not found"),
    (["--checkpoint", "{run}", "missing.txt"], "input file not found"),
    (["--checkpoint", "{run}", "--beam", "2", "--nbest", "3"], "--beam 3"),
    (["--checkpoint", "{run}", "--device", "tpu"], "use auto, cpu or cuda"),
])
def test_cli_translate_errors(run_dir, args, message):
    args = [a.replace("{run}", str(run_dir)) for a in args]
    r = runner.invoke(app, ["translate", *args], input="ein Hund\n")
    assert r.exit_code == 2
    assert message in r.stderr and "Traceback" not in r.output
