/* cliffdata report, one problem compared across models: each model's potential curve (k/N at its
   evaluated positions) on one plot, cliff markers, a legend and a table linking each trace's page.
   Every text from the data goes in through textContent (never innerHTML). */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var COLOURS = ["#0b4f8a", "#c2410c", "#15803d", "#7c3aed", "#be123c", "#0e7490", "#a16207", "#4b5563"];
  var svg = document.getElementById("plot");
  var W = 900, H = 320, L = 44, R = 12, Tm = 12, B = 30;
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    (parent || svg).appendChild(e);
    return e;
  }
  document.getElementById("question").textContent = D.question || "";
  var maxX = 1;
  D.traces.forEach(function (t) { maxX = Math.max(maxX, t.num_tokens - 1); });
  function x(i) { return L + (i + 1) / (maxX + 1) * (W - L - R); }     // token_index -1 (empty prefix) at the left edge
  function y(p) { return Tm + (1 - p) * (H - Tm - B); }
  [0, 0.25, 0.5, 0.75, 1].forEach(function (p) {
    el("line", {x1: L, x2: W - R, y1: y(p), y2: y(p), "class": "grid"});
    var t = el("text", {x: L - 6, y: y(p) + 4, "text-anchor": "end"}); t.textContent = p.toFixed(2);
  });
  el("line", {x1: L, x2: L, y1: Tm, y2: H - B, "class": "axis"});
  el("line", {x1: L, x2: W - R, y1: H - B, y2: H - B, "class": "axis"});
  var xl = el("text", {x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle"}); xl.textContent = "token index";
  var legend = document.getElementById("legend");
  var body = document.getElementById("models").tBodies[0];
  D.traces.forEach(function (t, k) {
    var colour = COLOURS[k % COLOURS.length];
    var g = el("g", {"class": "model-curve", "data-model": t.model});
    if (t.points.length) {
      el("polyline", {points: t.points.map(function (p) { return x(p[0]) + "," + y(p[1]); }).join(" "),
                      fill: "none", stroke: colour, "stroke-width": 1.6}, g);
    }
    var at = {};
    t.points.forEach(function (p) { at[p[0]] = p[1]; });
    t.cliffs.forEach(function (c) {
      var m = el("circle", {cx: x(c[0]), cy: y(at[c[0]] === undefined ? 0 : at[c[0]]), r: 5, fill: colour,
                            stroke: "#fff", "stroke-width": 1.5, "class": "cliff " + c[1]}, g);
      var tip = el("title", {}, m); tip.textContent = t.model + ": cliff at token " + c[0] + " (" + c[1].replace("_", "-") + ")";
    });
    var item = document.createElement("span");
    item.className = "legend-item";
    var swatch = document.createElement("span");
    swatch.style.cssText = "display:inline-block;width:14px;height:3px;margin:0 6px 3px 12px;background:" + colour;
    item.appendChild(swatch);
    item.appendChild(document.createTextNode(t.model));
    legend.appendChild(item);
    var tr = body.insertRow();
    tr.insertCell().textContent = t.model;
    var a = document.createElement("a"); a.href = t.href; a.textContent = t.trace_id;
    tr.insertCell().appendChild(a);
    tr.insertCell().textContent = t.is_correct === true ? "correct" : t.is_correct === false ? "failed" : "ungradable";
    tr.insertCell().textContent = t.num_tokens;
    tr.insertCell().textContent = t.cliffs.length;
  });
})();
