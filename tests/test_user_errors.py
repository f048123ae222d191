"""Every bad value is one clear error (what, where, what to do) and no traceback: recipe ranges,
--set values, unreadable recipes and data, output paths checked before any work, a full disk,
and the warnings that say when an answer is not what it seems."""
import errno
import gzip
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app, data_app, tokenizer_app
from nmt import checkpoint, prediction
from nmt.checkpoint import load_for_inference
from nmt.config import DataConfig, DecodeConfig, load_recipe, recipe_from_dict
from nmt.data import load_split, read_lines
from nmt.errors import NMTError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "recipes" / "smoke" / "transformer.yaml"
pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args, **kw):
    res = CliRunner().invoke(app, [str(a) for a in args], **kw)
    assert "Traceback" not in res.output
    return res, " ".join(res.output.split())


@pytest.fixture(scope="module")
def run_dir(trained_run):
    return trained_run


# ----------------------------------------------------------------------------- recipes

@pytest.mark.parametrize("values, field", [
    ({"train": {"schedule": "plateau", "plateau_factor": 1.5}}, "train.plateau_factor"),
    ({"train": {"plateau_factor": 0}}, "train.plateau_factor"),
    ({"train": {"plateau_patience": -1}}, "train.plateau_patience"),
    ({"train": {"min_lr": -1e-6}}, "train.min_lr"),
    ({"decode": {"alpha": float("nan")}}, "decode.alpha"),
    ({"decode": {"alpha": -0.5}}, "decode.alpha"),
    ({"train": {"lr": float("inf")}}, "train.lr"),
    ({"decode": {"max_len_b": -1}}, "decode.max_len_b"),
    ({"data": {"max_test_pairs": -3}}, "data.max_test_pairs"),
    ({"train": {"keep_last": 0}}, "train.keep_last"),
])
def test_every_numeric_field_has_its_range(values, field):
    with pytest.raises(NMTError, match=rf"recipe: {field.replace('.', '[.]')}:"):
        recipe_from_dict(values)


def test_nan_written_in_yaml_is_refused(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("decode:\n  alpha: .nan\n")
    with pytest.raises(NMTError, match="decode.alpha: must be a finite number"):
        load_recipe(p)


def test_a_set_error_blames_set_not_the_file(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("train: {lr: 0.001}\n")
    for item, field in (("train.lr=-1", "train.lr"), ("train.lr=fast", "train.lr"),
                        ("decode.max_len_b=-2", "decode.max_len_b")):
        with pytest.raises(NMTError) as e:
            load_recipe(p, [item])
        assert str(e.value).startswith("--set") and field in str(e.value), e.value
        assert str(p) not in str(e.value)
    p.write_text("train: {lr: -1}\n")
    with pytest.raises(NMTError, match=f"^{p}: train.lr"):
        load_recipe(p, ["train.max_steps=3"])


def test_set_value_that_is_not_yaml(tmp_path):
    res, text = invoke("train", SMOKE, "--out", tmp_path / "r", "--set", "train.lr=[0.1")
    assert res.exit_code == 2 and "--set train.lr=[0.1: the value is not valid YAML" in text


def test_recipe_that_is_not_utf8(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("name: caf\xe9\n".encode("latin-1"))
    res, text = invoke("train", p, "--out", tmp_path / "r")
    assert res.exit_code == 2 and "not UTF-8" in text and str(p) in text


# ----------------------------------------------------------------------------- data

def test_blank_training_file_names_the_file(tmp_path):
    for lang, text in (("de", "\n  \n\n"), ("en", "a\nb\nc\n")):
        (tmp_path / f"train.{lang}").write_text(text)
    with pytest.raises(NMTError, match=rf"{tmp_path / 'train.de'}: holds no text"):
        load_split(DataConfig(source="files", path=str(tmp_path)), "train")
    (tmp_path / "train.de").write_text("")
    (tmp_path / "train.en").write_text("")
    with pytest.raises(NMTError, match="holds no text \\(empty\\)"):
        load_split(DataConfig(source="files", path=str(tmp_path)), "train")


def test_blank_validation_set_is_refused(tmp_path):
    (tmp_path / "val.tsv").write_text("de\ten\n \t \n\t\n")
    with pytest.raises(NMTError, match="val.tsv: the de side holds no text"):
        load_split(DataConfig(source="tsv", path=str(tmp_path)), "val")


def test_a_directory_given_as_a_data_file(tmp_path):
    (tmp_path / "train.de").mkdir()
    (tmp_path / "train.en").write_text("a\n")
    with pytest.raises(NMTError, match="train.de: is a directory"):
        load_split(DataConfig(source="files", path=str(tmp_path)), "train")
    with pytest.raises(NMTError, match="is a directory, not a text file"):
        read_lines(tmp_path / "train.de")


# ----------------------------------------------------------------------------- output paths

def test_output_paths_are_checked_before_any_work(tmp_path, run_dir):
    (tmp_path / "in.txt").write_text("ein Hund\n")
    res, text = invoke("translate", tmp_path / "in.txt", "--checkpoint", run_dir, "-o", tmp_path)
    assert res.exit_code == 2 and "is a directory; give a file name" in text
    res, text = invoke("translate", tmp_path / "in.txt", "--checkpoint", run_dir,
                       "-o", tmp_path / "missing" / "out.txt")
    assert res.exit_code == 2 and "does not exist" in text
    res, text = invoke("attention", "--checkpoint", run_dir, "--text", "ein Hund",
                       "-o", tmp_path / "missing" / "x.png")
    assert res.exit_code == 2 and "does not exist" in text
    res, text = invoke("attention", "--checkpoint", run_dir, "--text", "ein Hund",
                       "-o", tmp_path / "x.txt")
    assert res.exit_code == 2 and "end the name in .png" in text
    res, text = invoke("attention", "--checkpoint", run_dir, "--text", "  ")
    assert res.exit_code == 2 and "--text is empty" in text
    (tmp_path / "file").write_text("x")
    res, text = invoke("tokenizer", "build", "--out", tmp_path / "file", "--src",
                       tmp_path / "in.txt", "--tgt", tmp_path / "in.txt")
    assert res.exit_code == 2 and "is a file; give a directory" in text


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"step": 1})
    before = path.read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", no_space)
    with pytest.raises(NMTError, match="disk full.*previous last.pt is kept.*--resume"):
        checkpoint.save(path, {"step": 2})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_full_disk_during_training_is_one_line(tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("NMT_DATA_DIR", str(data_dir))

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "metrics.jsonl")

    monkeypatch.setattr("nmt.training.RunLog.record", no_space)
    res, text = invoke("train", SMOKE, "--out", tmp_path / "r", "--quiet",
                       *[x for s in ("data.max_train_pairs=300", "data.max_valid_pairs=20",
                                     "tokenizer.vocab_size=300", "train.max_steps=2",
                                     "train.max_epochs=0", "train.log_every=1")
                         for x in ("--set", s)])
    assert res.exit_code == 2 and "metrics.jsonl: No space left on device" in text


# ----------------------------------------------------------------------------- translation

def test_translate_reads_gzip_input(tmp_path, run_dir):
    (tmp_path / "in.txt.gz").write_bytes(gzip.compress("ein Hund\n\nzwei Katzen\n".encode()))
    out = tmp_path / "out.txt"
    res, text = invoke("translate", tmp_path / "in.txt.gz", "--checkpoint", run_dir, "-o", out)
    assert res.exit_code == 0, res.output
    assert len(out.read_text().split("\n")) == 4 and out.read_text().split("\n")[1] == ""
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all\n")
    res, text = invoke("translate", tmp_path / "bad.gz", "--checkpoint", run_dir)
    assert res.exit_code == 2 and "not a readable gzip file" in text


def test_a_run_without_best_says_it_uses_last(tmp_path, run_dir, capsys):
    shutil.copy(run_dir / "best.pt", tmp_path / "last.pt")
    load_for_inference(tmp_path)
    assert "no best.pt" in capsys.readouterr().err


def test_empty_translations_of_real_sentences_are_flagged(run_dir, monkeypatch, capsys,
                                                          tmp_path):
    model, tok, recipe = load_for_inference(run_dir)

    def say_nothing(model, src, src_len, dcfg, cap, *generator):
        return [[([], 0.0)] for _ in range(src.shape[0])]

    monkeypatch.setattr(prediction, "translate_batch", say_nothing)
    (tmp_path / "in.txt").write_text("ein Hund\n\nzwei Katzen\n")
    prediction.translate_file(model, tok, tmp_path / "in.txt", tmp_path / "out.txt",
                              DecodeConfig(beam=50), torch.device("cpu"))
    assert (tmp_path / "out.txt").read_text() == "\n\n\n"
    err = capsys.readouterr().err
    assert "2 of 2 non-empty lines got an empty translation (beam 50)" in err


@pytest.mark.parametrize("group", [[], ["data"], ["tokenizer"]])
def test_command_lists_give_each_summary_as_one_sentence(group):
    """`nmt --help` lists each command with its docstring's first paragraph, re-wrapped to the
    terminal, not broken where the source line ended."""
    res = CliRunner().invoke(app, [*group, "--help"], terminal_width=200, env={"COLUMNS": "200"})
    assert res.exit_code == 0
    listed = {}
    for line in res.output.splitlines():
        cells = line.strip("│ ").split(None, 1)
        if len(cells) == 2 and cells[0].isalpha():
            listed[cells[0]] = cells[1].strip()
    typer_app = {(): app, ("data",): data_app, ("tokenizer",): tokenizer_app}[tuple(group)]
    for command in typer_app.registered_commands:
        name = command.name or command.callback.__name__
        summary = " ".join(command.callback.__doc__.split("\n\n")[0].split())
        summary = summary.replace("\\[", "[")  # a bracket escaped for rich prints as one
        assert listed.get(name) == summary, (name, listed.get(name))
