import gzip
import io

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from nmt.config import TokenizerConfig
from nmt.data import read_lines
from nmt.errors import NMTError
from nmt.tokenizer import BOS, EOS, PAD, UNK, Tokenizer

N = 2000  # pairs: enough for a 500-piece model, cheap to train


@pytest.fixture(scope="module")
def lines(data_dir):
    d = data_dir / "multi30k"
    return read_lines(d / "train.de.gz")[:N], read_lines(d / "train.en.gz")[:N]


@pytest.fixture(scope="module")
def joint(lines, tmp_path_factory):
    out = tmp_path_factory.mktemp("joint")
    return Tokenizer.train(*lines, out, TokenizerConfig(vocab_size=500)), out


@pytest.fixture(scope="module")
def separate(lines, tmp_path_factory):
    out = tmp_path_factory.mktemp("separate")
    cfg = TokenizerConfig(vocab_size=400, joint=False, model_type="bpe")
    return Tokenizer.train(*lines, out, cfg), out


def test_special_ids_are_fixed_in_every_vocabulary(joint, separate):
    assert (PAD, UNK, BOS, EOS) == (0, 1, 2, 3)
    for tok, _ in (joint, separate):
        for sp in (tok._src, tok._tgt):
            assert [sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()] == [PAD, UNK, BOS, EOS]
        assert tok.tgt_pieces([PAD, UNK, BOS, EOS]) == ["<pad>", "<unk>", "<s>", "</s>"]


def test_joint_writes_one_model_and_loads_back(joint, lines):
    tok, out = joint
    assert tok.joint and tok.src_vocab_size == tok.tgt_vocab_size == 500
    assert sorted(p.name for p in out.iterdir()) == ["spm.model", "tokenizer.json"]
    again = Tokenizer.load(out)
    assert again.joint
    sample = lines[0][:50] + lines[1][:50]
    assert again.encode_src(sample) == tok.encode_src(sample) == tok.encode_tgt(sample)


def test_separate_models_per_side(separate, lines):
    tok, out = separate
    assert not tok.joint and tok.src_vocab_size == tok.tgt_vocab_size == 400
    assert sorted(p.name for p in out.iterdir()) == ["src.model", "tgt.model", "tokenizer.json"]
    de = lines[0][:50]
    assert tok.encode_src(de) != tok.encode_tgt(de)  # a German model and an English one
    again = Tokenizer.load(out)
    assert not again.joint and again.encode_tgt(lines[1][:50]) == tok.encode_tgt(lines[1][:50])


def test_rebuilding_with_other_layout_replaces_stale_files(lines, tmp_path):
    small = (lines[0][:500], lines[1][:500])
    Tokenizer.train(*small, tmp_path, TokenizerConfig(vocab_size=200, joint=False))
    Tokenizer.train(*small, tmp_path, TokenizerConfig(vocab_size=200))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spm.model", "tokenizer.json"]
    Tokenizer.train(*small, tmp_path, TokenizerConfig(vocab_size=200, joint=False))
    assert not Tokenizer.load(tmp_path).joint


def test_state_round_trips_through_a_checkpoint(joint, separate, lines):
    for tok, _ in (joint, separate):
        state = tok.to_state()
        assert isinstance(state["src"], bytes) and state["joint"] == tok.joint
        assert (state["tgt"] is None) == tok.joint
        buf = io.BytesIO()
        torch.save({"tokenizer": state}, buf)
        buf.seek(0)
        back = Tokenizer.from_state(torch.load(buf)["tokenizer"])  # weights_only load works
        assert back.joint == tok.joint
        assert back.encode_src(lines[0][:20]) == tok.encode_src(lines[0][:20])
        assert back.encode_tgt(lines[1][:20]) == tok.encode_tgt(lines[1][:20])


def test_encode_decode_round_trip_without_specials(joint, lines):
    tok, _ = joint
    text = lines[1][:200]
    ids = tok.encode_tgt(text)
    assert all(ids) and not any({PAD, BOS, EOS} & set(seq) for seq in ids)
    assert tok.decode_tgt(ids) == text
    noisy = [[BOS] + seq + [EOS, PAD, PAD] for seq in ids]
    assert tok.decode_tgt(noisy) == text


def test_pieces_spell_the_sentence(joint, lines):
    tok, _ = joint
    line = lines[0][3]
    pieces = tok.src_pieces(line)
    assert "".join(pieces).replace("\u2581", " ").strip() == line
    ids = tok.encode_tgt([line])[0]
    assert len(tok.tgt_pieces(ids)) == len(ids)


def test_bad_ids_and_small_corpora_and_missing_models_are_user_errors(joint, tmp_path):
    tok, _ = joint
    with pytest.raises(NMTError, match="outside the target vocabulary"):
        tok.decode_tgt([[5, 10_000]])
    with pytest.raises(NMTError, match="larger vocab_size"):  # too few for the characters
        Tokenizer.train(["ein hund läuft über die wiese"] * 3, ["a dog crosses a field"] * 3,
                        tmp_path / "t", TokenizerConfig(vocab_size=16))
    with pytest.raises(NMTError, match="no tokenizer here"):
        Tokenizer.load(tmp_path)
    (tmp_path / "spm.model").write_bytes(b"not a model")
    with pytest.raises(NMTError, match="not a SentencePiece model"):
        Tokenizer.load(tmp_path)


def test_cli_build_encode_decode(lines, tmp_path):
    src, tgt = tmp_path / "train.de.gz", tmp_path / "train.en"
    src.write_bytes(gzip.compress("\n".join(lines[0][:800]).encode() + b"\n"))
    tgt.write_text("\n".join(lines[1][:800]) + "\n", encoding="utf-8")
    out = tmp_path / "tok"
    runner = CliRunner()
    r = runner.invoke(app, ["tokenizer", "build", "--src", str(src), "--tgt", str(tgt),
                            "--vocab-size", "300", "--out", str(out), "--model-type", "bpe",
                            "--separate", "--character-coverage", "0.9999"])
    assert r.exit_code == 0, r.output
    assert (out / "src.model").is_file() and (out / "tgt.model").is_file()
    tok = Tokenizer.load(out)
    assert tok.tgt_vocab_size == 300

    r = runner.invoke(app, ["tokenizer", "encode", "--model", str(out), "--side", "tgt",
                            "A dog runs."])
    assert r.exit_code == 0, r.output
    ids = [int(i) for i in r.output.split("ids:")[1].split()]
    assert ids == tok.encode_tgt(["A dog runs."])[0]
    assert " ".join(tok.tgt_pieces(ids)) in r.output

    r = runner.invoke(app, ["tokenizer", "decode", "--model", str(out), *map(str, ids)])
    assert r.exit_code == 0 and r.output.strip() == "A dog runs."


def test_cli_errors_are_one_line_not_tracebacks(tmp_path):
    runner = CliRunner()
    for args in (["tokenizer", "build", "--src", str(tmp_path / "a"), "--out", str(tmp_path)],
                 ["tokenizer", "build", "--src", str(tmp_path / "a"), "--tgt",
                  str(tmp_path / "b"), "--out", str(tmp_path)],
                 ["tokenizer", "build", "--out", str(tmp_path), "--model-type", "wordpiece"],
                 ["tokenizer", "encode", "--model", str(tmp_path), "hello"],
                 ["tokenizer", "encode", "--model", str(tmp_path), "--side", "both", "hi"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert "error:" in r.output and "Traceback" not in r.output
    assert "--side" in r.output


def test_cli_build_from_recipe_training_split(lines, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.de").write_text("\n".join(lines[0][:600]) + "\n", encoding="utf-8")
    (data / "train.en").write_text("\n".join(lines[1][:600]) + "\n", encoding="utf-8")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{source: files, path: {data}, max_train_pairs: 500}}\n"
                      f"tokenizer: {{vocab_size: 250, model_type: bpe}}\n", encoding="utf-8")
    out = tmp_path / "tok"
    r = CliRunner().invoke(app, ["tokenizer", "build", "--recipe", str(recipe), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "500 pairs" in r.output and "bpe" in r.output
    tok = Tokenizer.load(out)
    assert tok.joint and tok.src_vocab_size == 250
    r = CliRunner().invoke(app, ["tokenizer", "build", "--recipe", str(recipe), "--out", str(out),
                                 "--vocab-size", "260", "--separate"])
    assert r.exit_code == 0, r.output
    tok = Tokenizer.load(out)
    assert not tok.joint and tok.src_vocab_size == tok.tgt_vocab_size == 260


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_vocab_size_is_an_upper_bound_a_small_corpus_builds_what_it_allows(model_type, tmp_path):
    said = []
    tok = Tokenizer.train(["ein hund läuft"] * 3, ["a dog runs"] * 3, tmp_path,
                          TokenizerConfig(vocab_size=8000, model_type=model_type),
                          log=said.append)
    assert 4 < tok.src_vocab_size < 8000
    assert len(said) == 1 and f"built a {tok.src_vocab_size}-piece" in said[0]
    assert "not 8,000" in said[0]
    again = Tokenizer.load(tmp_path)  # what was built is recorded beside the model
    assert again.notes == said
    built = again.info["models"]["joint"]
    assert (built["vocab_size"], built["asked"]) == (tok.src_vocab_size, 8000)
    assert again.encode_src(["ein hund"]) == tok.encode_src(["ein hund"])


def test_a_corpus_that_fits_gets_exactly_vocab_size_and_no_note(lines, tmp_path):
    said = []
    tok = Tokenizer.train(lines[0][:300], lines[1][:300], tmp_path,
                          TokenizerConfig(vocab_size=300), log=said.append)
    assert tok.src_vocab_size == 300 and said == [] and tok.info["notes"] == []


def test_sampling_and_coverage_by_script():
    from nmt.tokenizer import CJK_COVERAGE, coverage_for, sample

    lines = [f"line {i}" for i in range(100)] + ["", "  "]
    assert sample(lines, 0) == sample(lines, 500) == lines[:100]  # all non-empty lines
    got = sample(lines, 10)
    assert len(got) == 10 and got == sample(lines, 10)  # seeded
    assert got == sorted(got, key=lines.index)  # in corpus order
    assert coverage_for(["ein Hund läuft", "Собака бежит", "ο σκύλος"]) == 1.0
    assert coverage_for(["犬が走っている", "一只狗在跑", "개가 달린다"]) == CJK_COVERAGE


def test_tokenizer_build_and_data_stats_say_what_was_built(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for split in ("train", "val", "test_2016_flickr"):
        (d / f"{split}.de").write_text("ein hund läuft\nzwei katzen schlafen\n")
        (d / f"{split}.en").write_text("a dog runs\ntwo cats sleep\n")
    res = CliRunner().invoke(app, ["tokenizer", "build", "--src", str(d / "train.de"), "--tgt",
                                   str(d / "train.en"), "--out", str(tmp_path / "tok")])
    assert res.exit_code == 0, res.output
    built = Tokenizer.load(tmp_path / "tok").src_vocab_size
    assert f"built a {built}-piece joint unigram model, not 8,000" in res.output
    res = CliRunner().invoke(app, ["data", "stats", "--tokenizer", str(tmp_path / "tok"),
                                   "--set", "data.source=files", "--set", f"data.path={d}"])
    assert res.exit_code == 0, res.output
    assert f"{built} pieces (asked for 8,000)" in " ".join(res.output.split())
