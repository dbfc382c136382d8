"""The seed's parameters in the layout of ONNX's RNN, LSTM and GRU operators.

ONNX stores one level of a layer as three tensors, directions stacked first (D = 1 or 2):

* ``W`` (D, G·H, X) — input weights, gate blocks in ONNX's order;
* ``R`` (D, G·H, H) — recurrent weights, same order;
* ``B`` (D, 2·G·H) — ``[Wb, Rb]``: a bias for the input side and one for the recurrent side.

Three differences from the seed's layout (``GATES`` of each cell), all handled here:

* gate order: LSTM ``iofc`` (c is the seed's candidate g) against (f, i, g, o); GRU ``zrh``
  (h is the seed's candidate n) against (z, r, n) — the same order;
* bias: the seed has one bias per gate, put in ``Wb`` with ``Rb = 0`` — except the GRU with
  reset="after", whose ``b_hn`` sits inside ``r ⊙ (W_hn h + b_hn)`` and goes to ``Rbh``;
* the GRU update convention: ONNX's ``z`` weighs ``h_{t-1}`` (``H_t = (1 - z) ⊙ h̃ + z ⊙ H_{t-1}``),
  the seed's weighs the candidate, so ``z_seed = 1 - z_onnx = σ(-a_onnx)``: the z rows of W and R
  and the z bias change sign.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

ONNX_OP = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
ONNX_GATES = {"rnn": ("h",), "lstm": ("i", "o", "f", "g"), "gru": ("z", "r", "n")}
NEGATED = {"gru": ("z",)}


class LevelWeights(NamedTuple):
    """One level's ONNX tensors: W (D, G·H, X), R (D, G·H, H), B (D, 2·G·H) or None."""

    W: torch.Tensor
    R: torch.Tensor
    B: torch.Tensor | None


def _direction(mode: str, gates: tuple[str, ...], w) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One direction's Weights -> (W (G·H, X), R (G·H, H), B (2·G·H) or None)."""
    H = w.hidden_size
    Wi, Wh, Rb = [], [], []
    Wb: list[torch.Tensor] = []
    for g in ONNX_GATES[mode]:
        w_x, w_h, b = w.gate(gates.index(g))
        sign = -1.0 if g in NEGATED.get(mode, ()) else 1.0
        Wi.append(sign * w_x)
        Wh.append(sign * w_h)
        if w.bias is not None:
            Wb.append(sign * b)
            hn = mode == "gru" and g == "n" and w.bias_hn is not None
            Rb.append(w.bias_hn if hn else torch.zeros(H, dtype=b.dtype, device=b.device))
    B = torch.cat(Wb + Rb) if w.bias is not None else None
    return torch.cat(Wi), torch.cat(Wh), B


@torch.no_grad()
def level_weights(layer, k: int) -> LevelWeights:
    """Level k of an rnnlab layer in ONNX's layout (detached copies)."""
    per_dir = [_direction(layer.mode, layer.cell_class.GATES, layer.weights(k, d)) for d in range(layer.num_directions)]
    W = torch.stack([p[0] for p in per_dir]).detach().clone()
    R = torch.stack([p[1] for p in per_dir]).detach().clone()
    B = None if per_dir[0][2] is None else torch.stack([p[2] for p in per_dir]).detach().clone()
    return LevelWeights(W, R, B)
