"""The layout's shapes as SVG: a standalone document (``to_svg``) or the page's inline drawing.

Unit squares carry no identity of their own, so all squares of one colour become one stroked
``<path>`` of short horizontal segments (a few bytes per square); boxes and arrows are elements with
``data-`` attributes that the page's script reads. Each arrow is drawn in the encoding the view asks
for and carries its BPTT encoding as ``data-bw`` ("colour width") for the page's toggle.
"""

from __future__ import annotations

import html

from .layout import Arrow, Layout, Rect, Text, layout

VIEWS = ("forward", "bptt")
MARKER = ('<style>.arrow{fill:none;marker-end:url(#head)}</style><defs><marker id="head" viewBox="0 0 6 6" refX="5" refY="3" markerWidth="5" markerHeight="5" '
          'markerUnits="userSpaceOnUse" orient="auto-start-reverse"><path d="M0,0L6,3L0,6z" fill="#777"/></marker></defs>')


def _n(v: float) -> str:
    s = f"{v:.1f}"
    return s[:-2] if s.endswith(".0") else s


def check_view(view, unrolled: list) -> str:
    """``view`` must be "forward" or "bptt", and "bptt" needs every network's gradients."""
    if view not in VIEWS:
        raise ValueError(f"view: expected one of {', '.join(repr(v) for v in VIEWS)}, got {view!r}")
    if view == "bptt" and not all(u.tracks[0].grads for u in unrolled):
        raise ValueError("view: 'bptt' needs gradients; unroll with a loss (unroll(model, x, loss))")
    return view


def shapes_svg(lay: Layout, view: str, *, numbers: bool, dy: float = 0.0) -> list[str]:
    """SVG elements of one layout, shifted down by dy. ``numbers``: include the BPTT gradient numbers."""
    boxes, squares, rest = [], {}, []
    for s in lay.shapes:
        if isinstance(s, Rect) and not s.cls and s.stroke is None:  # a square: a segment as thick as it is tall
            squares.setdefault((s.fill, s.h), []).append(f"M{_n(s.x)} {_n(s.y + s.h / 2 + dy)}h{_n(s.w)}")
        elif isinstance(s, Rect):  # boxes first: the squares are drawn inside them
            data = "".join(f' data-{k}="{v}"' for k, v in s.data.items())
            dash = ' stroke-dasharray="3 2"' if s.dash else ""
            cls = f' class="{s.cls}"' if s.cls else ""
            boxes.append(f'<rect{cls} x="{_n(s.x)}" y="{_n(s.y + dy)}" width="{_n(s.w)}" height="{_n(s.h)}" '
                         f'fill="{s.fill}" stroke="{s.stroke or "none"}"{dash}{data}/>')
        elif isinstance(s, Arrow):
            colour, width = s.forward if view == "forward" else s.bptt
            pts = " ".join(f"{_n(x)},{_n(y + dy)}" for x, y in s.points)
            rest.append(f'<polyline class="arrow {s.kind}" points="{pts}" stroke="{colour}" stroke-width="{width}" '
                        f'data-bw="{s.bptt[0]} {s.bptt[1]}"/>')
        elif isinstance(s, Text) and (s.cls != "gnum" or numbers):
            cls = f' class="{s.cls}"' if s.cls else ""
            rest.append(f'<text{cls} x="{_n(s.x)}" y="{_n(s.y + dy)}" font-size="{s.size}" text-anchor="{s.anchor}" '
                        f'fill="{s.colour}">{html.escape(s.text)}</text>')
    paths = [f'<path stroke="{fill}" stroke-width="{_n(h)}" d="{"".join(parts)}"/>' for (fill, h), parts in squares.items()]
    return boxes + paths + rest


def svg_document(layouts: list[Layout], view: str, *, numbers: bool, attrs: str = "") -> str:
    """One SVG holding the layouts one above the other."""
    width = max(lay.width for lay in layouts)
    height = sum(lay.height for lay in layouts)
    body, dy = [], 0.0
    for lay in layouts:
        body += shapes_svg(lay, view, numbers=numbers, dy=dy)
        dy += lay.height
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(width)}" height="{_n(height)}" '
            f'viewBox="0 0 {_n(width)} {_n(height)}" font-family="Helvetica,Arial,sans-serif"{attrs}>'
            + MARKER + f'<rect width="{_n(width)}" height="{_n(height)}" fill="#ffffff"/>' + "".join(body) + "</svg>")


def render_svg(unrolled: list, view: str = "forward", *, max_columns: int | None = None) -> str:
    """The networks' pictures, one above the other, as a standalone SVG document (view "forward" or "bptt")."""
    check_view(view, unrolled)
    return svg_document([layout(u, max_columns, i) for i, u in enumerate(unrolled)], view, numbers=view == "bptt")
