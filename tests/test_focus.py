"""attention_focus: the numbers that show where an RNN's attention goes."""
import math

import torch

from nmt.config import ModelConfig
from nmt.focus import attention_focus
from nmt.model import build_model


def _pairs(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        s, t = torch.randint(2, 9, (2,), generator=g).tolist()
        out.append((torch.randint(4, 40, (s,), generator=g).tolist(),
                    torch.randint(4, 40, (t,), generator=g).tolist()))
    return out


def _model(attention):
    torch.manual_seed(0)
    cfg = ModelConfig(arch="rnn", attention=attention, emb_dim=16, hidden_size=16, enc_layers=1,
                      dec_layers=1, dropout=0.0)
    return build_model(cfg, 40, 40)


def test_numbers_are_shares_and_uniform_at_init():
    f = attention_focus(_model("luong-dot"), _pairs(), 200, "cpu")
    for k in ("sharpness", "on_eos", "on_first"):
        assert 0.0 <= f[k] <= 1.0
    # at initialisation the scores are small: the weights are near uniform
    assert f["entropy"] > 0.9


def test_collapsed_attention_reads_as_collapsed(monkeypatch):
    model = _model("bahdanau")
    forward = model.forward

    def on_eos(src, src_len, tgt_in):  # all weight on each sentence's EOS
        logits, attn = forward(src, src_len, tgt_in)
        hard = torch.zeros_like(attn)
        hard[torch.arange(len(src_len)), :, src_len - 1] = 1.0
        return logits, hard

    monkeypatch.setattr(model, "forward", on_eos)
    f = attention_focus(model, _pairs(), 200, "cpu")
    assert f["sharpness"] == 1.0 and f["on_eos"] == 1.0
    assert f["entropy"] < 1e-6 and f["on_first"] < 1.0


def test_none_without_a_single_attention_map():
    assert attention_focus(_model("none"), _pairs(), 200, "cpu") is None
    cfg = ModelConfig(arch="transformer", d_model=16, heads=2, ff_dim=32, enc_layers=1,
                      dec_layers=1, dropout=0.0)
    assert attention_focus(build_model(cfg, 40, 40), _pairs(), 200, "cpu") is None
    general = attention_focus(_model("luong-general"), _pairs(), 200, "cpu")
    assert math.isfinite(general["sharpness"])
