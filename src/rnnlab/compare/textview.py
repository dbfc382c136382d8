"""The char-LM's gates and cell state drawn onto the text it reads, one coloured box per character
(after Karpathy, Johnson & Fei-Fei 2015, figures 2-4).

Each row is one hidden unit of one trace (a gate, the candidate, or the cell state) over the same
passage: a character's background is that unit's activation after reading it, from blue (the
bottom of the trace's range: 0 for σ gates, −1 for tanh values) through white to red (the top).
Hovering a character shows the value.
"""

from __future__ import annotations

import html

import numpy as np

from .plots import CELL_COLOURS

SIGMOID = ("f", "i", "o", "z", "r")  # σ gates in [0, 1]; everything else here lies in [-1, 1]
LOW, MID, HIGH = (59, 111, 182), (255, 255, 255), (214, 69, 51)

CSS = """
.gt-row{margin:.6em 0 1.1em} .gt-label{font-size:.9em;color:#333;margin-bottom:.2em}
.gt-text{font-family:Menlo,Consolas,monospace;font-size:13px;line-height:1.5;white-space:pre-wrap;word-break:break-all;border:1px solid #ddd;padding:.4em}
.gt-text span{padding:0 .5px} .gt-legend span{display:inline-block;width:2.2em;text-align:center;font-size:.8em;font-family:monospace}
"""


def colour(u: float) -> str:
    """u in [0, 1] -> an rgb() on blue–white–red."""
    u = min(max(float(u), 0.0), 1.0)
    a, b, w = (LOW, MID, u / 0.5) if u < 0.5 else (MID, HIGH, (u - 0.5) / 0.5)
    return "rgb({},{},{})".format(*(round(x + (y - x) * w) for x, y in zip(a, b)))


def unit_of_interest(values: np.ndarray) -> int:
    """The unit whose activation varies most over the passage (values (T, H))."""
    return int(np.argmax(values.var(axis=0)))


def row_html(text: str, values: np.ndarray, label: str, signed: bool) -> str:
    """One passage coloured by ``values`` (T,) — σ range [0, 1], or [-1, 1] when ``signed``."""
    if len(text) != len(values):
        raise ValueError(f"values: expected one value per character ({len(text)}), got {len(values)}")
    spans = []
    for ch, v in zip(text, values):
        u = (v + 1.0) / 2.0 if signed else v
        shown = "↵\n" if ch == "\n" else html.escape(ch)
        spans.append(f'<span style="background:{colour(u)}" title="{v:+.2f}">{shown}</span>')
    return (f'<div class="gt-row"><div class="gt-label">{html.escape(label)}</div>'
            f'<div class="gt-text">{"".join(spans)}</div></div>')


def legend_html() -> str:
    cells = "".join(f'<span style="background:{colour(u)}">{u:.1f}</span>' for u in np.linspace(0, 1, 11))
    return (f'<div class="gt-legend">σ gates 0 → 1 (tanh values −1 → 1): {cells}</div>')


def gate_text_html(text: str, per_cell: dict[str, dict[str, np.ndarray]]) -> str:
    """The whole view: for each cell kind ("rnn", "lstm", "gru"), one row per trace, each showing the
    unit of that trace that varies most over ``text``. ``per_cell[cell][trace]`` is (T, H)."""
    parts = [f"<style>{CSS}</style>", legend_html()]
    for cell, traces in per_cell.items():
        parts.append(f'<h3 style="color:{CELL_COLOURS.get(cell, "#222")}">{cell.upper()}</h3>')
        for name, values in traces.items():
            values = np.asarray(values, dtype=np.float64)
            if values.ndim != 2 or values.shape[0] != len(text):
                raise ValueError(f"per_cell[{cell!r}][{name!r}]: expected shape ({len(text)}, H), got {values.shape}")
            unit = unit_of_interest(values)
            signed = name not in SIGMOID
            shown = "tanh(c)" if name == "c" else name
            series = np.tanh(values[:, unit]) if name == "c" else values[:, unit]
            label = f"{cell.upper()} {shown}, unit {unit} (the {shown} unit varying most over this passage; mean {series.mean():+.2f})"
            parts.append(row_html(text, series, label, signed))
    return '<div class="gate-text">' + "\n".join(parts) + "</div>"
