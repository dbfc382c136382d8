"""The GRU cell: update and reset gates, the hidden state doubling as memory."""

from __future__ import annotations

import torch
from torch import nn

from .. import _checks
from . import variants
from .base import RecurrentCell, Weights
from .spec import CellSpec, Memory, OnnxLayout, TorchLayout
from .variants import plus

RESETS = ("before", "after")
GATES = ("z", "r", "n")
Z, R, N = range(3)  # gate order of the fused rows: (z, r, n), n = h̃
LN_GATES = ("ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias")


def _after(options) -> bool:
    return options.get("reset", "before") == "after"


SPEC = CellSpec(
    name="gru",
    gates=GATES,
    state=("h",),
    traces=("z", "r", "n"),
    gate_bias={"z": -1.0},
    kernel=lambda options: "gru_" + options.get("reset", "before"),
    kernels={"gru_before": {"reset": "before"}, "gru_after": {"reset": "after"}},
    # the gates, h, the output; layer norm: x W_ihᵀ, the normalised GEMM outputs and their gradients (3G);
    # zoneout: h's keep masks
    memory=Memory(per_step=3 + 1 + 1, layer_norm=3 * 3, zoneout=1),
    structural=("layer_norm",),
    native_variants=("layer_norm", "recurrent_dropout", "zoneout"),
    added_parameters=lambda hidden_size, options: variants.extra_shapes(GATES, hidden_size, options, cell_state=False),
    bias_hn=_after,
    # torch's and ONNX's z weighs h_{t-1}, the seed's the candidate: z_seed = 1 - z_torch = σ(-a), the z rows negated
    torch=TorchLayout(gates=("r", "z", "n"), layer=nn.GRU, cell=nn.GRUCell, negated=("z",), separate_bias="n",
                      op=lambda options: "gru" if _after(options) else None,
                      options=lambda module: {"reset": "after"},
                      no_kernel="GRU reset='before' (the seed's candidate tanh(W_h·[r*h, x] + b_h) has no torch kernel)",
                      no_module="torch.nn.GRU computes reset='after' (r applied to W_hn h + b_hn); this GRU has "
                                "reset='before' (the seed's form), which torch.nn has no module for"),
    # reset="before": h̃ = tanh(W x + R (r ⊙ h) + ...) is ONNX's linear_before_reset = 0
    onnx=OnnxLayout(op="GRU", gates=("z", "r", "n"), negated=("z",), separate_bias="n",
                    attributes=lambda options, D: {"linear_before_reset": int(_after(options))}),
    # reset="before" has no torch kernel: the streamer's own fused-GEMM step
    stream=lambda options: "gru_cell" if _after(options) else "gru_before",
)


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

    Variants (keyword-only, all off by default; see :mod:`rnnlab.cells.variants`):

    * ``layer_norm=True`` (Ba, Kiros & Hinton 2016): the input parts of all three gates are
      normalised together, ``[a_z, a_r, a_n] = LN(W_x x_t)`` over 3H units. The recurrent parts:
      with reset="after", ``[u_z, u_r, u_n] = LN(W_h h_{t-1})`` over 3H, and
      ``h̃_t = tanh(a_n + b_n + r_t * (u_n + b_hn))``; with reset="before", ``[u_z, u_r] = LN(W_{hz,hr} h_{t-1})``
      over 2H and the candidate's recurrent part, which depends on r_t, is normalised on its own
      over H, ``h̃_t = tanh(a_n + LN(W_hn (r_t * h_{t-1})) + b_h)``; then ``z_t = σ(a_z + u_z + b_z)``,
      ``r_t = σ(a_r + u_r + b_r)``. Adds ``ln_ih_weight``/``ln_ih_bias`` and ``ln_hh_weight``/``ln_hh_bias``
      (3H each; for reset="before" rows 2H: of ln_hh are the candidate's own LN).
    * ``recurrent_dropout=p``: every gate, the candidate included, sees ``h_{t-1} * m`` (m from
      ``recurrent_mask``, one per sequence, passed as ``h_mask``) while the update
      ``(1 - z_t) * h_{t-1}`` keeps the undropped h_{t-1}; ``zoneout=p``: each unit of h keeps its
      previous value with probability p. Training only; at evaluation both are the plain update.

    Shapes: ``x_t`` (B, X) or (X,); ``state`` h (B, H) or (H,), zeros when None. Returns
    ``h, state`` (``state`` is ``h``); with ``return_gates=True`` also ``{"z", "r", "n"}``.
    """

    SPEC = SPEC

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, reset: str = "before", *, init: str = "default",
                 layer_norm: bool = False, recurrent_dropout: float = 0.0, zoneout: float = 0.0):
        self.reset = _checks.choice("reset", reset, RESETS)
        self._variants = variants.flags(layer_norm=layer_norm)
        super().__init__(input_size, hidden_size, bias, init=init, recurrent_dropout=recurrent_dropout, zoneout=zoneout)

    def options(self):
        return {"reset": self.reset, **self._variants}

    @staticmethod
    def equations(x_t, state, w: Weights, reset: str = "before", *, layer_norm: bool = False,
                  extra: dict | None = None, h_mask: torch.Tensor | None = None):
        (h_prev,) = state
        H = w.hidden_size
        ln = variants.need(extra, LN_GATES, "layer_norm", "GRUCell") if layer_norm else None
        ln_ih, ln_hh = (None, None) if ln is None else (ln[:2], ln[2:])  # (gain, bias) of LN(W_x x_t), of LN(W_h ·)
        h_in = variants.recurrent_input(h_prev, h_mask)  # h_{t-1}, times the sequence's dropout mask
        wx = variants.projections(x_t, w.weight_ih, H, GATES, (Z, R, N), ln_ih)  # W_x· x_t per gate (LN over 3H)
        recurrent = GATES[:2] if reset == "before" else GATES  # the candidate's W_hn sees r_t * h_{t-1} when "before"
        wh = variants.projections(h_in, w.weight_hh, H, recurrent, tuple(range(len(recurrent))), ln_hh)  # W_h· h_{t-1}
        b = variants.biases(w, GATES)
        z = torch.sigmoid(plus(wx["z"] + wh["z"], b["z"]))  # z_t = σ(W_z · [h_{t-1}, x_t] + b_z)
        r = torch.sigmoid(plus(wx["r"] + wh["r"], b["r"]))  # r_t = σ(W_r · [h_{t-1}, x_t] + b_r)
        if reset == "before":
            wh_n = variants.projections(r * h_in, w.weight_hh, H, ("n",), (N,), ln_hh)["n"]  # W_hn (r_t * h_{t-1}), LN over H
            n = torch.tanh(plus(wx["n"] + wh_n, b["n"]))  # h̃_t = tanh(W_h · [r_t * h_{t-1}, x_t] + b_h)
        else:
            n = torch.tanh(plus(wx["n"], b["n"]) + r * plus(wh["n"], w.bias_hn))  # h̃_t = tanh(W_xn x_t + b_n + r_t * (W_hn h_{t-1} + b_hn))
        h = (1 - z) * h_prev + z * n  # h_t = (1 - z_t) * h_{t-1} + z_t * h̃_t
        return (h,), {"z": z, "r": r, "n": n}
