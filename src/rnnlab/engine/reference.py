"""The reference engine: the cell's own ``equations`` called once per time step, autograd does BPTT.

Slow and literal on purpose: every faster engine is tested against it.
"""

from __future__ import annotations

import torch

from ..cells import variants
from .stack import run_stack


def direction(layer, w, x, state, lengths, reverse: bool, trace: bool, step: dict):
    """One level, one direction. x (T, B, X); state tuple of (B, H); step: ``equations``' further
    keyword arguments (``layer.step_arguments``). Returns out (T, B, H), state, traces.

    With ``zoneout`` in training, each unit of the new state keeps its previous value with
    probability p (a fresh draw every step; the traces are the cell's, before zoneout)."""
    cell, options = layer.cell_class, layer.options
    zoneout = layer.regularisers.get("zoneout", 0.0) if layer.training else 0.0
    T = x.shape[0]
    outs: list[torch.Tensor | None] = [None] * T
    traces: dict[str, list] | None = {n: [None] * T for n in cell.TRACES} if trace else None
    keep = variants.zoneout_keep(zoneout, T, len(state), state[0]) if zoneout else None  # step s's masks: keep[s]
    for s, t in enumerate(reversed(range(T)) if reverse else range(T)):
        new_state, tr = cell.equations(x[t], state, w, **options, **step)
        if keep is not None:
            new_state = variants.zoned(keep[s], state, new_state)
        if lengths is None:
            state = new_state
            out = new_state[0]
        else:
            # a sequence already past its end (forward) or not yet at its start (reverse) keeps its state
            live = (t < lengths).unsqueeze(1)  # (B, 1)
            state = tuple(torch.where(live, n, s) for n, s in zip(new_state, state))
            out = torch.where(live, new_state[0], 0.0)
            if traces is not None:
                tr = {n: torch.where(live, v, 0.0) for n, v in tr.items()}
        outs[t] = out
        if traces is not None:
            for n, v in tr.items():
                traces[n][t] = v
    stacked = None if traces is None else {n: torch.stack(v) for n, v in traces.items()}
    return torch.stack(outs), state, stacked


class ReferenceEngine:
    name = "reference"

    def path(self, x: torch.Tensor, layer=None) -> str:
        """Which code runs for this call: always "reference" (the cells' equations under autograd)."""
        return "reference"

    def run(self, layer, x, hx, lengths, trace):
        return run_stack(layer, x, hx, lengths, trace, direction)
