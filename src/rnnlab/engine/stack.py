"""The engines' stacking driver: levels, directions, inter-layer dropout and traces, written once.

An engine supplies ``direction(layer, weights, x, state, lengths, reverse, trace, step)`` — one
level, one direction over the whole sequence; ``step`` is ``layer.step_arguments(k, d, B)``, the
keyword arguments beyond ``options`` that its every call of ``equations`` takes (a variant's added
parameters, the sequence's recurrent dropout mask; empty for the plain cells) — and ``run_stack``
composes levels and directions:

    level k input  = x                            (k = 0)
                   = dropout(concat_d out_{k-1,d}) (k > 0; training only)
    h_n[k·D + d]   = final state of level k, direction d

With ``lengths``, the forward direction stops at each sequence's end and the reverse direction
starts at each sequence's last real step; outputs (and traces) at padded steps are zero.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

DirectionFn = Callable[..., tuple[torch.Tensor, tuple[torch.Tensor, ...], dict | None]]
LevelFn = Callable[[int, torch.Tensor, list], list]


def run_stack(layer, x: torch.Tensor, hx: tuple[torch.Tensor, ...], lengths, trace: bool,
              direction: DirectionFn | None = None, level: LevelFn | None = None):
    """x (T, B, X) time-major; hx tuple of (D·L, B, H). Returns out (T, B, D·H), state tuple, traces.

    The engine gives ``direction`` (one level, one direction at a time), or ``level(k, inp, states)``
    returning ``[(out, final_state, traces)]`` for all D directions of level k at once (so that they can
    run concurrently); ``states[d]`` is direction d's initial state tuple."""
    D = layer.num_directions
    if level is None:
        def level(k, inp, states):
            return [direction(layer, layer.weights(k, d), inp, states[d], lengths, d == 1, trace,
                              layer.step_arguments(k, d, x.shape[1])) for d in range(D)]
    finals: list[list[torch.Tensor]] = [[] for _ in hx]
    traces: dict | None = {} if trace else None
    inp = x
    for k in range(layer.num_layers):
        results = level(k, inp, [tuple(s[k * D + d] for s in hx) for d in range(D)])
        for d, (_, state_n, tr) in enumerate(results):
            for f, s in zip(finals, state_n):
                f.append(s)
            if traces is not None:
                traces[layer._suffix(k, d)[1:]] = tr
        inp = results[0][0] if D == 1 else torch.cat([r[0] for r in results], dim=-1)
        if layer.dropout > 0 and layer.training and k < layer.num_layers - 1:
            inp = F.dropout(inp, layer.dropout, training=True)
    return inp, tuple(torch.stack(f) for f in finals), traces
