"""Gate saturation, as Karpathy, Johnson & Fei-Fei (2015, "Visualizing and understanding recurrent
networks") measure it: a sigmoid gate unit is left-saturated at a step when its activation is below
0.1 and right-saturated when it is above 0.9; per unit, the fraction of steps it spends in each.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import torch

from .. import _checks

SIGMOID_GATES = ("f", "i", "o", "z", "r")  # the gates σ produces: LSTM f, i, o; GRU z, r


class Saturation(NamedTuple):
    """Per hidden unit (H,): the fraction of (time step, sequence) pairs below ``low`` and above ``high``."""

    left: torch.Tensor
    right: torch.Tensor


def _saturation(v: torch.Tensor, low: float, high: float, name: str) -> Saturation:
    v = _checks.tensor(name, v)
    if v.dim() < 1 or v.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty trace (..., H), got shape {_checks.shape_str(v)}")
    flat = v.detach().reshape(-1, v.shape[-1]).to(torch.float64)
    return Saturation((flat < low).double().mean(0), (flat > high).double().mean(0))


def gate_saturation(traces: Mapping, low: float = 0.1, high: float = 0.9) -> dict:
    """Left and right saturation of every sigmoid gate in ``traces``.

    ``traces``: what a layer returns with ``return_gates=True`` — ``{"l0": {"f": (T, B, H), ...}, ...}`` —
    or one level's dict ``{"f": ..., "i": ..., ...}``. Only sigmoid gates (LSTM f, i, o; GRU z, r) are
    measured; the tanh candidates, the cell state and the RNN's h are not gates.

    Returns the same nesting with a :class:`Saturation` (per-unit fractions, each (H,)) per gate;
    ``.left.mean()`` is the share of all gate activations below ``low``.
    """
    if not isinstance(traces, Mapping):
        raise TypeError(f"traces: expected a dict of gate traces (from return_gates=True), got {type(traces).__name__}")
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name}: expected a float in [0, 1], got {type(value).__name__} {value!r}")
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"low, high: expected 0 <= low < high <= 1, got low={low}, high={high}")
    nested = all(isinstance(v, Mapping) for v in traces.values())
    if nested and traces:
        return {key: gate_saturation(level, low, high) for key, level in traces.items()}
    return {g: _saturation(v, low, high, f"traces[{g!r}]") for g, v in traces.items() if g in SIGMOID_GATES}
