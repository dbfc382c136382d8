"""The GRU cell: update and reset gates, the hidden state doubling as memory."""

from __future__ import annotations

import torch

from .. import _checks
from .base import RecurrentCell, Weights, affine

RESETS = ("before", "after")
Z, R, N = range(3)  # gate order of the fused rows: (z, r, n), n = h̃


class GRUCell(RecurrentCell):
    r"""Gated recurrent unit, with the seed's update convention.

    ``reset="before"`` (default) is the seed's form (and Cho et al. 2014):

    .. math::
        z_t &= σ(W_z · [h_{t-1}, x_t] + b_z)             \quad\text{update gate}\\
        r_t &= σ(W_r · [h_{t-1}, x_t] + b_r)             \quad\text{reset gate}\\
        \tilde h_t &= \tanh(W_h · [r_t * h_{t-1}, x_t] + b_h) \quad\text{candidate } (n)\\
        h_t &= (1 - z_t) * h_{t-1} + z_t * \tilde h_t

    ``reset="after"`` is cuDNN's (and torch.nn.GRU's) form, with one more bias ``b_hn``:

    .. math::
        \tilde h_t = \tanh(W_{xn} x_t + b_n + r_t * (W_{hn} h_{t-1} + b_{hn}))

    Note the update convention: here ``z_t`` weighs the *new* candidate. torch, Keras, Flax and
    ONNX let ``z`` weigh ``h_{t-1}``; ``from_torch``/``to_torch`` map one onto the other.

    Parameters: ``weight_ih`` (3H, X), ``weight_hh`` (3H, H), ``bias`` (3H), rows stacked in gate
    order (z, r, n), and ``bias_hn`` (H) for reset="after": 3(H(X + H) + H) (+ H) in all.

    Shapes: ``x_t`` (B, X) or (X,); ``state`` h (B, H) or (H,), zeros when None. Returns
    ``h, state`` (``state`` is ``h``); with ``return_gates=True`` also ``{"z", "r", "n"}``.
    """

    GATES = ("z", "r", "n")
    STATE = ("h",)
    TRACES = ("z", "r", "n")
    GATE_BIAS = {"z": -1.0}

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, reset: str = "before", *, init: str = "default"):
        self.reset = _checks.choice("reset", reset, RESETS)
        super().__init__(input_size, hidden_size, bias, init=init)

    def options(self):
        return {"reset": self.reset}

    def has_bias_hn(self) -> bool:
        return self.reset == "after"

    @staticmethod
    def equations(x_t, state, w: Weights, reset: str = "before"):
        (h_prev,) = state
        z = torch.sigmoid(affine(x_t, h_prev, *w.gate(Z)))  # z_t = σ(W_z · [h_{t-1}, x_t] + b_z)
        r = torch.sigmoid(affine(x_t, h_prev, *w.gate(R)))  # r_t = σ(W_r · [h_{t-1}, x_t] + b_r)
        w_xn, w_hn, b_n = w.gate(N)
        if reset == "before":
            n = torch.tanh(affine(x_t, r * h_prev, w_xn, w_hn, b_n))  # h̃_t = tanh(W_h · [r_t * h_{t-1}, x_t] + b_h)
        else:
            hn = h_prev @ w_hn.T if w.bias_hn is None else h_prev @ w_hn.T + w.bias_hn
            xn = x_t @ w_xn.T if b_n is None else x_t @ w_xn.T + b_n
            n = torch.tanh(xn + r * hn)  # h̃_t = tanh(W_xn x_t + b_n + r_t * (W_hn h_{t-1} + b_hn))
        h = (1 - z) * h_prev + z * n  # h_t = (1 - z_t) * h_{t-1} + z_t * h̃_t
        return (h,), {"z": z, "r": r, "n": n}
