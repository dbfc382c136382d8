"""Initialisation of recurrent weights.

``"default"`` is chosen for trainability over long sequences:

* recurrent weights ``W_hh``: one orthogonal ``(H, H)`` block per gate (Saxe et al. 2014;
  an orthogonal map neither shrinks nor grows ``h`` at initialisation, which delays the
  vanishing/exploding gradients the seed describes);
* input weights ``W_ih``: Glorot/Xavier uniform per gate block (Glorot & Bengio 2010);
* the LSTM's projection ``W_hr`` (P, H), when ``proj_size`` is set: orthogonal rows (a projection
  onto P directions that keeps their length, for the same reason as ``W_hh``);
* biases zero, except the gate that decides how much of the past is kept: the LSTM forget
  gate ``b_f = 1`` (Gers et al. 2000; Jozefowicz et al. 2015), and the seed's GRU update gate
  ``b_z = -1``, so that ``1 - z_t``, the weight of ``h_{t-1}``, starts at ``σ(1) ≈ 0.73`` — the
  same idea under the seed's update convention.

These are also Keras' defaults for LSTM (``orthogonal`` recurrent, ``glorot_uniform`` kernel,
``unit_forget_bias=True``).

``"torch"`` draws every weight and bias from ``U(-1/√H, 1/√H)``, as ``torch.nn`` does.
"""

from __future__ import annotations

import math

import torch

SCHEMES = ("default", "torch")


@torch.no_grad()
def init_weights(
    gates: tuple[str, ...],
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor | None,
    bias: torch.Tensor | None,
    bias_hn: torch.Tensor | None,
    scheme: str,
    gate_bias: dict[str, float],
) -> None:
    hidden = weight_ih.shape[0] // len(gates)
    if scheme == "torch":
        bound = 1.0 / math.sqrt(hidden)
        for p in (weight_ih, weight_hh, bias, bias_hn):
            if p is not None:
                p.uniform_(-bound, bound)
        return
    for k, name in enumerate(gates):
        rows = slice(k * hidden, (k + 1) * hidden)
        torch.nn.init.xavier_uniform_(weight_ih[rows])
        if weight_hh is not None:
            torch.nn.init.orthogonal_(weight_hh[rows])
        if bias is not None:
            bias[rows].fill_(gate_bias.get(name, 0.0))
    if bias_hn is not None:
        bias_hn.zero_()


@torch.no_grad()
def init_projection(weight_hr: torch.Tensor, scheme: str, hidden_size: int) -> None:
    """The LSTM's ``W_hr`` (P, H): orthogonal rows, or ``U(-1/√H, 1/√H)`` under ``"torch"`` (as torch.nn.LSTM)."""
    if scheme == "torch":
        bound = 1.0 / math.sqrt(hidden_size)
        weight_hr.uniform_(-bound, bound)
    else:
        torch.nn.init.orthogonal_(weight_hr)
