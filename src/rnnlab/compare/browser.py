"""Open a report page in headless Chromium and say whether it renders cleanly.

A probe script is injected at the top of a temporary copy of the page: it records every
``window.onerror`` and, once the page has loaded, how many ``<img>`` elements loaded (complete, with
a natural width). Chromium's ``--dump-dom`` prints the DOM after load, probe results included, and
``--enable-logging=stderr --v=0`` prints console messages to stderr, where they are collected.
Needs only the ``chromium`` binary (Debian: ``apt-get install -y chromium``); no Python package.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

PROBE = """<script>
window.__rnnlabErrors = [];
window.onerror = function (msg, src, line) { window.__rnnlabErrors.push(String(msg) + " @" + line); };
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  var out = document.createElement("pre");
  out.id = "rnnlab-probe";
  out.textContent = JSON.stringify({images: imgs.length, loaded: ok, errors: window.__rnnlabErrors,
                                    title: document.title, headings: document.querySelectorAll("h2").length});
  document.body.appendChild(out);
});
</script>"""


@dataclass
class PageCheck:
    """What Chromium saw: images found and loaded, script errors, console messages, h2 count."""

    images: int
    loaded: int
    errors: list = field(default_factory=list)
    console: list = field(default_factory=list)
    headings: int = 0
    title: str = ""

    @property
    def ok(self) -> bool:
        return self.loaded == self.images and not self.errors and not self.console


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) binary, or None when there is none."""
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


def check_page(page: str | Path, binary: str | None = None, timeout: float = 90.0) -> PageCheck:
    """Load ``page`` in headless Chromium; returns a :class:`PageCheck`. Raises RuntimeError when
    Chromium cannot be found or prints no probe result."""
    page = Path(page)
    if not page.is_file():
        raise ValueError(f"page: expected an existing HTML file, got {str(page)!r}")
    binary = binary or find_chromium()
    if binary is None:
        raise RuntimeError("no Chromium found on PATH (tried " + ", ".join(BINARIES) + "); install it, e.g. apt-get install -y chromium")
    text = page.read_text(encoding="utf-8")
    head = re.search(r"<head[^>]*>", text, flags=re.I)
    probed = text[: head.end()] + PROBE + text[head.end():] if head else PROBE + text
    with tempfile.TemporaryDirectory(prefix="rnnlab-chromium-") as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(probed, encoding="utf-8")
        args = [binary, "--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                f"--user-data-dir={Path(tmp) / 'profile'}", "--enable-logging=stderr", "--v=0",
                "--virtual-time-budget=10000", "--dump-dom", copy.as_uri()]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")
        run = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    found = re.search(r'<pre id="rnnlab-probe">(.*?)</pre>', run.stdout, flags=re.S)
    if not found:
        raise RuntimeError(f"chromium printed no probe result (exit {run.returncode}); stderr tail: {run.stderr[-800:]}")
    probe = json.loads(html.unescape(found.group(1)))
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
    return PageCheck(images=probe["images"], loaded=probe["loaded"], errors=probe["errors"], console=console,
                     headings=probe["headings"], title=probe["title"])
