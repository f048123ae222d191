from pathlib import Path

import pytest
import yaml

from nmt.config import load_recipe, recipe_from_dict, save_recipe
from nmt.errors import NMTError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, values):
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(values))
    return p


def test_unknown_key_names_key_file_and_closest(tmp_path):
    p = write(tmp_path, {"model": {"atention": "bahdanau"}})
    with pytest.raises(NMTError) as e:
        load_recipe(p)
    msg = str(e.value)
    assert "model.atention" in msg and str(p) in msg and "model.attention" in msg


def test_unknown_section(tmp_path):
    with pytest.raises(NMTError, match="trian"):
        load_recipe(write(tmp_path, {"trian": {}}))


@pytest.mark.parametrize("values, field", [
    ({"tokenizer": {"vocab_size": 0}}, "tokenizer.vocab_size"),
    ({"model": {"dropout": -0.1}}, "model.dropout"),
    ({"model": {"dropout": "high"}}, "model.dropout"),
    ({"train": {"lr": "fast"}}, "train.lr"),
    ({"train": {"batching": "sorted"}}, "train.batching"),
    ({"train": {"amp": "fp16"}}, "train.amp"),
    ({"decode": {"amp": "fp16"}}, "decode.amp"),
    ({"decode": {"batch_tokens": "big"}}, "decode.batch_tokens"),
    ({"decode": {"batch_tokens": 0}}, "decode.batch_tokens"),
    ({"decode": {"batch_tokens": True}}, "decode.batch_tokens"),
    ({"model": {"bidirectional": "yes"}}, "model.bidirectional"),
    ({"model": {"attention": "bahdanu"}}, "model.attention"),
])
def test_bad_values_name_the_field(values, field):
    with pytest.raises(NMTError, match=field.replace(".", r"\.")):
        recipe_from_dict(values)


def test_overrides_apply_and_are_typed(tmp_path):
    p = write(tmp_path, {"train": {"lr": 0.001}})
    r = load_recipe(p, ["train.lr=3e-4", "model.attention=luong-dot", "data.test=[val]"])
    assert r.train.lr == pytest.approx(3e-4)
    assert r.model.attention == "luong-dot"
    assert r.data.test == ["val"]
    assert r.name == "r"
    assert r.decode.batch_tokens == "auto"  # per device (distributed.decode_batch_tokens)
    assert load_recipe(p, ["decode.batch_tokens=512"]).decode.batch_tokens == 512
    with pytest.raises(NMTError, match="model.atention"):
        load_recipe(p, ["model.atention=dot"])
    with pytest.raises(NMTError, match="section.key=value"):
        load_recipe(p, ["train.lr"])


def test_resolved_recipe_round_trips(tmp_path):
    r = load_recipe(write(tmp_path, {"model": {"arch": "rnn"}}), ["train.seed=7"])
    save_recipe(r, tmp_path / "resolved.yaml")
    again = load_recipe(tmp_path / "resolved.yaml")
    assert again == r


def test_every_shipped_recipe_loads():
    from nmt.compare import load_comparison  # comparison recipes have their own schema

    found = sorted((ROOT / "recipes").rglob("*.yaml"))
    assert found, "recipes/ ships no recipe"
    for path in found:
        raw = yaml.safe_load(path.read_text())
        if "systems" in raw:
            load_comparison(path)
        else:
            load_recipe(path)


def test_duplicate_key_is_an_error(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("model:\n  attention: bahdanau\n  attention: none\n")
    with pytest.raises(NMTError, match="duplicate key 'attention'"):
        load_recipe(p)
