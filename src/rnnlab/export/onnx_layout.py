"""The seed's parameters in the layout of ONNX's RNN, LSTM and GRU operators.

ONNX stores one level of a layer as three tensors, directions stacked first (D = 1 or 2):

* ``W`` (D, G·H, X) — input weights, gate blocks in ONNX's order;
* ``R`` (D, G·H, H) — recurrent weights, same order;
* ``B`` (D, 2·G·H) — ``[Wb, Rb]``: a bias for the input side and one for the recurrent side.

Three differences from the seed's layout (``GATES`` of each cell), all handled here from each
cell's ``SPEC.onnx`` (:class:`rnnlab.cells.spec.OnnxLayout`):

* gate order: LSTM ``iofc`` (c is the seed's candidate g) against (f, i, g, o); GRU ``zrh``
  (h is the seed's candidate n) against (z, r, n) — the same order;
* bias: the seed has one bias per gate, put in ``Wb`` with ``Rb = 0`` — except the GRU with
  reset="after", whose ``b_hn`` sits inside ``r ⊙ (W_hn h + b_hn)`` and goes to ``Rbh``;
* the GRU update convention: ONNX's ``z`` weighs ``h_{t-1}`` (``H_t = (1 - z) ⊙ h̃ + z ⊙ H_{t-1}``),
  the seed's weighs the candidate, so ``z_seed = 1 - z_onnx = σ(-a_onnx)``: the z rows of W and R
  and the z bias change sign.

LSTM variants: peepholes are ONNX's input ``P`` (D, 3H), order ``iof``, the same equations
(p_i, p_f on C_{t-1}, p_o on C_t). The coupled gate (CIFG) is ``input_forget=1``, under which
ONNX derives ``f = 1 - i`` from the i rows (onnxruntime's reading; the rnnlab CIFG keeps f and sets
``i = 1 - f``): the i rows are the seed's f rows negated, ``i_onnx = σ(-a_f) = 1 - f_t``, so
``f_onnx = f_t``; the f rows (and p_f) are zero and unused.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..cells.spec import OnnxLayout

# ONNX's LSTM operator has no projection (h_t = W_hr (o_t tanh(C_t))): a layer with proj_size is refused
PROJECTION_REFUSED = ("model: {who} with proj_size={P} has no ONNX operator (ONNX's LSTM has no projection h_t = "
                      "W_hr (o_t * tanh(C_t))); expected proj_size=0")
from ..cells.variants import PEEPHOLE_GATES


class LevelWeights(NamedTuple):
    """One level's ONNX tensors: W (D, G·H, X), R (D, G·H, H), B (D, 2·G·H) or None, P (D, 3H) or None."""

    W: torch.Tensor
    R: torch.Tensor
    B: torch.Tensor | None
    P: torch.Tensor | None = None


def _source(onnx: OnnxLayout, gates: tuple[str, ...], g: str) -> tuple[float, int | None]:
    """(sign, seed block) of ONNX gate g; block None for rows ONNX ignores (f under input_forget)."""
    for dropped, kept in onnx.complement.items():
        if dropped not in gates and g in (dropped, kept):  # coupled: ONNX's i rows carry 1 - f, f rows unused
            return (-1.0, gates.index(kept)) if g == dropped else (1.0, None)
    return (-1.0 if g in onnx.negated else 1.0), gates.index(g)


def _direction(onnx: OnnxLayout, gates: tuple[str, ...], w, extra: dict):
    """One direction's Weights -> (W (G·H, X), R (G·H, H), B (2·G·H) or None, P (3H) or None)."""
    H = w.hidden_size
    Wi, Wh, Rb = [], [], []
    Wb: list[torch.Tensor] = []
    for g in onnx.gates:
        sign, block = _source(onnx, gates, g)
        w_x, w_h, b = w.gate(block if block is not None else 0)
        if block is None:
            w_x, w_h, b = (None if t is None else torch.zeros_like(t) for t in (w_x, w_h, b))
        Wi.append(sign * w_x)
        Wh.append(sign * w_h)
        if w.bias is not None:
            Wb.append(sign * b)
            hn = g == onnx.separate_bias and w.bias_hn is not None
            Rb.append(w.bias_hn if hn else torch.zeros(H, dtype=b.dtype, device=b.device))
    B = torch.cat(Wb + Rb) if w.bias is not None else None
    P = None
    if "weight_peep" in extra:
        names = [g for g in PEEPHOLE_GATES if g in gates]
        p = dict(zip(names, extra["weight_peep"].chunk(len(names))))
        rows = []
        for g in onnx.peepholes:
            sign, block = _source(onnx, gates, g)
            rows.append(torch.zeros(H, dtype=w.weight_ih.dtype) if block is None else sign * p[gates[block]])
        P = torch.cat(rows)
    return torch.cat(Wi), torch.cat(Wh), B, P


@torch.no_grad()
def level_weights(layer, k: int) -> LevelWeights:
    """Level k of an rnnlab layer in ONNX's layout (detached copies)."""
    per_dir = [_direction(layer.cell_class.SPEC.onnx, layer.gates, layer.weights(k, d), layer.extras(k, d))
               for d in range(layer.num_directions)]
    W, R, B, P = (None if per_dir[0][i] is None else torch.stack([p[i] for p in per_dir]).detach().clone()
                  for i in range(4))
    return LevelWeights(W, R, B, P)
