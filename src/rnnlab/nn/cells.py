"""``rnnlab.nn.RNNCell``, ``LSTMCell``, ``GRUCell``: torch.nn's cells, with rnnlab's engine underneath.

Each subclasses its torch.nn namesake and keeps its constructor, parameters (``weight_ih`` (G·H, X)
in torch's gate order, ``weight_hh``, ``bias_ih``, ``bias_hh``), initialisation and ``state_dict``;
``forward(input, hx=None)`` returns h (RNN, GRU) or ``(h, c)`` (LSTM), so a sequence runs in torch's
idiom ``h, c = cell(x_t, (h, c))``. The step is one time step of rnnlab's engine on the weights
converted to the seed's layout (:mod:`rnnlab.nn.stack`). ``engine`` as on ``rnnlab.nn.LSTM``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..cells.gru import GRUCell as _GRU
from ..cells.lstm import LSTMCell as _LSTM
from ..cells.rnn import RNNCell as _RNN
from .stack import TorchStack, same_kind, select


class _Cell:
    """torch.nn.RNNCellBase's forward with one step of rnnlab's engine in place of ``torch._VF``'s cell."""

    _cell: type
    engine = "auto"

    def forward(self, input, hx=None):
        who, paired = type(self).__name__, len(self._cell.STATE) == 2
        if input.dim() not in (1, 2):
            raise ValueError(f"{who}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        parts = () if hx is None else tuple(hx) if paired else (hx,)
        for i, s in enumerate(parts):
            if s.dim() not in (1, 2):
                raise ValueError(f"{who}: Expected hx[{i}] to be 1D or 2D, got {s.dim()}D instead")
        is_batched = input.dim() == 2
        x = input if is_batched else input.unsqueeze(0)  # (B, X)
        if hx is None:
            zeros = torch.zeros(x.size(0), self.hidden_size, dtype=x.dtype, device=x.device)
            states = (zeros,) * len(self._cell.STATE)
        else:
            states = parts if is_batched else tuple(s.unsqueeze(0) for s in parts)
        self._check(x, states)
        stack = TorchStack(self._cell, self._cell.SPEC.torch.options(self),
                           [[(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)]], self.hidden_size,
                           dropout=0.0, training=self.training, engine=self.engine)
        engine = select(stack, x.unsqueeze(0))
        if engine is None:
            return super().forward(input, hx)
        _, finals, _ = engine.run(stack, x.unsqueeze(0), tuple(s.unsqueeze(0) for s in states), None, False)
        new = tuple(s[0] if is_batched else s[0, 0] for s in finals)  # each (B, H), or (H) unbatched
        return new if paired else new[0]

    def _check(self, x: torch.Tensor, states: tuple) -> None:
        """torch's cell checks (its C++ ``check_rnn_cell_forward_*``), with its messages and RuntimeError."""
        if x.size(1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {x.size(1)} expected {self.input_size}")
        for i, s in enumerate(states):
            if s.size(0) != x.size(0):
                raise RuntimeError(f"Input batch size {x.size(0)} doesn't match hidden{i} batch size {s.size(0)}")
            if s.dim() != 2 or s.size(1) != self.hidden_size:
                raise RuntimeError(f"hidden{i} has inconsistent hidden_size: got {s.size(1)}, expected {self.hidden_size}")
        if x.dtype != self.weight_ih.dtype or x.device != self.weight_ih.device:
            raise RuntimeError(f"input: expected the weights' dtype and device ({self.weight_ih.dtype}, "
                               f"{self.weight_ih.device}), got ({x.dtype}, {x.device})")
        same_kind(x, states)


class RNNCell(_Cell, nn.RNNCell):
    r"""torch.nn.RNNCell (``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)``, or relu) run by rnnlab's engine;
    ``forward(input, hx=None) -> h'``, input (N, H_in) or (H_in), hx (N, H) or (H)."""

    _cell = _RNN


class LSTMCell(_Cell, nn.LSTMCell):
    r"""torch.nn.LSTMCell run by rnnlab's engine: ``weight_ih`` (4H, X) with gate rows (i, f, g, o);
    ``forward(input, hx=None) -> (h', c')``, hx = (h, c) each (N, H) or (H)."""

    _cell = _LSTM


class GRUCell(_Cell, nn.GRUCell):
    r"""torch.nn.GRUCell (cuDNN's form, gate rows (r, z, n)) run by rnnlab's engine;
    ``forward(input, hx=None) -> h'``."""

    _cell = _GRU
