"""rnnlab.RNN: stacked, bidirectional vanilla RNN layers."""

from __future__ import annotations

from .. import _checks
from ..cells.rnn import NONLINEARITIES, RNNCell
from .base import RecurrentLayer


class RNN(RecurrentLayer):
    r"""Multi-layer Elman RNN; every level runs :class:`rnnlab.RNNCell`:
    ``h_t = φ(W_h · [h_{t-1}, x_t] + b_h)``, φ = tanh or relu.

    Args: ``input_size`` X, ``hidden_size`` H, ``num_layers`` L, ``bias``, ``batch_first``,
    ``dropout`` (on each level's output but the last, training only), ``bidirectional`` (D = 2),
    ``nonlinearity`` ("tanh" or "relu"); keyword-only ``init`` ("default" or "torch") and
    ``engine`` ("auto" or "reference", see :mod:`rnnlab.engine`) and ``learn_initial_state`` (h_0 becomes
    the parameter ``initial_h`` (D·L, H), zeros at first, used when ``hx`` is None).

    Shapes: ``x`` (T, B, X) ((B, T, X) with batch_first; (T, X) unbatched; or a PackedSequence),
    ``hx`` (D·L, B, H); returns ``out`` (T, B, D·H) and ``h_n`` (D·L, B, H), exactly as torch.nn.RNN.
    Parameters per level k and direction: ``weight_ih_l{k}`` (H, X_k), ``weight_hh_l{k}`` (H, H),
    ``bias_l{k}`` (H), suffix ``_reverse`` for the backward direction.
    """

    cell_class = RNNCell
    AUTOCAST_OUTPUT = "autocast"  # torch.nn.RNN under CPU autocast returns its dtype

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, nonlinearity="tanh", *, init="default", engine="auto",
                 learn_initial_state=False):
        nonlinearity = _checks.choice("nonlinearity", nonlinearity, NONLINEARITIES)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         init=init, engine=engine, learn_initial_state=learn_initial_state,
                         nonlinearity=nonlinearity)

    @property
    def nonlinearity(self) -> str:
        return self.options["nonlinearity"]
