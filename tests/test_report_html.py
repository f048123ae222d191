"""report.html (nmt/report_html.py): self-contained (no file or network fetched), its data
what the report computed, every system's translation of every picked line, safe to inline."""
import json
import re
from types import SimpleNamespace

import torch

from nmt import report_html


def test_report_html_inlines_everything_and_keeps_the_data(tmp_path):
    corpus = SimpleNamespace(src=["a b", "c </script> d", "e"], tgt=["A B", "C D", "E"])
    rnn = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])                      # (T, S)
    views = {("rnn", 1): (["▁c", "▁d", "</s>"], ["▁C", "</s>"], {"attention": rnn}),
             ("none", 1): (["▁c", "▁d", "</s>"], ["▁C", "</s>"], {}),
             ("t", 1): (["▁c", "▁d", "</s>"], ["▁C", "</s>"],
                        {"layer 1 (heads averaged)": rnn, "layer 1, head 1": rnn.flip(1)})}
    hyps = {n: ["x", "y <b>", "z"] for n in ("rnn", "none", "t")}
    report_html.write(tmp_path / "report.html", "cmp & <co>", "test", corpus, [0, 1], hyps, views)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert not re.search(r'<(script|link|img)[^>]+(src|href)=', page)  # nothing fetched
    assert "<title>cmp &amp; &lt;co&gt;" in page
    data = re.search(r'<script type="application/json" id="nmt-data">(.*?)</script>', page,
                     re.S).group(1)
    ex = json.loads(data)["examples"]
    assert [e["line"] for e in ex] == [1, 2] and ex[1]["source"] == "c </script> d"
    by_name = {s["name"]: s for s in ex[1]["systems"]}
    assert [s["translation"] for s in ex[1]["systems"]] == ["y <b>"] * 3
    assert by_name["rnn"]["attention"]["kind"] == "rnn"
    assert by_name["rnn"]["attention"]["weights"] == [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]
    assert by_name["none"]["attention"]["kind"] == "none"
    assert list(by_name["t"]["attention"]["maps"]) == ["layer 1 (heads averaged)",
                                                       "layer 1, head 1"]
    assert all(s["attention"] is None for s in ex[0]["systems"])  # line 1: no heatmap drawn
    assert "window.NMTView" in page  # view.js inlined
