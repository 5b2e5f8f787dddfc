(function () {
  "use strict";
  var grid = document.getElementById("grid");
  var key = document.getElementById("sort-key");
  var dir = document.getElementById("sort-dir");
  if (!grid || !key || !dir) { return; }
  var body = grid.tBodies[0];
  function value(row, k) {
    var v = k ? row.getAttribute("data-k-" + k) : row.getAttribute("data-order");
    return v === null || v === "" ? NaN : Number(v);
  }
  function show(d) {
    dir.setAttribute("data-dir", d);
    dir.textContent = d === "desc" ? "descending \u2193" : "ascending \u2191";
  }
  function sort() {
    var k = key.value, sign = dir.getAttribute("data-dir") === "desc" ? -1 : 1;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, k), y = value(b, k), xm = isNaN(x), ym = isNaN(y);
      if (xm || ym) { return xm === ym ? value(a, "") - value(b, "") : (xm ? 1 : -1); }  // no value: last
      return x === y ? value(a, "") - value(b, "") : (x < y ? -sign : sign);
    });
    rows.forEach(function (row) { body.appendChild(row); });
    grid.setAttribute("data-sorted-by", k);
  }
  key.addEventListener("change", function () {
    var option = key.options[key.selectedIndex];
    show(option.getAttribute("data-dir") || "asc");
    sort();
  });
  dir.addEventListener("click", function () {
    show(dir.getAttribute("data-dir") === "desc" ? "asc" : "desc");
    sort();
  });
})();
