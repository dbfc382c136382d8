"""The LSTM cell: a cell state C_t guarded by forget, input and output gates."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .base import RecurrentCell, Weights, affine


class LSTMState(NamedTuple):
    """The LSTM's carried state: hidden state ``h`` and cell state ``c``, each (B, H) or (H,)."""

    h: torch.Tensor
    c: torch.Tensor


F, I, G, O = range(4)  # gate order of the fused rows: (f, i, g, o), g = C̃


class LSTMCell(RecurrentCell):
    r"""Long short-term memory cell, exactly as the seed writes it.

    .. math::
        f_t &= σ(W_f · [h_{t-1}, x_t] + b_f)            \quad\text{forget gate}\\
        i_t &= σ(W_i · [h_{t-1}, x_t] + b_i)            \quad\text{input gate}\\
        \tilde C_t &= \tanh(W_C · [h_{t-1}, x_t] + b_C)  \quad\text{candidate memory } (g)\\
        C_t &= f_t * C_{t-1} + i_t * \tilde C_t\\
        o_t &= σ(W_o · [h_{t-1}, x_t] + b_o)            \quad\text{output gate}\\
        h_t &= o_t * \tanh(C_t)

    Parameters: ``weight_ih`` (4H, X), ``weight_hh`` (4H, H), ``bias`` (4H), rows stacked in gate
    order (f, i, g, o): 4(H(X + H) + H) in all.

    Shapes: ``x_t`` (B, X) or (X,); ``state`` an ``LSTMState(h, c)`` of (B, H) or (H,) tensors,
    zeros when None. Returns ``h, LSTMState(h, c)``; with ``return_gates=True`` also the traces
    ``{"f", "i", "g", "o", "c"}``.
    """

    GATES = ("f", "i", "g", "o")
    STATE = ("h", "c")
    TRACES = ("f", "i", "g", "o", "c")
    GATE_BIAS = {"f": 1.0}

    @staticmethod
    def equations(x_t, state, w: Weights):
        h_prev, c_prev = state
        f = torch.sigmoid(affine(x_t, h_prev, *w.gate(F)))  # f_t = σ(W_f · [h_{t-1}, x_t] + b_f)
        i = torch.sigmoid(affine(x_t, h_prev, *w.gate(I)))  # i_t = σ(W_i · [h_{t-1}, x_t] + b_i)
        g = torch.tanh(affine(x_t, h_prev, *w.gate(G)))  # C̃_t = tanh(W_C · [h_{t-1}, x_t] + b_C)
        c = f * c_prev + i * g  # C_t = f_t * C_{t-1} + i_t * C̃_t
        o = torch.sigmoid(affine(x_t, h_prev, *w.gate(O)))  # o_t = σ(W_o · [h_{t-1}, x_t] + b_o)
        h = o * torch.tanh(c)  # h_t = o_t * tanh(C_t)
        return (h, c), {"f": f, "i": i, "g": g, "o": o, "c": c}

    def _pack_state(self, state):
        return LSTMState(*state)
