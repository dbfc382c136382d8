"""Drive the unrolled page in headless Chromium, as the report's browser check does
(``rnnlab.compare.browser``): a probe script injected into a copy of the page clicks boxes, reads the
equation panel, toggles BPTT and writes what it saw into the DOM, which ``--dump-dom`` prints; console
messages come on stderr (``--enable-logging=stderr``). ``screenshot`` takes a PNG of the page."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")  # as rnnlab.compare.browser

FLAGS = ["--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--no-default-browser-check",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
         "--hide-scrollbars", "--force-device-scale-factor=1"]

PROBE = """<script>
window.__errors = [];
window.onerror = function (msg, src, line) { window.__errors.push(String(msg) + " @" + line); };
window.addEventListener("load", function () {
  var out = {errors: window.__errors, boxes: [], pads: [], clicks: [], before: [], after: [], gnum: [], svgs: []};
  try {
    Array.prototype.forEach.call(document.querySelectorAll("svg.net"), function (s) {
      out.boxes.push(s.querySelectorAll("rect.box").length);
      out.pads.push(s.querySelectorAll("rect.box.pad").length);
      var r = s.getBoundingClientRect();
      out.svgs.push([r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]);
    });
    var picks = PICKS;
    picks.forEach(function (p) {
      var sel = 'rect.box[data-net="' + p.net + '"][data-k="' + p.k + '"][data-d="' + p.d + '"][data-t0="' + p.t + '"]';
      var box = document.querySelector(sel);
      box.dispatchEvent(new MouseEvent("click", {bubbles: true}));
      var unit = document.getElementById("panel-unit");
      unit.value = String(p.q); unit.dispatchEvent(new Event("change"));
      var panel = document.getElementById("panel");
      out.clicks.push({pick: p, unit: +panel.getAttribute("data-unit"), text: panel.textContent,
        values: Array.prototype.map.call(panel.querySelectorAll("span.v"), function (s) {
          return [s.getAttribute("data-name"), s.getAttribute("data-value"), s.textContent, s.classList.contains("result")]; })});
    });
    var arrows = document.querySelectorAll("polyline.arrow");
    var look = function () { return Array.prototype.map.call(arrows, function (a) {
      return [a.getAttribute("class"), a.getAttribute("stroke"), a.getAttribute("stroke-width")]; }); };
    var shown = function () { return Array.prototype.filter.call(document.querySelectorAll("text.gnum"), function (t) {
      return getComputedStyle(t).display !== "none"; }).length; };
    out.before = look(); out.gnum.push(shown());
    var view = document.getElementById("view");
    if (!view.disabled) { view.click(); }
    out.after = look(); out.gnum.push(shown());
  } catch (e) { out.errors.push("probe: " + e); }
  var pre = document.createElement("pre"); pre.id = "viz-probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) binary, or None when there is none."""
    return next((p for p in map(shutil.which, BINARIES) if p), None)


def _run(args: list[str], tmp: str, timeout: float) -> subprocess.CompletedProcess:
    binary = find_chromium()
    cmd = [binary, *FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}", *args]
    if os.geteuid() == 0:
        cmd.insert(1, "--no-sandbox")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


WINDOW = (1000, 800)


def probe(page: Path, picks: list[dict], timeout: float = 120.0) -> tuple[dict, list[str]]:
    """Load the page with the probe (window ``WINDOW``); returns (what the probe saw, console lines)."""
    text = page.read_text(encoding="utf-8")
    probed = text.replace("</body>", PROBE.replace("PICKS", json.dumps(picks)) + "</body>")
    with tempfile.TemporaryDirectory(prefix="rnnlab-viz-") as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(probed, encoding="utf-8")
        run = _run([f"--window-size={WINDOW[0]},{WINDOW[1]}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom", copy.as_uri()],
                   tmp, timeout)
    found = re.search(r'<pre id="viz-probe">(.*?)</pre>', run.stdout, flags=re.S)
    if not found:
        raise RuntimeError(f"chromium printed no probe result (exit {run.returncode}); stderr tail: {run.stderr[-800:]}")
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
    return json.loads(html.unescape(found.group(1))), console


def screenshot(page: Path, out: Path, size: tuple[int, int], timeout: float = 120.0) -> None:
    """A PNG of the page at window size ``size`` (width, height)."""
    with tempfile.TemporaryDirectory(prefix="rnnlab-viz-") as tmp:
        run = _run([f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=5000", f"--screenshot={out}",
                    page.as_uri()], tmp, timeout)
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {run.returncode}); stderr tail: {run.stderr[-800:]}")
