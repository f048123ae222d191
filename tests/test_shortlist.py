"""Vocabulary shortlist: the candidates, the restricted output layer and its place in decoding."""
import json
import random

import pytest
import torch
from helpers_ckpt import FAMILIES, TOY_VOCAB, batch_of, tiny_model
from typer.testing import CliRunner

from cli import app
from nmt import checkpoint
from nmt.config import DecodeConfig, Recipe, to_dict, validate
from nmt.ensemble import Ensemble
from nmt.errors import NMTError
from nmt.layout import SHORTLIST
from nmt.search import beam_search, greedy, max_lengths, translate_batch
from nmt.seq2seq import OutputLayer, output_subset
from nmt.shortlist import Shortlist, build, for_checkpoint
from nmt.tokenizer import EOS

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCES = [[5, 6, 7, 8, 9, 10, 11], [4, 12], [15, 14, 13, 12, 11, 10, 9, 8, 7, 6], [7], []]
EVERY = torch.arange(TOY_VOCAB)


def _toy_pairs(n: int = 200, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Source piece s translates to target piece s + 1 (wrapping within the words 4..15)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        x = [rng.randrange(4, TOY_VOCAB) for _ in range(rng.randrange(1, 8))]
        out.append((x, [4 + (s - 3) % 12 for s in x]))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_a_subset_of_every_piece_decodes_as_the_full_softmax(family):
    model = tiny_model(family, seed=3)
    src, src_len = batch_of(SOURCES)
    ml = max_lengths(src_len, 1.5, 2)
    full = beam_search(model, src, src_len, 4, 0.6, ml, nbest=3)
    sub = beam_search(model, src, src_len, 4, 0.6, ml, nbest=3, vocab=EVERY)
    assert [[y for y, _ in h] for h in sub] == [[y for y, _ in h] for h in full]
    assert [s for h in sub for _, s in h] == pytest.approx([s for h in full for _, s in h],
                                                           abs=1e-5)
    assert greedy(model, src, src_len, ml, vocab=EVERY) == greedy(model, src, src_len, ml)


def test_an_ensemble_restricts_every_member():
    members = [tiny_model("transformer", seed=7), tiny_model("rnn-bahdanau", seed=8)]
    model = Ensemble(members).eval()
    src, src_len = batch_of(SOURCES)
    ml = max_lengths(src_len, 1.5, 2)
    full = beam_search(model, src, src_len, 3, 0.6, ml)
    sub = beam_search(model, src, src_len, 3, 0.6, ml, vocab=EVERY)
    assert [h[0][0] for h in sub] == [h[0][0] for h in full]
    allowed = torch.tensor([0, 1, 2, EOS, 5, 8])
    with output_subset(model, allowed):
        layers = [m for m in model.modules() if isinstance(m, OutputLayer)]
        assert len(layers) == 2 and all(m.rows[0].size(0) == 6 for m in layers)
    used = {t for h in beam_search(model, src, src_len, 3, 0.6, ml, vocab=allowed)
            for y, _ in h for t in y}
    assert used <= {1, 5, 8}


@pytest.mark.parametrize("family", ["transformer", "rnn-bahdanau"])
def test_under_bf16_autocast_a_full_subset_decodes_as_the_full_softmax(family):
    """The subset's rows are cast to bf16 once, as autocast's weight cache casts the whole
    matrix: the same products, the same translations."""
    model = tiny_model(family, seed=6)
    src, src_len = batch_of(SOURCES)
    ml = max_lengths(src_len, 1.5, 2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full = beam_search(model, src, src_len, 3, 0.6, ml)
        sub = beam_search(model, src, src_len, 3, 0.6, ml, vocab=EVERY)
    assert [h[0][0] for h in sub] == [h[0][0] for h in full]


@pytest.mark.parametrize("family", ["transformer", "rnn-bahdanau"])
def test_a_restricted_search_outputs_only_allowed_pieces_and_ends(family):
    model = tiny_model(family, seed=4)
    src, src_len = batch_of(SOURCES)
    ml = max_lengths(src_len, 1.5, 2)
    allowed = torch.tensor([0, 1, 2, EOS, 6, 9, 13])
    hyps = beam_search(model, src, src_len, 3, 0.6, ml, nbest=3, vocab=allowed)
    used = {t for h in hyps for y, _ in h for t in y}
    assert used and used <= {1, 6, 9, 13}          # UNK and the allowed words only
    assert all(len(h) == 3 for h in hyps)          # every hypothesis finished, with EOS
    assert set(greedy(model, src, src_len, ml, vocab=allowed)[0]) <= {1, 6, 9, 13}


@pytest.mark.parametrize("vocab", [[0, 1, 2, 6, 9], [0, 1, 2, 3, 9, 6], [0, 1, 2, 3, 6, 6]])
def test_a_subset_without_the_specials_or_unsorted_is_refused(vocab):
    model = tiny_model("rnn-none")
    src, src_len = batch_of(SOURCES[:2])
    with pytest.raises(ValueError, match="sorted"):
        beam_search(model, src, src_len, 2, 0.6, 5, vocab=torch.tensor(vocab))


def test_output_subset_restores_the_layer_even_on_error():
    model = tiny_model("transformer")
    layers = [m for m in model.modules() if isinstance(m, OutputLayer)]
    assert layers
    with pytest.raises(RuntimeError):
        with output_subset(model, torch.tensor([0, 1, 2, 3, 7])):
            assert all(m.rows[0].shape == (5, m.in_features) for m in layers)
            raise RuntimeError("boom")
    assert all(m.rows is None for m in layers)
    with output_subset(model, None):  # off: nothing is touched
        assert all(m.rows is None for m in layers)


def test_candidates_rank_by_dice_and_always_hold_eos_and_the_frequent_pieces():
    pairs = _toy_pairs()
    sl = build(pairs, TOY_VOCAB, TOY_VOCAB, max_k=3)
    for s in range(4, TOY_VOCAB):  # the translation of each word co-occurs best with it
        assert sl.candidates[s, 0].item() == 4 + (s - 3) % 12
    counts = torch.bincount(torch.tensor([t for _, y in pairs for t in y]), minlength=TOY_VOCAB)
    assert counts[sl.frequent].tolist() == sorted(counts.tolist(), reverse=True)
    src, _ = batch_of([[5, 6], [7]])
    vocab = sl.vocabulary(src, 1, 2)
    assert vocab.tolist() == sorted(set(vocab.tolist()))                      # sorted, unique
    assert set(range(EOS + 1)) <= set(vocab.tolist())                         # specials, EOS
    assert set(sl.frequent[:2].tolist()) <= set(vocab.tolist())               # frequent
    assert {sl.candidates[s, 0].item() for s in (5, 6, 7)} <= set(vocab.tolist())
    with pytest.raises(NMTError, match="decode.shortlist"):
        sl.vocabulary(src, 4, 0)


def test_the_build_is_deterministic():
    pairs = _toy_pairs(300, seed=1)
    a, b = build(pairs, TOY_VOCAB, TOY_VOCAB), build(list(pairs), TOY_VOCAB, TOY_VOCAB)
    shuffled = build(random.Random(2).sample(pairs, len(pairs)), TOY_VOCAB, TOY_VOCAB)
    for other in (b, shuffled):  # Dice and frequency do not depend on the order of the pairs
        assert torch.equal(a.candidates, other.candidates)
        assert torch.equal(a.frequent, other.frequent)


def test_translate_batch_uses_the_shortlist_only_when_asked():
    model = tiny_model("rnn-luong-general", seed=5)
    src, src_len = batch_of([[5, 6, 7], [8], [6, 5]])
    off, on = DecodeConfig(beam=3), DecodeConfig(beam=3, shortlist=2, shortlist_frequent=0)
    plain = translate_batch(model, src, src_len, off)
    model.shortlist = build(_toy_pairs(), TOY_VOCAB, TOY_VOCAB, max_k=2)
    assert translate_batch(model, src, src_len, off) == plain        # shortlist 0: no-op
    allowed = set(model.shortlist.vocabulary(src, 2, 0).tolist())
    assert allowed < set(range(TOY_VOCAB))
    shortlisted = translate_batch(model, src, src_len, on)
    assert {t for h in shortlisted for y, _ in h for t in y} <= allowed
    # every piece a candidate: the full softmax's translations
    model.shortlist = Shortlist(EVERY.repeat(TOY_VOCAB, 1), EVERY)
    full = translate_batch(model, src, src_len, DecodeConfig(beam=3, shortlist=TOY_VOCAB,
                                                             shortlist_frequent=0))
    assert [[y for y, _ in h] for h in full] == [[y for y, _ in h] for h in plain]


@pytest.mark.parametrize("field, value", [("shortlist", -1), ("shortlist", 101),
                                          ("shortlist_frequent", -2)])
def test_recipe_errors_name_the_field(field, value):
    r = Recipe()
    setattr(r.decode, field, value)
    with pytest.raises(NMTError, match=f"decode.{field}"):
        validate(r)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, trained_run):
    """A copy of the shared tiny Transformer whose recipe trains on the first 300 Multi30k
    pairs (the shortlist is written beside it)."""
    d = tmp_path_factory.mktemp("shortlist-run")
    ckpt = checkpoint.load(trained_run)
    recipe = Recipe(**{**vars(Recipe()), "name": "tiny"})
    recipe.data.max_train_pairs = 300
    ckpt["recipe"]["data"] = to_dict(recipe)["data"]
    checkpoint.save(d / "best.pt", {k: v for k, v in ckpt.items()
                                    if k not in ("path", "format", "nmt_version",
                                                 "torch_version")})
    return d


def test_built_once_beside_the_checkpoint_and_used_by_translate(small_run, data_dir, tmp_path,
                                                                monkeypatch):
    monkeypatch.setenv("NMT_DATA_DIR", str(data_dir))
    model, tok, recipe = checkpoint.load_for_inference(small_run)
    first = for_checkpoint(small_run, tok, recipe)
    saved = small_run / SHORTLIST
    assert saved.is_file()
    stamp = saved.stat().st_mtime_ns
    again = for_checkpoint(small_run / "best.pt", tok, recipe)  # read, not built again
    assert saved.stat().st_mtime_ns == stamp
    assert torch.equal(first.candidates, again.candidates)
    recipe.data.max_train_pairs = 200  # other training data: built again
    assert for_checkpoint(small_run, tok, recipe).key != first.key

    src = tmp_path / "src.de"
    src.write_text("Ein Mann fährt Fahrrad.\nZwei Hunde spielen im Schnee.\n", encoding="utf-8")
    out = tmp_path / "out.en"
    r = CliRunner().invoke(app, ["translate", "--checkpoint", str(small_run), str(src), "-o",
                                 str(out), "--device", "cpu", "--shortlist", "1",
                                 "--shortlist-frequent", "0"])
    assert r.exit_code == 0, r.output
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2
    r = CliRunner().invoke(app, ["eval", "--checkpoint", str(small_run), "--src", str(src),
                                 "--ref", str(src), "--device", "cpu", "--shortlist", "3",
                                 "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["decode"]["shortlist"] == 3
