// The attention view shared by the live page (served by `nmt serve`) and report.html (inlined
// there): one card per system with its translation, its source and output tokens, and a heatmap;
// hovering an output token (or a heatmap row) lights up the source tokens it attends to.
// Attention kinds: "rnn" (weights T x S), "transformer" (L x H x T x S: layer and head selectors,
// "average" = the heads' mean), "maps" ({name: T x S}, as the report draws them), "none".
(function () {
  "use strict";

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // SentencePiece marks a word start with U+2581; shown as a gap before the token
  function tokenSpan(piece, cls) {
    var s = el("span", "tok " + cls);
    var start = piece.charAt(0) === "\u2581";
    s.textContent = start ? piece.slice(1) || "\u2581" : piece;
    if (start) s.classList.add("ws");
    return s;
  }

  function meanHeads(heads) {  // (H, T, S) -> (T, S)
    var T = heads[0].length, S = heads[0][0].length, H = heads.length, out = [];
    for (var t = 0; t < T; t++) {
      var row = [];
      for (var s = 0; s < S; s++) {
        var sum = 0;
        for (var h = 0; h < H; h++) sum += heads[h][t][s];
        row.push(sum / H);
      }
      out.push(row);
    }
    return out;
  }

  function color(w, max) {  // a cell: white to deep blue, scaled to the matrix's largest weight
    var a = max > 0 ? w / max : 0;
    return "rgba(29, 78, 216, " + a.toFixed(3) + ")";
  }

  // One system's card. info: {name, meta, translation, attention: {source, target, kind, ...}}
  function card(info) {
    var box = el("section", "system");
    box.dataset.system = info.name;
    box.appendChild(el("h3", null, info.name));
    if (info.meta) box.appendChild(el("div", "meta", info.meta));
    box.appendChild(el("div", "translation", info.translation));
    var a = info.attention;
    if (!a) return box;
    var srcRow = el("div", "tokens src"), tgtRow = el("div", "tokens tgt");
    srcRow.appendChild(el("span", "label", "source"));
    tgtRow.appendChild(el("span", "label", "output"));
    var srcSpans = a.source.map(function (p) { var s = tokenSpan(p, "src-token"); srcRow.appendChild(s); return s; });
    var tgtSpans = a.target.map(function (p) { var s = tokenSpan(p, "tgt-token"); tgtRow.appendChild(s); return s; });
    box.appendChild(srcRow);
    box.appendChild(tgtRow);
    if (a.kind === "none" || !a.weights && !a.maps) {
      box.appendChild(el("div", "none", "No attention: this RNN reads one fixed summary of the source."));
      return box;
    }
    var current = null;  // (T, S) now shown
    var pick = el("div", "pick"), heat = el("div", "heat");
    var selects = {};
    function choose() {
      if (a.kind === "rnn") current = a.weights;
      else if (a.kind === "maps") current = a.maps[selects.map.value];
      else {
        var heads = a.weights[+selects.layer.value];
        current = selects.head.value === "avg" ? meanHeads(heads) : heads[+selects.head.value];
      }
      draw();
    }
    function addSelect(name, label, options) {
      var l = el("label", null, label + " ");
      var s = el("select", "select-" + name);
      options.forEach(function (o) { var op = el("option", null, o[1]); op.value = o[0]; s.appendChild(op); });
      s.addEventListener("change", choose);
      l.appendChild(s);
      pick.appendChild(l);
      selects[name] = s;
      return s;
    }
    if (a.kind === "transformer") {
      var L = a.weights.length, H = a.weights[0].length, layers = [], heads = [["avg", "average"]];
      for (var i = 0; i < L; i++) layers.push([String(i), String(i + 1)]);
      for (var h = 0; h < H; h++) heads.push([String(h), String(h + 1)]);
      addSelect("layer", "layer", layers).value = String(L - 1);
      addSelect("head", "head", heads);
    } else if (a.kind === "maps") {
      addSelect("map", "map", Object.keys(a.maps).map(function (k) { return [k, k]; }));
    }
    box.appendChild(pick);
    box.appendChild(heat);

    function highlight(t) {  // light the source tokens output token t attends to
      tgtSpans.forEach(function (s, j) { s.classList.toggle("active", j === t); });
      var row = t === null ? null : current[t], max = row ? Math.max.apply(null, row) : 0;
      srcSpans.forEach(function (s, i) {
        var w = row && i < row.length ? row[i] : 0;
        s.dataset.weight = row ? w.toFixed(4) : "";
        s.style.backgroundColor = row ? "rgba(245, 158, 11, " + (max > 0 ? w / max : 0).toFixed(3) + ")" : "";
      });
      heat.querySelectorAll(".cell").forEach(function (c) { c.classList.toggle("row-on", +c.dataset.t === t); });
    }
    function draw() {
      heat.textContent = "";
      var T = Math.min(current.length, a.target.length), S = Math.min(current[0].length, a.source.length);
      heat.style.gridTemplateColumns = "auto repeat(" + S + ", 16px)";
      var max = 0;
      for (var t = 0; t < T; t++) for (var s = 0; s < S; s++) max = Math.max(max, current[t][s]);
      heat.appendChild(el("div"));
      for (s = 0; s < S; s++) heat.appendChild(el("div", "col-label", a.source[s].replace(/^\u2581/, "")));
      for (t = 0; t < T; t++) {
        var label = el("div", "row-label", a.target[t].replace(/^\u2581/, ""));
        heat.appendChild(label);
        for (s = 0; s < S; s++) {
          var c = el("div", "cell");
          c.dataset.t = t;
          c.style.backgroundColor = color(current[t][s], max);
          c.title = a.target[t] + " \u2192 " + a.source[s] + ": " + current[t][s].toFixed(3);
          (function (t) { c.addEventListener("mouseenter", function () { highlight(t); }); })(t);
          heat.appendChild(c);
        }
      }
    }
    tgtSpans.forEach(function (s, t) {
      s.addEventListener("mouseenter", function () { highlight(t); });
      s.addEventListener("mouseleave", function () { highlight(null); });
    });
    heat.addEventListener("mouseleave", function () { highlight(null); });
    choose();
    return box;
  }

  window.NMTView = { card: card, el: el };
})();
