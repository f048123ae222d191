// The live page: asks /systems what is loaded, sends the sentence to /translate with
// attention, and draws one card per system (view.js).
(function () {
  "use strict";
  var systems = [];
  var form = document.getElementById("form"), status = document.getElementById("status");
  var out = document.getElementById("systems"), go = document.getElementById("go");

  function meta(s) {
    var bits = [s.family === "transformer" ? "Transformer" : "RNN, attention: " + s.attention,
                (s.params >= 1e6 ? (s.params / 1e6).toFixed(1) + "M"
                                 : Math.round(s.params / 1e3) + "k") + " parameters"];
    Object.keys(s.bleu || {}).forEach(function (k) { bits.push(k + " BLEU " + s.bleu[k]); });
    return bits.join(" \u00b7 ");
  }

  fetch("/systems").then(function (r) { return r.json(); }).then(function (list) {
    systems = list;
    status.textContent = list.length + " system" + (list.length === 1 ? "" : "s") + " loaded";
  }).catch(function (e) { status.textContent = "cannot reach the server: " + e; status.className = "error"; });

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = document.getElementById("src").value.trim();
    if (!text) return;
    go.disabled = true;
    status.className = "";
    status.textContent = "translating\u2026";
    var t0 = performance.now();
    fetch("/translate", {method: "POST", headers: {"Content-Type": "application/json"},
                         body: JSON.stringify({text: text, attention: true,
                                               beam: +document.getElementById("beam").value || 5})})
      .then(function (r) { return r.json().then(function (j) { return [r.ok, j]; }); })
      .then(function (res) {
        var ok = res[0], j = res[1];
        if (!ok) throw new Error(j.error || "request failed");
        out.textContent = "";
        j.systems.forEach(function (name) {
          var info = systems.filter(function (s) { return s.name === name; })[0];
          out.appendChild(NMTView.card({name: name, meta: info ? meta(info) : "",
                                        translation: j.translations[name][0],
                                        attention: j.attention[name][0]}));
        });
        status.textContent = "done in " + Math.round(performance.now() - t0) + " ms";
      })
      .catch(function (e) { status.textContent = String(e.message || e); status.className = "error"; })
      .then(function () { go.disabled = false; });
  });
})();
