"""rnnlab.GRU: stacked, bidirectional GRU layers, the seed's form or cuDNN's."""

from __future__ import annotations

from .. import _checks
from ..cells import variants
from ..cells.gru import RESETS, GRUCell
from .base import RecurrentLayer


class GRU(RecurrentLayer):
    r"""Multi-layer GRU; every level runs :class:`rnnlab.GRUCell` with the seed's update convention
    ``h_t = (1 - z_t) * h_{t-1} + z_t * h̃_t``.

    ``reset="before"`` (default) is the seed's candidate ``h̃_t = tanh(W_h · [r_t * h_{t-1}, x_t] + b_h)``;
    ``reset="after"`` is cuDNN's and torch.nn.GRU's ``h̃_t = tanh(W_xn x_t + b_n + r_t * (W_hn h_{t-1} + b_hn))``
    and adds ``bias_hn_l{k}`` (H).

    Args: ``input_size`` X, ``hidden_size`` H, ``num_layers`` L, ``bias``, ``batch_first``,
    ``dropout``, ``bidirectional``, ``reset``; keyword-only ``init``, ``engine`` and ``learn_initial_state``
    (h_0 becomes the parameter ``initial_h`` (D·L, H), zeros at first, used when ``hx`` is None).

    Shapes as torch.nn.GRU: ``x`` (T, B, X), ``hx`` (D·L, B, H); returns ``out`` (T, B, D·H),
    ``h_n`` (D·L, B, H). Parameters per level k and direction: ``weight_ih_l{k}`` (3H, X_k),
    ``weight_hh_l{k}`` (3H, H), ``bias_l{k}`` (3H), rows in gate order (z, r, n).

    Variants, keyword-only and off by default (the cell's equations: :class:`rnnlab.GRUCell`):
    ``layer_norm`` adds ``ln_ih_weight_l{k}``/``ln_ih_bias_l{k}`` and ``ln_hh_weight_l{k}``/``ln_hh_bias_l{k}``
    (3H each); ``recurrent_dropout`` (one mask per sequence, level and direction on h_{t-1} entering
    the gates) and ``zoneout`` act in training only. The native engine computes every variant ("auto"
    and "native" run it there; "torch" refuses variants).
    """

    cell_class = GRUCell
    AUTOCAST_OUTPUT = "input"  # torch.nn.GRU under CPU autocast returns x's own dtype

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, reset="before", *, init="default", engine="auto", learn_initial_state=False,
                 layer_norm=False,
                 recurrent_dropout=0.0, zoneout=0.0):
        reset = _checks.choice("reset", reset, RESETS)
        structural = variants.flags(layer_norm=layer_norm)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         init=init, engine=engine, learn_initial_state=learn_initial_state,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout,
                         reset=reset, **structural)

    @property
    def reset(self) -> str:
        return self.options["reset"]
