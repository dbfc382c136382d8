"""A report as a list of blocks, rendered twice: Markdown (plots as PNG files beside it) and one
self-contained HTML page (plots inlined as base64 PNGs, no external ``src`` or ``href``).

Inline markup in text is a small Markdown subset: ``**bold**``, ``*italic*``, `` `code` `` and
internal links ``[text](#anchor)``. External links are deliberately not supported: the HTML page
must read offline, so sources are cited in words.
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![*\w])\*([^*\s][^*]*)\*(?![*\w])"), r"<em>\1</em>"),
    (re.compile(r"\[([^\]]+)\]\((#[\w-]+)\)"), r'<a href="\2">\1</a>'),
]

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1,h2,h3{line-height:1.2} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.92em} th,td{border:1px solid #ccc;padding:.3em .55em;vertical-align:top}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1.2em 0} figure img{max-width:100%;border:1px solid #eee} figcaption{font-size:.9em;color:#555}
code{background:#f5f5f5;padding:0 .2em;border-radius:3px} .note{color:#555;font-size:.92em}
"""


def inline_html(text: str) -> str:
    out = html.escape(text, quote=False)
    for pattern, repl in _INLINE:
        out = pattern.sub(repl, out)
    return out


def anchor(text: str) -> str:
    """The id a heading gets (GitHub's rule: lower case, spaces to dashes, punctuation dropped)."""
    return re.sub(r"[^\w\- ]", "", text.lower()).strip().replace(" ", "-")


@dataclass
class Figure:
    name: str  # file name under plots/, e.g. "memory_adding.png"
    png: bytes
    caption: str


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    # -- building ---------------------------------------------------------------------------------
    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("bullets", list(items)))

    def table(self, header: list[str], rows: list[list], numeric: bool = True) -> None:
        """A table; cells are str or numbers (numbers right-aligned in HTML)."""
        rows = [[c for c in r] for r in rows]
        for r in rows:
            if len(r) != len(header):
                raise ValueError(f"rows: expected {len(header)} cells per row (the header's), got {len(r)}: {r!r}")
        self.blocks.append(("table", list(header), rows, numeric))

    def figure(self, name: str, png: bytes, caption: str) -> None:
        if not png.startswith(b"\x89PNG"):
            raise ValueError(f"png: expected PNG bytes for figure {name!r}")
        self.blocks.append(("figure", Figure(name, png, caption)))

    def raw_html(self, html_text: str, markdown_text: str) -> None:
        """A block only HTML can show (the gate-coloured text); Markdown gets ``markdown_text`` instead."""
        self.blocks.append(("raw", html_text, markdown_text))

    def figures(self) -> list[Figure]:
        return [b[1] for b in self.blocks if b[0] == "figure"]

    # -- rendering ----------------------------------------------------------------------------------
    def markdown(self, plots_dir: str = "plots") -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            kind = b[0]
            if kind == "heading":
                out += ["#" * b[1] + " " + b[2], ""]
            elif kind == "paragraph":
                out += [b[1], ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in b[1]] + [""]
            elif kind == "table":
                _, header, rows, _ = b
                cell = lambda c: _fmt(c).replace("|", "\\|")
                out.append("| " + " | ".join(cell(h) for h in header) + " |")
                out.append("|" + "|".join(" --- " for _ in header) + "|")
                out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
                out.append("")
            elif kind == "figure":
                f = b[1]
                out += [f"![{f.caption}]({plots_dir}/{f.name})", "", f"*{f.caption}*", ""]
            elif kind == "raw":
                out += [b[2], ""]
        return "\n".join(out).rstrip() + "\n"

    def html(self) -> str:
        body = [f"<h1>{inline_html(self.title)}</h1>"]
        for b in self.blocks:
            kind = b[0]
            if kind == "heading":
                body.append(f'<h{b[1]} id="{anchor(b[2])}">{inline_html(b[2])}</h{b[1]}>')
            elif kind == "paragraph":
                body.append(f"<p>{inline_html(b[1])}</p>")
            elif kind == "bullets":
                body.append("<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in b[1]) + "</ul>")
            elif kind == "table":
                _, header, rows, numeric = b
                head = "".join(f"<th>{inline_html(h)}</th>" for h in header)
                trs = []
                for r in rows:
                    tds = "".join(
                        f'<td class="num">{_fmt(c)}</td>' if numeric and isinstance(c, (int, float)) else f"<td>{inline_html(_fmt(c))}</td>"
                        for c in r
                    )
                    trs.append(f"<tr>{tds}</tr>")
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(trs)}</tbody></table>")
            elif kind == "figure":
                f = b[1]
                data = base64.b64encode(f.png).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(f.caption)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{inline_html(f.caption)}</figcaption></figure>")
            elif kind == "raw":
                body.append(b[1])
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(self.title)}</title>"
                f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")

    def write(self, folder: str | Path) -> dict[str, Path]:
        """Write ``report.md``, ``report.html`` and ``plots/*.png`` under ``folder``; returns their paths."""
        folder = Path(folder)
        plots = folder / "plots"
        plots.mkdir(parents=True, exist_ok=True)
        for old in plots.glob("*.png"):
            old.unlink()
        for f in self.figures():
            _atomic_write(plots / f.name, f.png)
        md, page = folder / "report.md", folder / "report.html"
        _atomic_write(md, self.markdown().encode("utf-8"))
        _atomic_write(page, self.html().encode("utf-8"))
        return {"markdown": md, "html": page, "plots": plots}


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` beside ``path`` and rename it into place: a reader sees the old file or the new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _fmt(c) -> str:
    if isinstance(c, bool):
        return "yes" if c else "no"
    if isinstance(c, int):
        return f"{c:,}"
    if isinstance(c, float):
        if c != c:
            return "—"
        if c == 0:
            return "0"
        if c.is_integer() and abs(c) < 1e15:
            return f"{int(c):,}"
        a = abs(c)
        if a >= 1000:
            return f"{c:,.0f}"
        if a >= 100:
            return f"{c:.1f}"
        if a >= 0.01:
            return f"{c:.3g}"
        return f"{c:.2e}"
    return str(c)
