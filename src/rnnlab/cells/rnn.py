"""The vanilla RNN cell: a hidden state fed back through one affine map and a nonlinearity."""

from __future__ import annotations

import torch
from torch import nn

from .. import _checks
from .base import RecurrentCell
from .spec import CellSpec, Memory, OnnxLayout, TorchLayout
from .weights import Weights, affine

NONLINEARITIES = ("tanh", "relu")
ONNX_ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu"}

SPEC = CellSpec(
    name="rnn",
    gates=("h",),
    state=("h",),
    traces=("h",),
    kernel=lambda options: "rnn_" + options.get("nonlinearity", "tanh"),
    kernels={"rnn_tanh": {"nonlinearity": "tanh"}, "rnn_relu": {"nonlinearity": "relu"}},
    memory=Memory(per_step=1 + 1 + 1),  # the activated h (the "gate"), the state, the output
    torch=TorchLayout(gates=("h",), layer=nn.RNN, cell=nn.RNNCell,
                      op=lambda options: "rnn_" + options.get("nonlinearity", "tanh"),
                      options=lambda module: {"nonlinearity": module.nonlinearity},
                      arguments=lambda options: {"nonlinearity": options["nonlinearity"]}),
    onnx=OnnxLayout(op="RNN", gates=("h",),
                    attributes=lambda options, D: {"activations": [ONNX_ACTIVATIONS[options["nonlinearity"]]] * D}),
    stream=lambda options: "rnn_" + options["nonlinearity"] + "_cell",
)


class RNNCell(RecurrentCell):
    r"""Elman RNN cell, the seed's "simple recurrence" (no gates, no cell state).

    .. math::
        h_t = \phi(W_h · [h_{t-1}, x_t] + b_h),\qquad \phi = \tanh \text{ or } \mathrm{relu}

    Parameters: ``weight_ih`` (H, X), ``weight_hh`` (H, H), ``bias`` (H): H(X + H) + H in all.

    Shapes: ``x_t`` (B, X) or (X,); ``state`` h (B, H) or (H,), zeros when None.
    Returns ``h, state`` (here ``state`` is ``h``); with ``return_gates=True`` also ``{"h": h}``.
    """

    SPEC = SPEC

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh", *, init: str = "default"):
        self.nonlinearity = _checks.choice("nonlinearity", nonlinearity, NONLINEARITIES)
        super().__init__(input_size, hidden_size, bias, init=init)

    def options(self):
        return {"nonlinearity": self.nonlinearity}

    @staticmethod
    def equations(x_t, state, w: Weights, nonlinearity: str = "tanh"):
        (h_prev,) = state
        phi = torch.tanh if nonlinearity == "tanh" else torch.relu
        h = phi(affine(x_t, h_prev, *w.gate(0)))  # h_t = φ(W_h · [h_{t-1}, x_t] + b_h)
        return (h,), {"h": h}
