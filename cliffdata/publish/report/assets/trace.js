/* cliffdata report, trace page: draws the potential curve (inline SVG) and the token view from the
   JSON in the page's #data script element. No libraries; inlined into the page by cliffdata/publish/report/pages.py. */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("data").textContent);
  var CAT = {deterministic: "#1f77b4", uncertain: "#ff7f0e", sampled_off: "#d62728", other: "#7f7f7f"};
  var NS = "http://www.w3.org/2000/svg";
  var T = D.tok.length, P = D.pot, Z = D.z;
  var pos = {}, cliffAt = {};
  if (P.i === undefined) P.i = P.n.map(function (_, j) { return P.start + j; });   // consecutive positions
  function text(v) { return D.vocab[v][0]; }
  function tid(v) { return D.vocab[v][1]; }
  function milli(a, i) { return a[i] === null || a[i] === undefined ? null : a[i] / 1000; }   // null: not a number
  P.i.forEach(function (i, j) { pos[i] = j; });
  D.cliffs.forEach(function (c) { cliffAt[c.i] = c; });

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) { return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]; });
  }
  function show(s) { return JSON.stringify(s).slice(1, -1); }     // a token's text with \n, \t visible
  function f(x, d) { return x === null || x === undefined ? "–" : Number(x).toFixed(d === undefined ? 3 : d); }
  // Wilson score interval at z (stats.wilson_interval); n = 0 (early-stop fill) has no interval.
  function wilson(k, n) {
    if (!n) return null;
    var p = k / n, z2 = Z * Z, den = 1 + z2 / n, c = (p + z2 / (2 * n)) / den;
    var h = Z * Math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / den;
    return [Math.max(0, c - h), Math.min(1, c + h)];
  }
  function pot(j) { return P.n[j] ? P.k[j] / P.n[j] : 0; }
  // a position with fewer rollouts than the cliff test needs (cliffs.test.min_rollouts: adaptive sweep points)
  // screens for dips; it is drawn apart and never drawn into the line or coloured as a drop
  var MIN_N = D.min_n || 1;
  function tested(j) { return P.n[j] >= MIN_N; }
  window.cliffReport = {wilson: wilson, numTokens: T};
  var CRIT_DEF = "critical token (Lin et al.): the first position where the potential is 0 and stays below "
                 + (D.crit_thr === undefined ? 0.05 : D.crit_thr) + " for every later position";

  // --- header ---------------------------------------------------------------------------------------
  var status = D.is_correct === true ? "correct" : D.is_correct === false ? "failed" : "ungradable";
  document.getElementById("meta").innerHTML = [
    '<span class="badge ' + status + '">' + status + "</span>",
    "<span>problem <b>" + esc(D.problem_id) + "</b></span>",
    "<span>gold <b>" + esc(D.gold) + "</b>, extracted <b>" + esc(D.extracted === null ? "none" : D.extracted) + "</b></span>",
    "<span><b>" + T + "</b> tokens (" + esc(D.finish_reason) + ")</span>",
    "<span><b>" + D.cliffs.length + "</b> cliff" + (D.cliffs.length === 1 ? "" : "s") + "</span>",
    "<span>rollouts <b>" + esc(D.mode || "none") + "</b>, " + P.i.length + " positions evaluated</span>",
    '<span title="' + esc(CRIT_DEF) + '">critical token <b>' + esc(D.critical === null ? "none" : D.critical) + "</b></span>",
    "<span>p[−1] (empty prefix) <b>" + (pos[-1] === undefined ? "not evaluated" : f(pot(pos[-1]), 2) + "</b> (" + esc(P.k[pos[-1]]) + "/" + esc(P.n[pos[-1]]) + ")<b>") + "</b></span>"
  ].join("");
  document.getElementById("question").textContent = D.question || "";

  // --- the curve --------------------------------------------------------------------------------------
  var svg = document.getElementById("plot");
  var W = 1000, H = 300, L = 46, R = 14, TOP = 12, B = 36;
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  var span = Math.max(T, 1);                        // x domain: [-1, T-1]
  function x(i) { return L + (i + 1) / span * (W - L - R); }
  function y(p) { return TOP + (1 - p) * (H - TOP - B); }
  function el(name, attrs, parent, text) {
    var e = document.createElementNS(NS, name);
    for (var a in attrs) e.setAttribute(a, attrs[a]);
    if (text !== undefined) e.textContent = text;
    (parent || svg).appendChild(e);
    return e;
  }
  function r1(v) { return Math.round(v * 10) / 10; }
  [0, 0.25, 0.5, 0.75, 1].forEach(function (p) {
    el("line", {x1: L, x2: W - R, y1: y(p), y2: y(p), "class": "grid"});
    el("text", {x: L - 6, y: y(p) + 4, "text-anchor": "end"}, null, p.toFixed(2));
  });
  var step = Math.max(1, Math.pow(10, Math.floor(Math.log(span / 2) / Math.LN10)));
  if (span / step > 10) step *= (span / (step * 2) > 10 ? 5 : 2);
  for (var t = 0; t <= T - 1; t += step) {
    el("line", {x1: x(t), x2: x(t), y1: H - B, y2: H - B + 4, "class": "axis"});
    el("text", {x: x(t), y: H - B + 16, "text-anchor": "middle"}, null, String(t));
  }
  el("line", {x1: L, x2: W - R, y1: H - B, y2: H - B, "class": "axis"});
  el("text", {x: W - R, y: H - 4, "text-anchor": "end"}, null, "token index (−1 = empty prefix)");
  el("text", {x: 12, y: TOP + 8, transform: "rotate(-90 12 " + (TOP + 8) + ")", "text-anchor": "end"}, null, "potential");

  // Between two tested positions a < b with unevaluated tokens between them the curve is not drawn: by the
  // sampler identity p[t] moves from p[t-1] by at most max_drop of token t (1 - its sampler probability),
  // so the potential there lies within Σ max_drop of both ends; that envelope is drawn as a faint band.
  function drift(ja, jb) {
    var a = P.i[ja], b = P.i[jb], pa = pot(ja), pb = pot(jb), hi = [], lo = [], left = 0, right = [], acc = 0;
    for (var t = b; t > a; t--) { right[t] = acc; acc += milli(D.md, t); }
    right[a] = acc;
    for (var t = a; t <= b; t++) {
      if (t > a) left += milli(D.md, t);
      var top = Math.min(1, pa + left, pb + right[t]), bottom = Math.max(0, pa - left, pb - right[t]);
      hi.push(r1(x(t)) + "," + r1(y(top))); lo.push(r1(x(t)) + "," + r1(y(bottom)));
    }
    var band = el("path", {d: "M" + hi.join("L") + "L" + lo.reverse().join("L") + "Z", "class": "drift"});
    el("title", {}, band, "tokens " + (a + 1) + "–" + (b - 1) + " not evaluated: the band is where the sampler identity "
       + "lets the potential go (within Σ max_drop of both ends)");
  }
  var numScreen = 0, numGaps = 0;
  if (P.i.length) {
    var segments = [], seg = null, ticks = [], screen = [], last = null, line = [];
    var hasDrops = D.md && D.md.length === T && D.md.every(function (v) { return v !== null; });
    for (var j = 0; j < P.i.length; j++) {
      var xi = r1(x(P.i[j]));
      if (P.n[j]) ticks.push("M" + xi + " " + (H - B) + "v-7");
      if (!tested(j)) { if (P.n[j]) screen.push(j); continue; }
      if (last === null || P.i[j] - P.i[last] > 1) {
        if (last !== null && hasDrops) { drift(last, j); numGaps++; }
        seg = {line: [], up: [], down: []};
        segments.push(seg);
      }
      var xy = xi + "," + r1(y(pot(j)));
      seg.line.push(xy); line.push(xy);
      var w = wilson(P.k[j], P.n[j]);
      if (w) { seg.up.push(xi + "," + r1(y(w[1]))); seg.down.push(xi + "," + r1(y(w[0]))); }
      last = j;
    }
    segments.forEach(function (s) {
      if (s.up.length) el("path", {d: "M" + s.up.join("L") + "L" + s.down.reverse().join("L") + "Z", "class": "band"});
      if (s.line.length > 1) el("path", {d: "M" + s.line.join("L"), "class": "curve"});
    });
    if (D.mode === "adaptive" || P.i.length < T) {
      el("path", {d: ticks.join(""), "class": "evaluated", id: "evaluated"});
      if (P.i.length <= 600) line.forEach(function (xy) {
        var s = xy.split(","); el("circle", {cx: s[0], cy: s[1], r: 2, "class": "pt"});
      });
    }
    numScreen = screen.length;
    if (P.i.length <= 2000) screen.forEach(function (j) {
      var c = el("circle", {cx: r1(x(P.i[j])), cy: r1(y(pot(j))), r: 2.5, "class": "screen"});
      el("title", {}, c, "screening point at " + P.i[j] + ": " + P.k[j] + "/" + P.n[j] + " (too few rollouts to test)");
    });
  }
  if (D.critical !== null && D.critical !== undefined) {
    var crit = el("line", {x1: x(D.critical), x2: x(D.critical), y1: TOP, y2: H - B, "class": "critical", id: "critical"});
    el("title", {}, crit, CRIT_DEF);
    el("text", {x: x(D.critical) + 4, y: TOP + 10}, null, "critical token " + D.critical);
  }
  var guide = el("line", {x1: 0, x2: 0, y1: TOP, y2: H - B, "class": "guide", visibility: "hidden"});
  D.cliffs.forEach(function (c) {
    var g = el("g", {"class": "cliff-marker", "data-i": c.i});
    el("line", {x1: x(c.i - 1), y1: y(c.pp), x2: x(c.i), y2: y(c.p), stroke: CAT[c.cat] || "#000", "class": "drop"}, g);
    // a cliff that failed to replicate is drawn hollow
    var failed = c.rep && !c.rep.ok;
    el("circle", {cx: x(c.i), cy: y(c.p), r: 6, fill: failed ? "#fff" : CAT[c.cat] || "#000",
                  style: failed ? "stroke:" + (CAT[c.cat] || "#000") : "", "class": failed ? "cliff unreplicated" : "cliff"}, g);
    el("title", {}, g, "cliff at token " + c.i + " (" + c.cat + "): " + f(c.pp, 2) + " → " + f(c.p, 2)
       + (c.rep ? (c.rep.ok ? ", replicated" : ", not replicated") : ""));
    g.addEventListener("click", function (e) { e.stopPropagation(); focusToken(c.i, true); });
  });
  var legend = ['<span><span class="swatch" style="background:#0b4f8a;height:2px"></span>potential</span>',
                '<span><span class="swatch" style="background:#8fb8de"></span>' + esc(Math.round(100 * D.level)) + "% Wilson interval (each position's N)</span>"];
  if (D.mode === "adaptive" || P.i.length < T) legend.push("<span>ticks: evaluated positions</span>");
  if (numGaps) legend.push('<span><span class="swatch" style="background:#0b4f8a;opacity:.2"></span>not evaluated: '
                           + "where the sampler identity lets the potential go (Σ max_drop)</span>");
  if (numScreen) legend.push('<span><span class="swatch screen-swatch"></span>screening point (N &lt; ' + esc(MIN_N)
                             + ": not tested, not in the line)</span>");
  legend.push('<span title="' + esc(CRIT_DEF) + '"><span class="swatch" style="border-top:2px dashed #444;height:0"></span>'
              + "critical token (p = 0 and stays &lt; " + esc(D.crit_thr === undefined ? 0.05 : D.crit_thr) + ")</span>");
  legend.push('<span><span class="cat uncertain" style="background:#fff;border:2px solid #ff7f0e"></span>hollow: did not replicate</span>');
  Object.keys(CAT).forEach(function (k) { legend.push('<span><span class="cat ' + k + '"></span>' + k.replace("_", "-") + " cliff</span>"); });
  document.getElementById("legend").innerHTML = legend.join("");

  // --- tokens -----------------------------------------------------------------------------------------
  // Drop per token: p(before) − p(after), coloured only where a test could speak: both sides
  // evaluated with enough rollouts (N >= cliffs.test.min_rollouts) and adjacent. Gaps and screening points
  // (adaptive mode) stay white rather than smear a 2-rollout estimate over the tokens.
  var drop = new Array(T).fill(null);
  for (var a = 1; a < P.i.length; a++) {
    if (P.i[a] - P.i[a - 1] !== 1 || !tested(a) || !tested(a - 1) || P.i[a] < 0 || P.i[a] >= T) continue;
    drop[P.i[a]] = pot(a - 1) - pot(a);
  }
  var box = document.getElementById("tokens"), spans = new Array(T), frag = document.createDocumentFragment();
  for (var i = 0; i < T; i++) {
    var s = document.createElement("span");
    s.textContent = text(D.tok[i]);
    s._i = i;
    if (cliffAt[i]) { s.className = "cl"; s.style.outlineColor = CAT[cliffAt[i].cat] || "#000"; }
    if (i === D.critical) s.className += " crit";
    spans[i] = s; frag.appendChild(s);
  }
  box.appendChild(frag);
  var HMAX = 2.0;
  function colour(mode) {
    for (var i = 0; i < T; i++) {
      var c = "";
      if (mode === "drop" && drop[i] !== null && drop[i] !== 0) {
        var v = Math.min(1, Math.abs(drop[i]) / 0.5);
        c = drop[i] > 0 ? "rgba(214,39,40," + (0.08 + 0.8 * v).toFixed(2) + ")" : "rgba(44,160,44," + (0.08 + 0.5 * v).toFixed(2) + ")";
      } else if (mode === "entropy" && D.ent.length) {
        c = "rgba(31,119,180," + (Math.min(1, milli(D.ent, i) / HMAX) * 0.75).toFixed(2) + ")";
      }
      spans[i].style.backgroundColor = c;
    }
    document.getElementById("scale").style.background = mode === "drop"
      ? "linear-gradient(90deg, rgba(44,160,44,.58), #fff, rgba(214,39,40,.88))"
      : "linear-gradient(90deg, #fff, rgba(31,119,180,.75))";
    document.getElementById("scale-label").textContent = mode === "drop"
      ? "potential gain ← 0 → drop (full colour at 0.5)" : "entropy (" + D.entropy + ") 0 → " + HMAX + " nats";
  }
  Array.prototype.forEach.call(document.querySelectorAll("input[name=colour]"), function (r) {
    r.addEventListener("change", function () { colour(r.value); });
  });
  colour("drop");

  // --- details ----------------------------------------------------------------------------------------
  var tip = document.getElementById("tip"), pinned = false, lit = null, ALT_FLOOR = 0.01;
  function details(i) {
    var h = ["<div><b>token " + i + "</b> <code>" + esc(show(text(D.tok[i]))) + "</code> <span class=k>id " + esc(tid(D.tok[i])) + "</span></div>"];
    if (D.lp.length) {
      var g = D.greedy[i];
      var lp = milli(D.lp, i);
      h.push("<div><span class=k>logprob</span> " + f(lp) + " <span class=k>(p " + f(Math.exp(lp)) + ")</span>, <span class=k>rank</span> "
             + (D.rk[i] > 20 ? "&gt;20" : esc(D.rk[i])) + "</div>",
             "<div><span class=k>entropy</span> " + f(milli(D.ent, i)) + " <span class=k>nats (" + esc(D.entropy) + "), full</span> " + f(milli(D.entf, i)) + "</div>",
             "<div><span class=k>greedy</span> " + (g !== undefined ? "<code>" + esc(show(text(g))) + "</code> <span class=k>id " + esc(tid(g)) + "</span>" : "this token") + "</div>");
    }
    var jb = pos[i - 1], ja = pos[i];
    h.push("<div><span class=k>potential before</span> " + (jb === undefined ? "not evaluated" : f(pot(jb), 2) + " (" + esc(P.k[jb]) + "/" + esc(P.n[jb]) + ")")
           + ", <span class=k>after</span> " + (ja === undefined ? "not evaluated" : f(pot(ja), 2) + " (" + esc(P.k[ja]) + "/" + esc(P.n[ja]) + ")") + "</div>");
    var c = cliffAt[i];
    if (c) {
      h.push('<div style="margin-top:4px"><span class="cat ' + esc(c.cat) + '"></span><b>' + (c.first ? "first " : "") + "cliff, " + esc(String(c.cat).replace("_", "-"))
             + "</b>: " + f(c.pp, 2) + " → " + f(c.p, 2) + " (Δ " + f(c.d) + ", N " + esc(c.np) + "/" + esc(c.n) + ")</div>");
      h.push('<div class="evidence"><span class=k>evidence</span> p = ' + esc(c.pv)
             + ", <span class=k>largest drop the sampler allows (1 − π<sub>s</sub>)</span> " + (c.md === null || c.md === undefined ? "n/a" : f(c.md, 3))
             + ", <span class=k>feasible</span> " + (c.feas === null || c.feas === undefined ? "n/a" : c.feas ? "yes" : "no")
             + (c.rep ? ", <span class=k>replicated</span> " + (c.rep.ok ? "yes" : "no") + " <span class=k>(fresh " + esc(c.rep.kp) + "/" + esc(c.rep.np)
                        + " → " + esc(c.rep.k) + "/" + esc(c.rep.n) + ")</span>" : "") + "</div>");
      if (c.cand) {
        // alternatives with probability >= ALT_FLOOR, and the sampled token whatever its probability
        var shown = c.cand.filter(function (r) { return r[1] >= ALT_FLOOR || r[5]; });
        h.push("<table><tr><th>alternative</th><th>prob</th><th>potential</th><th>cliff</th></tr>");
        shown.forEach(function (r) {
          h.push("<tr><td><code>" + esc(show(text(r[0]))) + "</code>" + (r[5] ? " <span class=k>(sampled)</span>" : "") + "</td><td>" + f(r[1])
                 + "</td><td>" + (r[2] ? f(r[3] / r[2], 2) + " <span class=k>(" + esc(r[3]) + "/" + esc(r[2]) + ")</span>" : "–") + "</td><td>" + (r[4] ? "yes" : "") + "</td></tr>");
        });
        h.push("</table>");
        if (shown.length < c.cand.length)
          h.push('<div class="k more">' + (c.cand.length - shown.length) + " more below probability " + ALT_FLOOR + "</div>");
      }
      if (c.abl) {
        var ks = Object.keys((c.abl.del || c.abl.keep).pass);
        h.push("<table><tr><th>pass@k</th>" + ks.map(function (k) { return "<th>" + esc(k) + "</th>"; }).join("") + "</tr>");
        ["del", "keep"].forEach(function (arm) {
          if (c.abl[arm]) h.push("<tr><td>" + arm + " <span class=k>(" + esc(c.abl[arm].c) + "/" + esc(c.abl[arm].n) + ")</span></td>"
                                 + ks.map(function (k) { return "<td>" + f(c.abl[arm].pass[k], 2) + "</td>"; }).join("") + "</tr>");
        });
        h.push("</table>");
      }
    }
    return h.join("");
  }
  // next to the token, or below the plot when the pointer is on the curve (never over the curve)
  function place(i, ev) {
    var plot = svg.getBoundingClientRect();
    var r = ev ? {left: ev.clientX + 12, top: plot.top, bottom: plot.bottom} : spans[i].getBoundingClientRect();
    var tw = tip.offsetWidth, th = tip.offsetHeight;
    var left = Math.min(Math.max(4, r.left), window.innerWidth - tw - 8);
    var top = r.bottom + 6 + th > window.innerHeight ? r.top - th - 6 : r.bottom + 6;
    tip.style.left = left + "px"; tip.style.top = Math.max(4, Math.min(top, window.innerHeight - th - 4)) + "px";
  }
  function focusToken(i, pin, ev) {
    if (lit !== null) spans[lit].classList.remove("hi");
    lit = i; spans[i].classList.add("hi");
    tip.innerHTML = details(i); tip.hidden = false;
    pinned = !!pin; tip.classList.toggle("pinned", pinned);
    guide.setAttribute("x1", x(i)); guide.setAttribute("x2", x(i)); guide.setAttribute("visibility", "visible");
    if (pin && !ev) spans[i].scrollIntoView({block: "nearest"});
    place(i, ev);
  }
  function blur() {
    if (pinned) return;
    tip.hidden = true; tip.classList.remove("pinned"); guide.setAttribute("visibility", "hidden");
    if (lit !== null) spans[lit].classList.remove("hi");
    lit = null;
  }
  box.addEventListener("mouseover", function (e) { if (!pinned && e.target._i !== undefined) focusToken(e.target._i, false); });
  box.addEventListener("mouseleave", blur);
  box.addEventListener("click", function (e) {
    if (e.target._i === undefined) return;
    e.stopPropagation();
    if (pinned && lit === e.target._i) { pinned = false; blur(); } else focusToken(e.target._i, true);
  });
  document.addEventListener("click", function () { if (pinned) { pinned = false; blur(); } });
  svg.addEventListener("mousemove", function (e) {
    if (pinned || !T) return;
    var pt = svg.createSVGPoint(); pt.x = e.clientX; pt.y = e.clientY;
    var m = svg.getScreenCTM(); if (!m) return;
    var v = pt.matrixTransform(m.inverse());
    var i = Math.round((v.x - L) / (W - L - R) * span - 1);
    if (i >= 0 && i < T) focusToken(i, false, e);
  });
  svg.addEventListener("mouseleave", blur);
  window.cliffReport.focusToken = focusToken;
})();
