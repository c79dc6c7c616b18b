/* cliffdata report, index: sort by any column (click its header) and filter by model (a study's report),
   dataset, correctness and cliff category. Rows are rendered in the HTML; this only reorders and hides them. */
(function () {
  "use strict";
  var table = document.getElementById("traces"), body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var ds = document.getElementById("f-dataset"), cr = document.getElementById("f-correct");
  var ct = document.getElementById("f-category"), q = document.getElementById("f-text");
  var count = document.getElementById("shown");
  var md = document.getElementById("f-model");          // only in a study's report

  function filter() {
    var shown = 0, text = q.value.trim().toLowerCase();
    rows.forEach(function (r) {
      var cats = r.dataset.cats ? r.dataset.cats.split(" ") : [];
      var ok = (!md || !md.value || r.dataset.model === md.value)
        && (!ds.value || r.dataset.dataset === ds.value)
        && (!cr.value || r.dataset.correct === cr.value)
        && (!ct.value || (ct.value === "none" ? cats.length === 0 : ct.value === "any" ? cats.length > 0 : cats.indexOf(ct.value) >= 0))
        && (!text || r.textContent.toLowerCase().indexOf(text) >= 0);
      r.hidden = !ok;
      if (ok) shown++;
    });
    count.textContent = shown + " of " + rows.length + " traces";
  }
  [ds, cr, ct].concat(md ? [md] : []).forEach(function (s) { s.addEventListener("change", filter); });
  q.addEventListener("input", filter);

  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
    th.addEventListener("click", function () {
      var desc = th.classList.contains("asc");
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(desc ? "desc" : "asc");
      var numeric = th.dataset.type === "num";
      function key(r) {
        var v = r.cells[col].dataset.v;
        if (numeric) return v === "" || v === undefined ? Infinity : Number(v);
        return v === undefined ? r.cells[col].textContent : v;
      }
      rows.sort(function (a, b) {
        var ka = key(a), kb = key(b);
        var c = ka < kb ? -1 : ka > kb ? 1 : 0;
        if (numeric && ka === Infinity && kb !== Infinity) return 1;      // blanks last either way
        if (numeric && kb === Infinity && ka !== Infinity) return -1;
        return desc ? -c : c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  filter();
})();
