"""rnnlab.LSTM: stacked, bidirectional LSTM layers."""

from __future__ import annotations

from ..cells.lstm import LSTMCell
from .base import RecurrentLayer


class LSTM(RecurrentLayer):
    r"""Multi-layer LSTM; every level runs :class:`rnnlab.LSTMCell` (the seed's equations:
    forget, input and output gates around the cell state ``C_t``).

    Args: ``input_size`` X, ``hidden_size`` H, ``num_layers`` L, ``bias``, ``batch_first``,
    ``dropout`` (on each level's output but the last, training only), ``bidirectional`` (D = 2);
    keyword-only ``init`` ("default": orthogonal recurrent weights and forget bias 1; "torch")
    and ``engine`` (see :mod:`rnnlab.engine`).

    Shapes: ``x`` (T, B, X) ((B, T, X) with batch_first; (T, X) unbatched; or a PackedSequence),
    ``hx = (h_0, c_0)`` each (D·L, B, H); returns ``out`` (T, B, D·H) and ``(h_n, c_n)``, exactly
    as torch.nn.LSTM. Parameters per level k and direction: ``weight_ih_l{k}`` (4H, X_k),
    ``weight_hh_l{k}`` (4H, H), ``bias_l{k}`` (4H), rows in gate order (f, i, g, o), suffix
    ``_reverse`` for the backward direction.
    """

    cell_class = LSTMCell

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, *, init="default", engine="auto"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         init=init, engine=engine)
