"""Where everything of the unrolled picture goes: one column per time step (or per block of steps,
when there are more steps than columns), one row per level and direction, x_t below and y_t above.

The layout turns an :class:`~rnnlab.viz.trace.Unrolled` into plain shapes — rectangles, arrows,
text — that the SVG writer (``svg.py``, also the interactive page's drawing) and the PNG writer
(``png.py``) both draw, so the static images and the page cannot disagree.

    y row        [y_t]                                    top
    level L-1    [box]→[box]→[box]     (reverse rows: ←)
    ...            ↑      ↑      ↑
    level 0      [box]→[box]→[box]
    x row        [x_t]  [x_t]  [x_t]                      bottom

A box stacks, top-down, one strip per gate and state (LSTM f, i, C̃, o, C, h; GRU z, r, h̃, h; RNN h), each
strip one small square per drawn unit coloured by value. Arrows carry two encodings: forward (the
network's wiring, uniform) and BPTT (width and colour from the gradient flowing along the arrow,
on a log scale spanning ``DECADES`` powers of ten below the largest flow in the network).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

UNIT = 4  # width of one unit's square in a strip
STRIP = 6  # strip height
GAP = 1  # between strips
LEFT = 62  # margin for row labels
TOP = 30  # margin for the title
ROW_GAP = 24  # vertical space between rows (input arrows, gradient numbers)
COL_GAP = 14  # horizontal space between boxes (recurrent arrows)
IO_HEIGHT = 12  # x and y rows
DECADES = 8  # the BPTT encoding's dynamic range: flows below max·10^-DECADES are drawn faintest
DEFAULT_COLUMNS = 200  # more steps than this are drawn as blocks of steps
SIGMOID = ("f", "i", "o", "z", "r")  # σ gates, in [0, 1]
STRIP_NAMES = {"f": "f", "i": "i", "g": "C̃", "o": "o", "c": "C", "h": "h", "z": "z", "r": "r", "n": "h̃"}
LOW, MID, HIGH = (59, 111, 182), (255, 255, 255), (214, 69, 51)
LEVELS = 16  # colours are quantised to this many steps per side (the SVG groups squares by colour)
FORWARD_ARROW = ("#8a8a8a", 1.2)
CELL_LINE = ("#d95f02", 2.0)  # the LSTM's cell state, "a horizontal line running through"


@dataclass
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str
    stroke: str | None = None
    dash: bool = False
    cls: str = ""
    data: dict = field(default_factory=dict)


@dataclass
class Arrow:
    points: list  # [(x, y), ...], the head at the last point
    forward: tuple  # (colour, width)
    bptt: tuple  # (colour, width)
    kind: str  # "rec-h", "rec-c", "in", "out"


@dataclass
class Text:
    x: float
    y: float
    text: str
    size: float = 9
    anchor: str = "start"  # "start", "middle", "end"
    colour: str = "#333"
    cls: str = ""


@dataclass
class Layout:
    width: float
    height: float
    shapes: list
    columns: list  # [(t0, t1)], steps t0 <= t < t1 per column
    boxes: dict  # (level, direction, column) -> Rect


def colour(u: float) -> str:
    """u in [0, 1] -> blue (0) – white (0.5) – red (1), quantised to LEVELS steps per side."""
    if u != u:
        return "#eeeeee"
    u = round(min(max(float(u), 0.0), 1.0) * 2 * LEVELS) / (2 * LEVELS)
    a, b, s = (LOW, MID, u * 2) if u < 0.5 else (MID, HIGH, u * 2 - 1)
    return "#%02x%02x%02x" % tuple(round(p + (q - p) * s) for p, q in zip(a, b))


def value_colour(name: str, v: float) -> str:
    """σ gates on [0, 1]; tanh values on [-1, 1]; C (unbounded) through tanh."""
    if name in SIGMOID:
        return colour(v)
    return colour((math.tanh(v) + 1) / 2 if name == "c" else (v + 1) / 2)


def columns(T: int, max_columns: int | None) -> list[tuple[int, int]]:
    """Steps per drawn column: one each, or equal blocks when T > max_columns."""
    m = DEFAULT_COLUMNS if max_columns is None else max_columns
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"max_columns: expected a positive int, got {max_columns!r}")
    size = math.ceil(T / m)
    return [(t, min(t + size, T)) for t in range(0, T, size)]


def bptt_style(g: float, top: float) -> tuple[str, float]:
    """A gradient flow's arrow: width 0.4–4.4 and grey to red, by log10(g / top) over DECADES decades."""
    if not g == g or g <= 0 or top <= 0:
        return ("#e4e4e4", 0.4)
    s = min(max(1 + math.log10(g / top) / DECADES, 0.0), 1.0)
    grey, red = (228, 228, 228), (192, 57, 43)
    c = "#%02x%02x%02x" % tuple(round(p + (q - p) * s) for p, q in zip(grey, red))
    return (c, round(0.4 + 4.0 * s, 2))


def short(g: float) -> str:
    """A gradient norm in 2-significant-figure exponent form, '—' for none."""
    return "—" if not g == g else ("0" if g == 0 else f"{g:.1e}".replace("e-0", "e-").replace("e+0", "e"))


def _block(a: np.ndarray, t0: int, t1: int) -> np.ndarray:
    """Mean over the block's real steps (NaN when all are padding)."""
    part = a[t0:t1]
    ok = ~np.isnan(part).all(axis=tuple(range(1, part.ndim)))
    return part[ok].mean(axis=0) if ok.any() else np.full(part.shape[1:], np.nan)


def _block_norm(a: np.ndarray, t0: int, t1: int) -> float:
    """The norm of the block's flows together (NaN when all are padding)."""
    part = a[t0:t1]
    part = part[~np.isnan(part)]
    return float(np.sqrt((part ** 2).sum())) if part.size else float("nan")


def layout(u, max_columns: int | None = None, net: int = 0, title: str | None = None) -> Layout:
    """Shapes for one unrolled network ``u``; ``net`` is its index on a page (carried in box data)."""
    cols = columns(u.T, max_columns)
    K, strips, D = len(u.units), u.strips, u.num_directions
    bw = max(K * UNIT, 18) + 4
    bh = len(strips) * (STRIP + GAP) + 3
    pitch = bw + COL_GAP
    row_y = {}  # (level, direction) -> top y of its boxes; reverse above forward, top level first
    y = TOP + IO_HEIGHT + ROW_GAP
    for k in reversed(range(u.num_layers)):
        for d in reversed(range(D)):
            row_y[(k, d)] = y
            y += bh + ROW_GAP
    x_row = y
    width, height = LEFT + pitch * len(cols) + 10, x_row + IO_HEIGHT + 18
    shapes: list = []
    boxes: dict = {}
    label = title if title is not None else (f"{u.title} — " if u.title else "") + _describe(u)
    shapes.append(Text(4, 16, label, size=12, colour="#111"))
    has_grads = bool(u.tracks[0].grads)
    top = max((float(np.nanmax(np.r_[tr.grads[n], 0.0])) for tr in u.tracks for n in tr.grads if n != "factor"),
              default=0.0) if has_grads else 0.0
    x_left = lambda j: LEFT + j * pitch + COL_GAP / 2
    padded = lambda t0: t0 >= u.length

    # row labels and strip names
    for (k, d), y0 in row_y.items():
        arrow = "→" if d == 0 else "←"
        shapes.append(Text(4, y0 + bh / 2 - 2, f"level {k}", size=9))
        shapes.append(Text(4, y0 + bh / 2 + 9, f"{'forward' if d == 0 else 'reverse'} {arrow}", size=8, colour="#666"))
        for s, name in enumerate(strips):
            shapes.append(Text(LEFT - 3, _strip_y(y0, len(strips), s) + STRIP - 1, STRIP_NAMES[name], size=7,
                               anchor="end", colour="#555"))
    shapes.append(Text(LEFT - 3, x_row + IO_HEIGHT - 2, "x_t", size=8, anchor="end"))
    shapes.append(Text(LEFT - 3, TOP + IO_HEIGHT - 2, "y_t", size=8, anchor="end"))

    x_scale = float(np.nanmax(np.abs(u.x))) if np.isfinite(u.x).any() else 1.0
    y_scale = float(np.nanmax(np.abs(u.y))) if np.isfinite(u.y).any() else 1.0
    top_level = u.num_layers - 1
    for j, (t0, t1) in enumerate(cols):
        x0 = x_left(j)
        if j == 0 or j == len(cols) - 1 or (len(cols) <= 60 and j % 5 == 4) or (len(cols) > 60 and j % 20 == 19):
            shapes.append(Text(x0 + bw / 2, height - 4, str(t1) if t1 - t0 == 1 else f"{t0 + 1}–{t1}", size=7,
                               anchor="middle", colour="#666"))
        _io_row(shapes, u.x, t0, t1, x0, x_row, bw, x_scale, padded(t0), u.symbols)
        _io_row(shapes, u.y, t0, t1, x0, TOP, bw, y_scale, padded(t0), False)
        for (k, d), y0 in row_y.items():
            tr = u.track(k, d)
            box = Rect(x0, y0, bw, bh, "#f2f2f2" if padded(t0) else "#ffffff", "#9a9a9a" if padded(t0) else "#444444",
                       dash=padded(t0), cls="box pad" if padded(t0) else "box",
                       data={"net": net, "k": k, "d": d, "t0": t0, "t1": t1})
            shapes.append(box)
            boxes[(k, d, j)] = box
            if not padded(t0):
                for s, name in enumerate(strips):
                    vals = _block(tr.values[name][:, u.units], t0, t1)
                    for q, v in enumerate(vals):
                        shapes.append(Rect(x0 + 2 + q * (bw - 4) / K, _strip_y(y0, len(strips), s), (bw - 4) / K, STRIP,
                                           value_colour(name, v)))
            _arrows(shapes, u, tr, cols, j, x0, y0, bw, bh, strips, top, row_y, x_row, padded, top_level)
            if has_grads and not padded(t0):
                g = float(tr.grads["h"][_first(t0, t1, d, u.length)])
                shapes.append(Text(x0 + bw / 2 + 3, y0 + bh + 9, short(g), size=6.5, anchor="middle",
                                   colour="#a93226", cls="gnum"))
    return Layout(width, height, shapes, cols, boxes)


def _first(t0: int, t1: int, d: int, length: int) -> int:
    """The first real step of block [t0, t1) in direction d's order (forward: t0; reverse: its last real step)."""
    return t0 if d == 0 else min(t1, length) - 1


def _describe(u) -> str:
    opts = "".join(f", {k}={v}" for k, v in u.options.items())
    shape = f"{u.num_layers} level{'s' if u.num_layers > 1 else ''}" + (", bidirectional" if u.num_directions == 2 else "")
    loss = "" if u.loss is None else f", L = {u.loss:.4g}"
    return f"{u.label} (H = {u.hidden_size}{opts}, {shape}, T = {u.T}{loss})"


def _strip_y(y0: float, n: int, s: int) -> float:
    """Top of strip s of n, listed top-down: the gates first, then C and h at the bottom of the box."""
    return y0 + 2 + s * (STRIP + GAP)


def _io_row(shapes, values, t0, t1, x0, y0, bw, scale, pad, symbols):
    """x_t or y_t of one column: one square per value (up to 8), or the symbol."""
    v = _block(values, t0, t1)
    if pad or np.isnan(v).all():
        return
    if symbols:
        shapes.append(Text(x0 + bw / 2, y0 + IO_HEIGHT - 2, str(int(round(v[0]))) if t1 - t0 == 1 else "…",
                           size=8, anchor="middle"))
        return
    shown = v[:8]
    w = (bw - 4) / len(shown)
    for q, a in enumerate(shown):
        shapes.append(Rect(x0 + 2 + q * w, y0 + 2, w, IO_HEIGHT - 4, colour((a / (scale or 1.0) + 1) / 2)))
    shapes.append(Rect(x0, y0, bw, IO_HEIGHT, "none", "#bbbbbb", cls="io"))


def _arrows(shapes, u, tr, cols, j, x0, y0, bw, bh, strips, top, row_y, x_row, padded, top_level):
    """The recurrent arrows into column j, the input arrow into the box, and (top level) its output arrow."""
    t0, t1 = cols[j]
    k, d = tr.level, tr.direction
    if padded(t0):
        return
    grads = tr.grads
    flow = lambda name, t: float(grads[name][t]) if grads else float("nan")
    first = _first(t0, t1, d, u.length)
    recurrent = [("rec-h", "flow_h", "h")] + ([("rec-c", "flow_c", "c")] if u.cell == "lstm" else [])
    last_real = len([c for c in cols if not padded(c[0])]) - 1
    for kind, name, strip in recurrent:
        ys = _strip_y(y0, len(strips), strips.index(strip)) + STRIP / 2
        if d == 0:
            start = x0 - COL_GAP + 1 if j > 0 else x0 - COL_GAP / 2
            pts = [(start, ys), (x0, ys)]
        else:
            if j > last_real:
                continue
            start = x0 + bw + COL_GAP - 1 if j < last_real else x0 + bw + COL_GAP / 2
            pts = [(start, ys), (x0 + bw, ys)]
        g = flow(name, first)
        fw = CELL_LINE if kind == "rec-c" else FORWARD_ARROW
        shapes.append(Arrow(pts, fw, bptt_style(g, top), kind))
    # input arrow: from the row below (x row for level 0) into the box
    below = _below(row_y, k, d, x_row, u.num_directions)
    g_in = _block_norm(grads["flow_in"], t0, t1) if grads else float("nan")
    if d == 0:
        xa = x0 + 5
        pts = [(xa, below), (xa, y0 + bh)]
    else:
        xa = x0 + bw + 3
        pts = [(xa, below), (xa, y0 + bh + 4), (x0 + bw - 3, y0 + bh)]
    shapes.append(Arrow(pts, FORWARD_ARROW, bptt_style(g_in, top), "in"))
    if k == top_level and not np.isnan(u.y[t0:t1]).all():  # an output arrow where there is a y_t
        g_out = _block_norm(grads["flow_out"], t0, t1) if grads else float("nan")
        if d == u.num_directions - 1:
            pts = [(x0 + bw / 2, y0), (x0 + bw / 2, TOP + IO_HEIGHT)]
        else:
            xa = x0 - 3
            pts = [(x0 + 3, y0), (xa, y0 - 4), (xa, TOP + IO_HEIGHT)]
        shapes.append(Arrow(pts, FORWARD_ARROW, bptt_style(g_out, top), "out"))


def _below(row_y, k, d, x_row, D):
    """The top y of whatever sits directly below level k's band (the x row for level 0)."""
    if k == 0:
        return x_row
    return row_y[(k - 1, D - 1)]
