"""The layout's shapes drawn with matplotlib (Agg): the picture as a PNG, without a browser."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection, PatchCollection, PolyCollection  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from .files import output_path, write_atomic  # noqa: E402
from .layout import Arrow, Rect, Text, layout  # noqa: E402
from .svg import check_view  # noqa: E402

DPI = 100
ALIGN = {"start": "left", "middle": "center", "end": "right"}


def png_bytes(layouts: list, view: str, *, scale: float = 1.0) -> bytes:
    """The layouts one above the other as PNG bytes; ``scale`` pixels per layout unit."""
    width = max(lay.width for lay in layouts)
    height = sum(lay.height for lay in layouts)
    fig = plt.figure(figsize=(width * scale / DPI, height * scale / DPI), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    squares, boxes, lines, heads = [], [], {}, []
    dy = 0.0
    for lay in layouts:
        for s in lay.shapes:
            if isinstance(s, Rect):
                r = Rectangle((s.x, s.y + dy), s.w, s.h)
                if s.stroke is None:
                    squares.append((r, s.fill))
                else:
                    boxes.append((r, s.fill, s.stroke, s.dash))
            elif isinstance(s, Arrow):
                colour, width_ = s.forward if view == "forward" else s.bptt
                pts = [(x, y + dy) for x, y in s.points]
                lines.setdefault((colour, width_), []).append(pts)
                (x1, y1), (x2, y2) = pts[-2], pts[-1]
                heads.append(_head(x1, y1, x2, y2))
            elif isinstance(s, Text) and (s.cls != "gnum" or view == "bptt"):
                ax.text(s.x, s.y + dy, s.text, fontsize=s.size * 0.75 * scale, ha=ALIGN[s.anchor], va="baseline",
                        color=s.colour)
        dy += lay.height
    if squares:
        ax.add_collection(PatchCollection([r for r, _ in squares], facecolors=[c for _, c in squares], linewidths=0))
    if boxes:
        ax.add_collection(PatchCollection([b[0] for b in boxes], facecolors=["none" if b[1] == "none" else b[1] for b in boxes],
                                          edgecolors=[b[2] for b in boxes], linewidths=0.8 * scale,
                                          linestyles=["--" if b[3] else "-" for b in boxes], zorder=0.5))
    for (colour, width_), segs in lines.items():
        ax.add_collection(LineCollection(segs, colors=colour, linewidths=width_ * 0.75 * scale, capstyle="butt"))
    if heads:
        ax.add_collection(PolyCollection(heads, facecolors="#777777", linewidths=0))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def _head(x1, y1, x2, y2, size=3.0):
    dx, dy = x2 - x1, y2 - y1
    n = (dx * dx + dy * dy) ** 0.5 or 1.0
    ux, uy = dx / n, dy / n
    return [(x2, y2), (x2 - size * ux - size * 0.6 * uy, y2 - size * uy + size * 0.6 * ux),
            (x2 - size * ux + size * 0.6 * uy, y2 - size * uy - size * 0.6 * ux)]


def render_png(unrolled: list, path, view: str = "forward", *, max_columns: int | None = None, scale: float = 1.0) -> None:
    """Write the networks' pictures, one above the other, as one PNG to ``path`` (atomically)."""
    check_view(view, unrolled)
    target = output_path(path, ".png")
    write_atomic(target, png_bytes([layout(u, max_columns, i) for i, u in enumerate(unrolled)], view, scale=scale))
