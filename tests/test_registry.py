"""The registry of attention kinds and model families (nmt/registry.py): every name it lists is
accepted by the recipe check, listed in its error, built by build_model with the classes its
entry names, and described in the report; and the network code needs neither torch at config
time nor SentencePiece at all."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nmt import attention, decoders, registry
from nmt.compare import design
from nmt.config import ATTENTIONS, ModelConfig, Recipe, recipe_from_dict
from nmt.errors import NMTError
from nmt.model import MODELS, RNNSeq2Seq, build_model
from nmt.transformer import Transformer

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def tiny(**kw) -> ModelConfig:
    base = dict(emb_dim=8, hidden_size=12, enc_layers=1, dec_layers=1, d_model=16, heads=2,
                ff_dim=32, dropout=0.0)
    return ModelConfig(**{**base, **kw})


def test_the_recipe_check_accepts_exactly_the_registry_names():
    assert ATTENTIONS == registry.ATTENTIONS == tuple(registry.ATTENTION_KINDS)
    for name in registry.ATTENTIONS:
        assert recipe_from_dict({"model": {"arch": "rnn", "attention": name}}).model.attention \
            == name
    for name in registry.ARCHS:
        assert recipe_from_dict({"model": {"arch": name}}).model.arch == name


def test_the_recipe_check_lists_the_choices():
    with pytest.raises(NMTError) as e:
        recipe_from_dict({"model": {"attention": "luong-bilinear"}})
    assert "model.attention" in str(e.value) and "'luong-bilinear'" in str(e.value)
    for name in registry.ATTENTIONS:
        assert name in str(e.value)
    with pytest.raises(NMTError) as e:
        recipe_from_dict({"model": {"arch": "cnn"}})
    assert "model.arch" in str(e.value) and "must be transformer or rnn" in str(e.value)


@pytest.mark.parametrize("name", ATTENTIONS)
@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_every_attention_kind_builds_from_its_entry(name, rnn_type):
    kind = registry.ATTENTION_KINDS[name]
    model = build_model(tiny(arch="rnn", attention=name, rnn_type=rnn_type), 30, 30).eval()
    assert isinstance(model, RNNSeq2Seq)
    assert type(model.decoder) is getattr(decoders, kind.decoder)
    att = model.decoder.attention
    if not kind.attends:
        assert att is None
    else:
        assert type(att.score) is getattr(attention, kind.score)
        assert (att.local is not None) == kind.local
    src, src_len = torch.tensor([[5, 6, 7, 3], [8, 9, 3, 0]]), torch.tensor([4, 3])
    logits, weights = model(src, src_len, torch.tensor([[2, 5, 6], [2, 7, 0]]))
    assert logits.shape == (2, 3, 30) and torch.isfinite(logits).all()
    assert (weights is None) == (not kind.attends)
    if weights is not None:                                   # (B, T, S): distributions
        assert torch.allclose(weights.sum(-1), torch.ones(2, 3))


def test_every_family_builds_its_named_class():
    assert set(MODELS) == {f.model for f in registry.FAMILIES.values()}
    assert isinstance(build_model(tiny(arch="transformer"), 30, 30), Transformer)
    assert isinstance(build_model(tiny(arch="rnn"), 30, 30), RNNSeq2Seq)


def test_every_entry_names_classes_that_exist():
    for kind in registry.ATTENTION_KINDS.values():
        assert issubclass(getattr(decoders, kind.decoder), decoders.RNNDecoder), kind.name
        if kind.attends:
            score = getattr(attention, kind.score)
            assert issubclass(score, torch.nn.Module) and hasattr(score, "proj_keys"), kind.name
        assert kind.about and kind.design(tiny(arch="rnn", attention=kind.name))
    for family in registry.FAMILIES.values():
        assert family.about and family.model in MODELS


def test_the_description_each_system_gets():
    """The report's design column, as it read before the registry (report.md stays the
    same): Transformer from its layers and heads, RNNs by where and how they attend."""
    def line(**kw) -> str:
        return design(Recipe(model=ModelConfig(**kw)))

    assert line(arch="transformer", dec_layers=6, heads=8) == \
        "6 layers of self- and cross-attention, 8 heads; no recurrence"
    assert line(arch="rnn", attention="none") == \
        "fixed context: the encoder summary c, into the RNN and the readout at every step"
    assert line(arch="rnn", attention="bahdanau") == \
        "attends from s_{i-1} (before the RNN step); c_i into the RNN and the readout"
    readout = "readout ~h_t = tanh(W_c [c_t; h_t])"
    for name, label in (("luong-dot", "dot"), ("luong-general", "general"),
                        ("luong-concat", "concat"), ("scaled-dot", "scaled-dot"),
                        ("cosine", "cosine"), ("luong-local", "local")):
        assert line(arch="rnn", attention=name) == \
            f"attends from h_t (after the RNN step), {label} score; {readout}; ~h_t fed back " \
            "(input feeding)"
        assert line(arch="rnn", attention=name, input_feeding=False) == \
            f"attends from h_t (after the RNN step), {label} score; {readout}"
    # every kind gets a line of its own family: no two decoders share one
    lines = {name: line(arch="rnn", attention=name) for name in ATTENTIONS}
    assert len(set(lines.values())) == len(ATTENTIONS)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(ROOT),
                                                       "OMP_NUM_THREADS": "1"})


def test_the_recipe_check_and_the_registry_need_no_torch():
    r = _python("import sys; sys.modules['torch'] = None\n"
                "from nmt.config import recipe_from_dict\n"
                "from nmt.registry import design\n"
                "r = recipe_from_dict({'model': {'arch': 'rnn', 'attention': 'luong-dot'}})\n"
                "print(design(r.model))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("attends from h_t")


def test_models_build_and_decode_without_sentencepiece():
    """The network code (models, search) reads the special ids and device copies from modules
    of their own: with SentencePiece's import blocked it builds every family and kind and
    searches."""
    r = _python("""
import sys
sys.modules["sentencepiece"] = None   # `import sentencepiece` now raises ImportError
import torch
from nmt.config import ATTENTIONS, DecodeConfig, ModelConfig
from nmt.model import build_model
from nmt.search import translate_batch
small = dict(emb_dim=8, hidden_size=12, enc_layers=1, dec_layers=1, d_model=16, heads=2,
             ff_dim=32)
configs = [ModelConfig(arch="transformer", **small)] + \\
    [ModelConfig(arch="rnn", attention=a, **small) for a in ATTENTIONS]
src, src_len = torch.tensor([[5, 6, 7, 3]]), torch.tensor([4])
for cfg in configs:
    model = build_model(cfg, 30, 30).eval()
    with torch.inference_mode():
        hyps = translate_batch(model, src, src_len, DecodeConfig(beam=2, max_len_b=5), 8)
    assert len(hyps) == 1
assert "nmt.tokenizer" not in sys.modules
print(len(configs), "built")
""")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(len(ATTENTIONS) + 1), "built"]
