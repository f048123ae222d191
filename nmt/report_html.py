"""`report.html` beside a comparison's report.md: the test examples the report picks, each with
the reference, every system's translation and its attention as the live page of `nmt serve`
shows it (hover an output token to light up the source tokens it attends to). Self-contained:
the data, nmt/static/view.js and style.css are inlined, so the file opens offline, anywhere."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Mapping, Sequence

from nmt import layout

STATIC = Path(__file__).parent / "static"

_RENDER = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("nmt-data").textContent);
  var root = document.getElementById("examples");
  data.examples.forEach(function (ex) {
    var box = NMTView.el("section", "example");
    box.appendChild(NMTView.el("h2", null, data.split + " line " + ex.line));
    box.appendChild(NMTView.el("div", "source", "source: " + ex.source));
    box.appendChild(NMTView.el("div", "ref", "reference: " + ex.reference));
    var row = NMTView.el("div", "systems");
    ex.systems.forEach(function (s) { row.appendChild(NMTView.card(s)); });
    box.appendChild(row);
    root.appendChild(box);
  });
})();
"""


def _attention(view) -> dict | None:
    """The report's maps for one sentence (plots.sentence_attention: source pieces, output
    pieces, {name: (T, S)}) in the page's format: one RNN map, or the named maps to pick from."""
    if view is None:
        return None
    src, out, maps = view
    if not maps:
        return {"source": src, "target": out, "kind": "none"}
    rows = {k: [[round(float(w), 3) for w in row] for row in m[:len(out), :len(src)].float()]
            for k, m in maps.items()}
    if list(rows) == ["attention"]:
        return {"source": src, "target": out, "kind": "rnn", "weights": rows["attention"]}
    return {"source": src, "target": out, "kind": "maps", "maps": rows}


def write(path: Path, title: str, split: str, corpus, picks: list[int],
          translations: dict[str, Sequence[str] | Mapping[int, str]],
          views: dict) -> None:
    """report.html at `path`. translations: system -> its hypotheses of `split` by line index
    (a list of them all, or line -> hypothesis for the picked lines); views: (system, line
    index) -> what the report drew for that sentence."""
    examples = []
    for i in picks:
        systems = []
        for name, hyps in translations.items():
            a = _attention(views.get((name, i)))
            meta = f"heatmap: the greedy output, as in {layout.REPORT}'s figures" if a and \
                a["kind"] != "none" else ""
            systems.append({"name": name, "meta": meta, "translation": hyps[i], "attention": a})
        examples.append({"line": i + 1, "source": corpus.src[i], "reference": corpus.tgt[i],
                         "systems": systems})
    data = json.dumps({"split": split, "examples": examples}, ensure_ascii=False)
    data = data.replace("</", "<\\/")  # no "</script>" inside the data block
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}: translations and attention</title>
<style>
{(STATIC / "style.css").read_text(encoding="utf-8")}
</style>
</head>
<body>
<header><h1>{html.escape(title)} <span class="sub">examples from {html.escape(split)}: every
system's translation and attention ({layout.REPORT} has the scores)</span></h1></header>
<main>
<p class="hint">Hover an output token to see which source tokens it attends to.</p>
<div id="examples"></div>
</main>
<script type="application/json" id="nmt-data">{data}</script>
<script>
{(STATIC / "view.js").read_text(encoding="utf-8")}
</script>
<script>{_RENDER}</script>
</body>
</html>
"""
    Path(path).write_text(page, encoding="utf-8")
