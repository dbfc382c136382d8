"""The interactive page: one self-contained HTML file (inline styles, script and SVG; fetches nothing)
with one or more unrolled networks one above the other — the same input through an RNN, an LSTM and
a GRU, say — a panel of equations with this step's numbers, a BPTT toggle and a zoom.
"""

from __future__ import annotations

import html
import json
import math

import numpy as np

from .files import output_path, write_atomic
from .layout import DECADES, layout, short
from .script import SCRIPT
from .svg import svg_document

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222}
header{position:sticky;top:0;background:#fafafa;border-bottom:1px solid #ddd;padding:.5em 1em;z-index:2}
header h1{font-size:1.15em;margin:.1em 0 .3em} header .controls{display:flex;gap:1.2em;align-items:center;flex-wrap:wrap;font-size:.9em}
main{padding:0 1em 22em} section.unrolled{margin:1em 0 1.5em} section.unrolled h2{font-size:1em;margin:.6em 0 .3em}
.scroll{overflow-x:auto;border:1px solid #eee} svg.net{display:block} rect.box{cursor:pointer} rect.box:hover{stroke:#d35400;stroke-width:2}
.gnum{display:none} body.bptt .gnum{display:inline} table.summary{border-collapse:collapse;font-size:.82em;margin:.3em 0}
table.summary td,table.summary th{border:1px solid #ddd;padding:.15em .45em;text-align:right} table.summary th{background:#f3f3f3}
#panel{position:fixed;bottom:0;left:0;right:0;max-height:45vh;overflow:auto;background:#fff;border-top:2px solid #d35400;
padding:.4em 1em .8em;font-size:.88em;display:none;z-index:3} #panel.open{display:block} #panel h3{margin:.2em 0;font-size:1em}
#panel .eqs div{font-family:Menlo,Consolas,monospace;margin:.25em 0} #panel td{padding:0 .6em 0 0} .v{color:#a93226}
.note{color:#555} .legend span{display:inline-block;width:1.6em;height:.8em;vertical-align:middle}
"""
ZOOM_WIDTH = 1200  # the initial zoom fits the widest drawing to about this many pixels (100 % to 250 %)


def _number(v) -> float | None:
    v = float(v)
    return float(f"{v:.7g}") if math.isfinite(v) else None


def _numbers(a) -> list:
    return [_number(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def net_data(u) -> dict:
    """What the script needs of one network: the drawn units' values, pre-activations, biases, gradients."""
    cols = u.x.shape[1]
    C = min(cols, 8)
    tracks = []
    for tr in u.tracks:
        entry = {"k": tr.level, "d": tr.direction,
                 "v": {n: _numbers(a[:, u.units]) for n, a in tr.values.items()},
                 "pre": {g: _numbers(a[:, u.units]) for g, a in tr.pre.items()},
                 "b": {g: _numbers(b[u.units]) for g, b in tr.bias.items()},
                 "mean": {n: _numbers(_mean_over_units(a)) for n, a in tr.values.items()}}  # all H units, per step
        if tr.grads:
            entry["g"] = {n: _numbers(a) for n, a in tr.grads.items()}
        tracks.append(entry)
    return {"label": u.label, "cell": u.cell, "options": u.options, "T": u.T, "length": u.length, "H": u.hidden_size,
            "L": u.num_layers, "D": u.num_directions, "units": list(u.units), "x": _numbers(u.x[:, :C]), "C": C,
            "Cfull": cols, "embedded": bool(u.embedded), "tracks": tracks}


def _mean_over_units(a: np.ndarray) -> np.ndarray:
    """(T, H) -> (T,): the mean over every unit, NaN at padded steps."""
    out = np.full(a.shape[0], np.nan)
    real = ~np.isnan(a).any(axis=1)
    out[real] = a[real].mean(axis=1)
    return out


def summary_rows(u) -> list[list[str]]:
    """Per level and direction: ‖∂L/∂h‖ at its last and first step (in the direction's own order: the
    reverse direction's first step is t = T), their ratio, the geometric-mean per-step factor, and the
    same for C."""
    rows = []
    for tr in u.tracks:
        if not tr.grads:
            continue
        for s in ("h", "c") if "c" in tr.grads else ("h",):
            g = tr.grads[s][: u.length]
            first, last = (g[0], g[-1]) if tr.direction == 0 else (g[-1], g[0])  # processing order
            ratio = first / last if last > 0 else float("nan")
            steps = u.length - 1
            gm = ratio ** (1 / steps) if steps > 0 and ratio > 0 and math.isfinite(ratio) else float("nan")
            rows.append([f"level {tr.level} {'forward' if tr.direction == 0 else 'reverse'}", s, short(last), short(first),
                         short(ratio), "—" if gm != gm else f"{gm:.3f}"])
    return rows


def _section(u, i: int, lay) -> str:
    svg = svg_document([lay], "forward", numbers=True, attrs=f' class="net" id="net-{i}" data-net="{i}"')
    blocks = len(lay.columns) < u.T
    note = (f'<p class="note">{u.T} steps drawn as {len(lay.columns)} columns of up to '
            f"{lay.columns[0][1] - lay.columns[0][0]} steps (values: the block's mean; arrows: the block's flows "
            f"together); the panel's ◀ ▶ walk through every step.</p>") if blocks else ""
    rows = summary_rows(u)
    table = ""
    if rows:
        table = ('<table class="summary"><tr><th>track</th><th>state</th><th>‖∂L/∂·‖ at its last step</th>'
                 "<th>at its first step</th><th>first / last</th><th>per-step factor (geometric mean)</th></tr>"
                 + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")
    return (f'<section class="unrolled" id="unrolled-{i}"><h2>{html.escape(lay.shapes[0].text)}</h2>{note}{table}'
            f'<div class="scroll">{svg}</div></section>')


def page_html(unrolled: list, *, title: str | None = None, max_columns: int | None = None) -> str:
    """The page's HTML text for these networks, one above the other."""
    if not unrolled:
        raise ValueError("unrolled: expected at least one unrolled network, got none")
    grads = all(u.tracks[0].grads for u in unrolled)
    data = {"nets": [net_data(u) for u in unrolled], "gradients": grads}
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    title = title or "Unrolled: " + ", ".join(u.label for u in unrolled)
    layouts = [layout(u, max_columns, i) for i, u in enumerate(unrolled)]
    zoom = min(max(round(ZOOM_WIDTH / max(lay.width for lay in layouts) * 10) * 10, 100), 250)  # short sequences start larger
    legend = ('<span class="legend">values: <span style="background:#3b6fb6"></span> low '
              '<span style="background:#fff;border:1px solid #ccc"></span> middle '
              '<span style="background:#d64533"></span> high (σ gates on [0, 1], tanh values on [−1, 1])</span>')
    controls = (f'<div class="controls"><button id="view"{"" if grads else " disabled"}>Replay BPTT (gradients)</button>'
                f'<label>zoom <input id="zoom" type="range" min="10" max="250" value="{zoom}"></label>'
                '<label><input id="pin" type="checkbox"> show on click only</label>' + legend + "</div>")
    intro = ('<p class="note">The network unrolled over its time steps, as in the seed: one column per step, one row per '
             "level (reverse directions drawn with their arrows reversed), x_t below and y_t above. Each box stacks its "
             "gates and states, one square per drawn unit. Hover or click a box for its equations with this step's "
             "numbers. <b>Replay BPTT</b> colours and sizes every arrow by the gradient flowing along it, on a log scale "
             f"over {DECADES} decades below the largest; the numbers under the boxes are ‖∂L/∂h_t‖.</p>")
    body = "".join(_section(u, i, lay) for i, (u, lay) in enumerate(zip(unrolled, layouts)))
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{html.escape(title)}</h1>{controls}</header><main>{intro}{body}</main>"
            '<div id="panel"></div>'
            f'<script type="application/json" id="unroll-data">{payload}</script>'
            f"<script>{SCRIPT}</script></body></html>\n")


def write_page(path, unrolled: list, *, title: str | None = None, max_columns: int | None = None) -> int:
    """Write the page to ``path`` (``.html``), atomically; returns its size in bytes."""
    target = output_path(path, ".html")
    data = page_html(list(unrolled), title=title, max_columns=max_columns).encode("utf-8")
    write_atomic(target, data)
    return len(data)
