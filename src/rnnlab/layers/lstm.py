"""rnnlab.LSTM: stacked, bidirectional LSTM layers."""

from __future__ import annotations

from ..cells import variants
from ..cells.lstm import LSTMCell
from .base import RecurrentLayer


class LSTM(RecurrentLayer):
    r"""Multi-layer LSTM; every level runs :class:`rnnlab.LSTMCell` (the seed's equations:
    forget, input and output gates around the cell state ``C_t``).

    Args: ``input_size`` X, ``hidden_size`` H, ``num_layers`` L, ``bias``, ``batch_first``,
    ``dropout`` (on each level's output but the last, training only), ``bidirectional`` (D = 2);
    keyword-only ``init`` ("default": orthogonal recurrent weights and forget bias 1; "torch"),
    ``engine`` (see :mod:`rnnlab.engine`) and ``learn_initial_state`` (h_0 and C_0 become parameters
    ``initial_h``, ``initial_c`` (D·L, H), zeros at first, used when ``hx`` is None).

    Shapes: ``x`` (T, B, X) ((B, T, X) with batch_first; (T, X) unbatched; or a PackedSequence),
    ``hx = (h_0, c_0)`` each (D·L, B, H); returns ``out`` (T, B, D·H) and ``(h_n, c_n)``, exactly
    as torch.nn.LSTM. Parameters per level k and direction: ``weight_ih_l{k}`` (4H, X_k),
    ``weight_hh_l{k}`` (4H, H), ``bias_l{k}`` (4H), rows in gate order (f, i, g, o), suffix
    ``_reverse`` for the backward direction.

    ``proj_size`` P (0 < P < H; torch.nn.LSTM's argument): h_t = W_hr (o_t * tanh(C_t)) is P wide, a
    parameter ``weight_hr_l{k}`` (P, H) per level and direction; ``weight_hh_l{k}`` is then (4H, P), the
    levels above the first see D·P inputs, ``out`` is (T, B, D·P) and ``h_0``/``h_n`` (D·L, B, P), while C
    stays (D·L, B, H). Not combined with the variants below.

    Variants, keyword-only and off by default (the cell's equations: :class:`rnnlab.LSTMCell`):
    ``layer_norm`` adds ``ln_ih_weight_l{k}``/``ln_ih_bias_l{k}``, ``ln_hh_weight_l{k}``/``ln_hh_bias_l{k}``
    (G·H) and ``ln_c_weight_l{k}``/``ln_c_bias_l{k}`` (H); ``peepholes`` adds ``weight_peep_l{k}`` (3H,
    rows p_f, p_i, p_o); ``coupled`` (i_t = 1 − f_t) drops the i rows, G = 3 in order (f, g, o), and
    ``weight_peep_l{k}`` is then (2H) (p_f, p_o); ``recurrent_dropout`` (one mask per sequence, level
    and direction on h_{t-1} entering the gates) and ``zoneout`` (h and C) act in training only. The
    native engine computes every variant ("auto" and "native" run it there; "torch" refuses variants).
    """

    cell_class = LSTMCell
    AUTOCAST_OUTPUT = "autocast"  # torch.nn.LSTM under CPU autocast returns its dtype

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, *, init="default", engine="auto", learn_initial_state=False, layer_norm=False,
                 peepholes=False, coupled=False, recurrent_dropout=0.0, zoneout=0.0):
        structural = variants.flags(layer_norm=layer_norm, peepholes=peepholes, coupled=coupled)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         init=init, engine=engine, learn_initial_state=learn_initial_state, proj_size=proj_size,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout, **structural)
