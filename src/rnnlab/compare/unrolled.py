"""The report's section "The network unrolled": the three cells trained on the adding problem (the
gradient section's runs at its length, first seed) drawn over one held-out sequence by
:mod:`rnnlab.viz` — forward and BPTT views as static images, and the interactive page ``unroll.html``
written beside the report.

``measure_unrolled`` computes (here every number is taken); ``render_unrolled`` only lays them out;
``write_unrolled_page`` writes the page. The ``nets`` field holds the drawings' data and is left out
of ``measurements.json`` (the page carries it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..tasks import Batch
from ..viz import unroll, write_page
from ..viz.layout import layout
from ..viz.png import png_bytes
from .protocol import CELLS, Profile, memory_specs
from .training import RunCache

TITLE = "The network unrolled"
PAGE = "unroll.html"
STATIC_COLUMNS = 40  # the static images draw the sequence in this many columns (blocks of steps)


@dataclass
class UnrolledCell:
    cell: str
    loss: float  # L on the drawn sequence
    solved: bool  # the run reached the adding threshold
    h_far_over_near: float  # ‖∂L/∂h_1‖ / ‖∂L/∂h_T‖
    c_far_over_near: float | None  # the same for the LSTM's C_t
    factor: float  # the geometric-mean per-step factor of ‖∂L/∂h_t‖


@dataclass
class UnrolledSection:
    task: str
    T: int
    seed: int
    sample: int
    cells: list[UnrolledCell]
    nets: list = field(default_factory=list)  # the viz.Unrolled of each cell (drawn; not in measurements.json)


def _far_over_near(g) -> float:
    return float(g[0] / g[-1]) if g[-1] > 0 else float("nan")


def measure_unrolled(p: Profile, cache: RunCache, sample: int = 0) -> UnrolledSection:
    """Unroll each cell's trained adding model (seed p.seeds[0], T = the task's longest length) on held-out
    sequence ``sample``, with the task's loss."""
    task_cfg = p.memory_task("adding")
    T, seed = max(task_cfg.lengths), p.seeds[0]
    cells, nets = [], []
    for cell in CELLS:
        spec = memory_specs(p, task_cfg, T, cell, seed)
        model, task = cache.model(spec)
        batch = task.eval_batches(sample + 1, sample + 1)[0]
        one = Batch(batch.x[sample:sample + 1].double(), batch.y[sample:sample + 1].double())
        solved = cache.result(spec)["solved_at"] is not None
        u = unroll(model, batch.x, lambda y: task.loss(y, one), sample=sample,
                   title=f"trained, {'solved' if solved else 'not solved'}")
        g = u.tracks[0].grads
        ratio = _far_over_near(g["h"])
        cells.append(UnrolledCell(cell, u.loss, solved, ratio, _far_over_near(g["c"]) if "c" in g else None,
                                  ratio ** (1 / (T - 1)) if ratio > 0 and math.isfinite(ratio) else float("nan")))
        nets.append(u)
    return UnrolledSection("adding", T, seed, sample, cells, nets)


def _blocks(T: int) -> str:
    size = math.ceil(T / STATIC_COLUMNS)
    return "" if size == 1 else f" (in the images, blocks of {size} steps: the block's mean values, its arrows' flows together)"


def render_unrolled(doc, ctx) -> None:
    s: UnrolledSection = ctx.m.unrolled
    doc.paragraph(
        f"The seed's picture of an RNN, \"a deep feedforward network over time steps\", drawn from the trained models' "
        f"own numbers (`rnnlab.viz.unroll`): held-out adding sequence {s.sample} at T = {s.T}, seed {s.seed}'s run of each "
        f"cell. One column per step{_blocks(s.T)}, x_t below, the prediction "
        f"above the last step; each box stacks its gates and states (LSTM f, i, C̃, o, C, h; GRU z, r, h̃, h; RNN h), "
        f"one square per drawn unit, blue low, white middle, red high. The LSTM's cell state is the orange line running "
        f"through.")
    layouts = [layout(u, STATIC_COLUMNS, i) for i, u in enumerate(s.nets)]
    doc.figure("unrolled_forward.png", png_bytes(layouts, "forward"), "The three cells unrolled over one sequence: values.")
    doc.figure("unrolled_bptt.png", png_bytes(layouts, "bptt"),
               "The same, BPTT view: every arrow coloured and sized by the gradient flowing along it (log scale over "
               "8 decades), with ‖∂L/∂h_t‖ under each box.")
    doc.table(["cell", "solved", "L on this sequence", "‖∂L/∂h_1‖ / ‖∂L/∂h_T‖", "‖∂L/∂C_1‖ / ‖∂L/∂C_T‖", "per-step factor"],
              [[c.cell.upper(), c.solved, c.loss, c.h_far_over_near, "—" if c.c_far_over_near is None else c.c_far_over_near,
                c.factor] for c in s.cells])
    doc.raw_html(f'<p>Interactive: <a href="{PAGE}">{PAGE}</a> (beside this report) — click a box for its equations with '
                 "this step's numbers, replay BPTT, zoom.</p>",
                 f"Interactive: [{PAGE}]({PAGE}) (beside this report) — click a box for its equations with this step's "
                 "numbers, replay BPTT, zoom. Any run or fresh model: `rnnlab unroll`.")


def write_unrolled_page(s: UnrolledSection, folder: str | Path) -> Path:
    """Write the interactive page beside the report; returns its path."""
    path = Path(folder) / PAGE
    write_page(path, s.nets, title=f"rnnlab compare: RNN, LSTM and GRU unrolled on adding, T = {s.T}")
    return path
