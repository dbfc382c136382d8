"""The LSTM cell: a cell state C_t guarded by forget, input and output gates."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from . import variants
from .base import RecurrentCell, Weights
from .spec import CellSpec, Memory, OnnxLayout, TorchLayout
from .variants import peep, plus


class LSTMState(NamedTuple):
    """The LSTM's carried state: hidden state ``h`` and cell state ``c``, each (B, H) or (H,)."""

    h: torch.Tensor
    c: torch.Tensor


GATES = ("f", "i", "g", "o")
COUPLED_GATES = ("f", "g", "o")  # gate blocks of the coupled (CIFG) cell: no i rows, i_t = 1 - f_t
LN_GATES = ("ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias")
LN_CELL = ("ln_c_weight", "ln_c_bias")


def gate_order(options) -> tuple[str, ...]:
    return COUPLED_GATES if options.get("coupled") else GATES


SPEC = CellSpec(
    name="lstm",
    gates=GATES,
    state=("h", "c"),
    traces=("f", "i", "g", "o", "c"),
    gate_bias={"f": 1.0},
    kernel=lambda options: "lstm",
    kernels={"lstm": {}},
    # the gates (4H, even when coupled), h and C, the output; layer norm: x W_ihᵀ, the normalised GEMM
    # outputs and their gradients (3G) and LN(C_t)'s two; zoneout: the keep masks of h and C, and C_t before it
    memory=Memory(per_step=4 + 2 + 1, layer_norm=3 * 4 + 2, zoneout=2 + 1),
    structural=("layer_norm", "peepholes", "coupled"),
    native_variants=("layer_norm", "peepholes", "coupled", "recurrent_dropout", "zoneout"),
    gate_order=gate_order,
    added_parameters=lambda hidden_size, options: variants.extra_shapes(gate_order(options), hidden_size, options,
                                                                         cell_state=True),
    torch=TorchLayout(gates=("i", "f", "g", "o"), layer=nn.LSTM, cell=nn.LSTMCell, op=lambda options: "lstm"),
    # coupled: ONNX's input_forget derives f = 1 - i, so its i rows carry the seed's f rows negated (σ(-a_f) = 1 - f_t)
    onnx=OnnxLayout(op="LSTM", gates=("i", "o", "f", "g"), peepholes=("i", "o", "f"), complement={"i": "f"},
                    attributes=lambda options, D: {"input_forget": 1} if options.get("coupled") else {}),
    stream=lambda options: "lstm_cell",
)


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

    Variants (keyword-only, all off by default; see :mod:`rnnlab.cells.variants`):

    * ``peepholes=True`` (Gers & Schmidhuber 2000): the gates also see the cell state,
      ``f_t = σ(W_f · [h_{t-1}, x_t] + p_f * C_{t-1} + b_f)``, ``i_t = σ(W_i · [h_{t-1}, x_t] + p_i * C_{t-1} + b_i)``,
      ``o_t = σ(W_o · [h_{t-1}, x_t] + p_o * C_t + b_o)``; adds ``weight_peep`` (3H), rows (p_f, p_i, p_o).
    * ``coupled=True`` (CIFG, Greff et al. 2017): ``i_t = 1 - f_t``. The i rows are gone: the fused
      rows are (f, g, o), G = 3 — ``weight_ih`` (3H, X), ``weight_hh`` (3H, H), ``bias`` (3H) — and
      with peepholes ``weight_peep`` (2H) is (p_f, p_o): 3(H(X + H) + H) (+ 2H).
    * ``layer_norm=True`` (Ba, Kiros & Hinton 2016): every W·[h, x] above becomes
      ``LN(W_x x_t) + LN(W_h h_{t-1})`` (each LN over all G·H pre-activations together, peephole
      terms and b added after), and ``h_t = o_t * tanh(LN(C_t))``; adds ``ln_ih_weight``/``ln_ih_bias``
      and ``ln_hh_weight``/``ln_hh_bias`` (G·H each) and ``ln_c_weight``/``ln_c_bias`` (H each).
    * ``recurrent_dropout=p``: the gates see ``h_{t-1} * m`` (m from ``recurrent_mask``, one per
      sequence, pass it as ``h_mask``); ``zoneout=p``: h and C each keep their previous value per
      unit with probability p. Training only; at evaluation both are the plain update.

    Shapes: ``x_t`` (B, X) or (X,); ``state`` an ``LSTMState(h, c)`` of (B, H) or (H,) tensors,
    zeros when None. Returns ``h, LSTMState(h, c)``; with ``return_gates=True`` also the traces
    ``{"f", "i", "g", "o", "c"}``.
    """

    SPEC = SPEC

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, init: str = "default",
                 layer_norm: bool = False, peepholes: bool = False, coupled: bool = False,
                 recurrent_dropout: float = 0.0, zoneout: float = 0.0):
        self._variants = variants.flags(layer_norm=layer_norm, peepholes=peepholes, coupled=coupled)
        super().__init__(input_size, hidden_size, bias, init=init, recurrent_dropout=recurrent_dropout, zoneout=zoneout)

    def options(self):
        return dict(self._variants)

    @staticmethod
    def equations(x_t, state, w: Weights, *, layer_norm: bool = False, peepholes: bool = False, coupled: bool = False,
                  extra: dict | None = None, h_mask: torch.Tensor | None = None):
        h_prev, c_prev = state
        gates, H = (COUPLED_GATES if coupled else GATES), w.hidden_size
        blocks = tuple(range(len(gates)))
        ln = variants.need(extra, LN_GATES, "layer_norm", "LSTMCell") if layer_norm else None
        ln_ih, ln_hh = (None, None) if ln is None else (ln[:2], ln[2:])  # (gain, bias) of LN(W_x x_t), of LN(W_h h_{t-1})
        p = variants.peephole_rows(extra, gates, "LSTMCell") if peepholes else {}
        wx = variants.projections(x_t, w.weight_ih, H, gates, blocks, ln_ih)  # W_x· x_t per gate (LN over all G·H)
        wh = variants.projections(variants.recurrent_input(h_prev, h_mask), w.weight_hh, H, gates, blocks, ln_hh)  # W_h· h_{t-1}
        b = variants.biases(w, gates)
        f = torch.sigmoid(plus(peep(wx["f"] + wh["f"], p, "f", c_prev), b["f"]))  # f_t = σ(W_f · [h_{t-1}, x_t] + p_f * C_{t-1} + b_f)
        i = 1 - f if coupled else torch.sigmoid(plus(peep(wx["i"] + wh["i"], p, "i", c_prev), b["i"]))  # i_t = σ(W_i · [h_{t-1}, x_t] + p_i * C_{t-1} + b_i), or 1 - f_t
        g = torch.tanh(plus(wx["g"] + wh["g"], b["g"]))  # C̃_t = tanh(W_C · [h_{t-1}, x_t] + b_C)
        c = f * c_prev + i * g  # C_t = f_t * C_{t-1} + i_t * C̃_t
        o = torch.sigmoid(plus(peep(wx["o"] + wh["o"], p, "o", c), b["o"]))  # o_t = σ(W_o · [h_{t-1}, x_t] + p_o * C_t + b_o)
        c_out = variants.layer_norm(c, *variants.need(extra, LN_CELL, "layer_norm", "LSTMCell")) if layer_norm else c
        h = o * torch.tanh(c_out)  # h_t = o_t * tanh(C_t), or o_t * tanh(LN(C_t))
        if w.weight_hr is not None:  # a layer's proj_size: h_t = W_hr (o_t * tanh(C_t))
            h = h @ w.weight_hr.T
        return (h, c), {"f": f, "i": i, "g": g, "o": o, "c": c}

    def _pack_state(self, state):
        return LSTMState(*state)
