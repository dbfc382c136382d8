"""The interactive page's script (inlined into the page; no library, nothing fetched).

It reads the networks' numbers from the page's ``<script type="application/json" id="unroll-data">``
and wires the drawing: clicking or hovering a box shows that cell's equations in the seed's notation
with this step's numbers substituted for the chosen unit (each number a ``span.v`` whose
``data-value`` holds it to 7 significant digits, displayed to 4 decimals); the BPTT button swaps
every arrow between its forward encoding (as drawn) and its BPTT one (``data-bw``) and shows the
gradient numbers; the zoom slider scales the drawings.
"""

SCRIPT = r"""
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("unroll-data").textContent);
  var panel = document.getElementById("panel");
  var cur = null;  // {net, k, d, t, unit}
  var view = "forward";

  function fmt(v) { return v === null || v === undefined ? "—" : (+v).toFixed(4); }
  function sci(v) { return v === null || v === undefined ? "—" : (v === 0 ? "0" : (+v).toExponential(2)); }
  function num(name, v, cls) {
    return '<span class="v' + (cls ? " " + cls : "") + '" data-name="' + name + '" data-value="' + v + '">' + fmt(v) + "</span>";
  }
  function track(net, k, d) { return net.tracks[k * net.D + d]; }
  function at(net, tr, name, t, j) { return tr.v[name][t * net.units.length + j]; }
  function pre(net, tr, g, t, j) { return tr.pre[g][t * net.units.length + j]; }
  function prev(net, tr, name, t, j) {
    var p = tr.d === 0 ? t - 1 : t + 1;
    if (p < 0 || p >= net.length) { return 0; }
    return at(net, tr, name, p, j);
  }
  var NAMES = {f: "f_t", i: "i_t", g: "C̃_t", o: "o_t", c: "C_t", h: "h_t", z: "z_t", r: "r_t", n: "h̃_t"};
  var GATE_TEXT = {
    f: ["f_t", "σ", "W_f·[h_{t−1}, x_t]", "b_f"], i: ["i_t", "σ", "W_i·[h_{t−1}, x_t]", "b_i"],
    g: ["C̃_t", "tanh", "W_C·[h_{t−1}, x_t]", "b_C"], o: ["o_t", "σ", "W_o·[h_{t−1}, x_t]", "b_o"],
    z: ["z_t", "σ", "W_z·[h_{t−1}, x_t]", "b_z"], r: ["r_t", "σ", "W_r·[h_{t−1}, x_t]", "b_r"],
    n: ["h̃_t", "tanh", "W_h·[r_t * h_{t−1}, x_t]", "b_h"]
  };

  function gateLine(net, tr, g, t, j) {
    var a = pre(net, tr, g, t, j), b = tr.b[g][j], v = at(net, tr, g, t, j), s = GATE_TEXT[g];
    if (net.cell === "gru" && g === "n" && net.options.reset === "after") {
      return s[0] + " = tanh(W_xn·x_t + b_n + r_t * (W_hn·h_{t−1} + b_hn)) = tanh(" + num("pre_n", a) + ") = " +
        num("n", v, "result");
    }
    return s[0] + " = " + s[1] + "(" + s[2] + " + " + s[3] + ") = " + s[1] + "(" + num("wx_" + g, a - b) + " + " +
      num("b_" + g, b) + ") = " + s[1] + "(" + num("pre_" + g, a) + ") = " + num(g, v, "result");
  }

  function equations(net, tr, t, j) {
    var L = [];
    if (net.cell === "lstm") {
      ["f", "i", "g"].forEach(function (g) { L.push(gateLine(net, tr, g, t, j)); });
      L.push("C_t = f_t * C_{t−1} + i_t * C̃_t = " + num("f", at(net, tr, "f", t, j)) + " × " +
             num("c_prev", prev(net, tr, "c", t, j)) + " + " + num("i", at(net, tr, "i", t, j)) + " × " +
             num("g", at(net, tr, "g", t, j)) + " = " + num("c", at(net, tr, "c", t, j), "result"));
      L.push(gateLine(net, tr, "o", t, j));
      L.push("h_t = o_t * tanh(C_t) = " + num("o", at(net, tr, "o", t, j)) + " × tanh(" + num("c", at(net, tr, "c", t, j)) +
             ") = " + num("h", at(net, tr, "h", t, j), "result"));
    } else if (net.cell === "gru") {
      ["z", "r", "n"].forEach(function (g) { L.push(gateLine(net, tr, g, t, j)); });
      L.push("h_t = (1 − z_t) * h_{t−1} + z_t * h̃_t = (1 − " + num("z", at(net, tr, "z", t, j)) + ") × " +
             num("h_prev", prev(net, tr, "h", t, j)) + " + " + num("z", at(net, tr, "z", t, j)) + " × " +
             num("n", at(net, tr, "n", t, j)) + " = " + num("h", at(net, tr, "h", t, j), "result"));
    } else {
      var phi = net.options.nonlinearity === "relu" ? "relu" : "tanh", a = pre(net, tr, "h", t, j), b = tr.b.h[j];
      L.push("h_t = " + phi + "(W_h·[h_{t−1}, x_t] + b_h) = " + phi + "(" + num("wx_h", a - b) + " + " + num("b_h", b) +
             ") = " + phi + "(" + num("pre_h", a) + ") = " + num("h", at(net, tr, "h", t, j), "result"));
    }
    return L;
  }

  function gradients(net, tr, t) {
    if (!tr.g) { return '<p class="note">No loss given: unroll(model, x, loss) records BPTT\'s gradients.</p>'; }
    var rows = [["‖∂L/∂h_t‖ (total, what BPTT delivers to h_t)", "grad_h", tr.g.h[t]]];
    if (tr.g.c) { rows.push(["‖∂L/∂C_t‖ (total)", "grad_c", tr.g.c[t]]); }
    rows.push(["‖∂L/∂h‖ along the recurrent arrow into step t", "flow_h", tr.g.flow_h[t]]);
    if (tr.g.flow_c) { rows.push(["‖∂L/∂C‖ along the cell-state line into step t", "flow_c", tr.g.flow_c[t]]); }
    rows.push(["‖∂L/∂input‖ along the input arrow", "flow_in", tr.g.flow_in[t]]);
    rows.push(["‖∂L/∂h_t‖ coming back from above", "flow_out", tr.g.flow_out[t]]);
    rows.push(["per-step factor ‖∂L/∂h_" + (tr.d === 0 ? "{t−1}" : "{t+1}") + "‖ / ‖∂L/∂h_t‖", "factor", tr.g.factor[t]]);
    return "<table>" + rows.map(function (r) {
      return "<tr><td>" + r[0] + '</td><td><span class="v" data-name="' + r[1] + '" data-value="' + r[2] + '">' +
        sci(r[2]) + "</span></td></tr>";
    }).join("") + "</table>";
  }

  function show() {
    var net = DATA.nets[cur.net], tr = track(net, cur.k, cur.d), t = cur.t, j = cur.unit;
    var head = "<h3>" + net.label + ", level " + cur.k + " " + (cur.d === 0 ? "forward →" : "reverse ←") +
      ', step <span id="panel-t">' + (t + 1) + "</span> of " + net.T + "</h3>";
    var units = '<label>unit <select id="panel-unit">' + net.units.map(function (u, q) {
      return '<option value="' + q + '"' + (q === j ? " selected" : "") + ">" + u + "</option>";
    }).join("") + "</select> of H = " + net.H + '</label> <button id="panel-prev">◀ step</button>' +
      '<button id="panel-next">step ▶</button>';
    var body;
    if (t >= net.length) {
      body = '<p class="note">Padding: this sequence has ' + net.length + " real steps; nothing is computed here.</p>";
    } else {
      var x = net.x.slice(t * net.C, (t + 1) * net.C).map(fmt).join(", ");
      body = '<p class="note">x_t = [' + x + "]" + (net.C < net.Cfull ? " (first " + net.C + " of " + net.Cfull + ")" : "") +
        (cur.k > 0 ? "; this level's x_t is the output of the level below" : net.embedded ? "; the layer reads x_t through the model's input map" : "") +
        "</p>" + '<div class="eqs">' + equations(net, tr, t, j).map(function (l) { return "<div>" + l + "</div>"; }).join("") +
        "</div>" + '<p class="note">Over all H = ' + net.H + " units at this step, the mean " +
        Object.keys(tr.mean).map(function (n) { return NAMES[n] + " = " + num("mean_" + n, tr.mean[n][t]); }).join(", ") +
        "</p>" + gradients(net, tr, t);
    }
    panel.innerHTML = head + units + body;
    panel.setAttribute("data-net", cur.net); panel.setAttribute("data-k", cur.k);
    panel.setAttribute("data-d", cur.d); panel.setAttribute("data-t", t);
    panel.setAttribute("data-unit", net.units[j]);
    panel.classList.add("open");
    document.getElementById("panel-unit").addEventListener("change", function (e) { cur.unit = +e.target.value; show(); });
    document.getElementById("panel-prev").addEventListener("click", function () { cur.t = Math.max(0, cur.t - 1); show(); });
    document.getElementById("panel-next").addEventListener("click", function () { cur.t = Math.min(net.T - 1, cur.t + 1); show(); });
  }

  function pick(box) {
    var net = +box.getAttribute("data-net"), k = +box.getAttribute("data-k"), d = +box.getAttribute("data-d");
    var t0 = +box.getAttribute("data-t0");
    cur = {net: net, k: k, d: d, t: t0, unit: cur && cur.net === net ? cur.unit : 0};
    show();
  }
  Array.prototype.forEach.call(document.querySelectorAll("rect.box"), function (box) {
    box.addEventListener("click", function () { pick(box); });
    box.addEventListener("mouseenter", function () { if (!document.body.classList.contains("pinned")) { pick(box); } });
  });
  document.getElementById("pin").addEventListener("change", function (e) { document.body.classList.toggle("pinned", e.target.checked); });

  var arrows = document.querySelectorAll("polyline.arrow");
  Array.prototype.forEach.call(arrows, function (a) {  // the forward encoding, as drawn
    a.setAttribute("data-fw", a.getAttribute("stroke") + " " + a.getAttribute("stroke-width"));
  });
  function setView(v) {
    view = v;
    Array.prototype.forEach.call(arrows, function (a) {
      var enc = a.getAttribute(v === "bptt" ? "data-bw" : "data-fw").split(" ");
      a.setAttribute("stroke", enc[0]); a.setAttribute("stroke-width", enc[1]);
    });
    document.body.classList.toggle("bptt", v === "bptt");
    document.getElementById("view").textContent = v === "bptt" ? "Show the forward pass" : "Replay BPTT (gradients)";
  }
  var toggle = document.getElementById("view");
  if (DATA.gradients) { toggle.addEventListener("click", function () { setView(view === "bptt" ? "forward" : "bptt"); }); }
  else { toggle.disabled = true; toggle.title = "no loss given: no gradients to show"; }

  var zoom = document.getElementById("zoom");
  function setZoom() {
    Array.prototype.forEach.call(document.querySelectorAll("svg.net"), function (s) {
      var z = +zoom.value / 100;
      s.style.width = (+s.getAttribute("width") * z) + "px";
      s.style.height = (+s.getAttribute("height") * z) + "px";
    });
  }
  zoom.addEventListener("input", setZoom);
  setZoom();
})();
"""
