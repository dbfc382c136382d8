"""rnnlab's native operator in torch.onnx's exporter (``torch.onnx.export(..., dynamo=True)``, torch's default).

A model with rnnlab layers traces, under torch.export, to one ``rnnlab::recurrent_level`` node per level
(``rnnlab.engine.ops``). ``recurrent_level_onnx`` translates that node into ONNX's own ``RNN``, ``LSTM`` or
``GRU`` operator — the weights reordered into ONNX's layout as graph operations (which the exporter's
optimiser folds into initializers), ``sequence_lens`` from the lengths mask — so that runtimes use their
fused kernels. The mapping is the cell's ``SPEC.onnx`` (``onnx_layout`` explains it); importing
``rnnlab.export`` registers the translation with torch's exporter, so a plain ``torch.onnx.export`` of a
model holding rnnlab layers needs nothing more (``TRANSLATIONS`` may also be passed as its
``custom_translation_table``).

The exported graph is for inference. The operator's other outputs (every step's gates, the
C_t of every step, the backward's reserve) have no ONNX counterpart: gate traces are refused, and the
level's state over time carries h_t at every step and its final state — all a layer reads from it when
it does not trace. Layer norm has no ONNX counterpart and is refused; recurrent dropout and zoneout,
which act only in training, are refused too (export the model in eval mode).
"""

from __future__ import annotations

import onnx
import torch
from onnxscript import opset18 as op

from ..cells.variants import PEEPHOLE_GATES
from ..engine.ops import STORED_GATES, cell_of, reserve_width
from .onnx_layout import PROJECTION_REFUSED, _source


def _ints(*values):
    return op.Constant(value_ints=list(values))


def _rows(t, block: int, H: int, axis: int):
    """Rows block·H … (block+1)·H along ``axis`` of a (D, G·H, …) weight or (D, G·H) bias."""
    return op.Slice(t, _ints(block * H), _ints((block + 1) * H), _ints(axis))


def _zeros_like_rows(t, H: int, axis: int):
    return op.Mul(_rows(t, 0, H, axis), op.CastLike(op.Constant(value_float=0.0), t))


def _onnx_order(t, layout, gates, H: int, axis: int):
    """Gate blocks along ``axis`` in the seed's order -> ONNX's order, signs and zero rows (``onnx_layout``)."""
    parts = []
    for g in layout.gates:
        sign, block = _source(layout, gates, g)
        if block is None:
            parts.append(_zeros_like_rows(t, H, axis))
        else:
            r = _rows(t, block, H, axis)
            parts.append(op.Neg(r) if sign < 0 else r)
    return op.Concat(*parts, axis=axis)


def _stack(values):
    """Per-direction tensors -> one (D, …) tensor."""
    ups = [op.Unsqueeze(v, _ints(0)) for v in values]
    return ups[0] if len(ups) == 1 else op.Concat(*ups, axis=0)


def recurrent_level_onnx(x, w_ih, w_hh, h0, c0, b, b_hn, mask, peep, h_mask, ln_ih_w, ln_ih_b, ln_hh_w, ln_hh_b,
                         ln_c_w, ln_c_b, zone, w_hr=None, cell: str = "", coupled: bool = False, keep: bool = True,
                         bf16: bool = False):
    """``rnnlab::recurrent_level`` as one ONNX RNN / LSTM / GRU node (see the module's docstring)."""
    if w_hr is not None:
        raise ValueError(PROJECTION_REFUSED.format(who="LSTM", P=w_hr.shape[1]))
    if ln_hh_w is not None or ln_ih_w is not None:
        raise ValueError("model: a layer with layer_norm=True has no ONNX operator (ONNX's RNN, LSTM and GRU have no "
                         "layer normalisation); expected layer_norm=False")
    if h_mask is not None or zone is not None:
        raise ValueError("model: recurrent_dropout and zoneout act in training; export the model in eval mode "
                         "(model.eval())")
    cell_class, options = cell_of(cell, coupled=coupled, peepholes=peep is not None)
    spec = cell_class.SPEC
    layout, gates = spec.onnx, spec.gates_of(options)
    D, H = int(w_hh.shape[0]), int(w_hh.shape[2])
    W = _onnx_order(w_ih, layout, gates, H, axis=1)  # (D, G·H, X): ONNX's W, its gate rows reordered
    R = _onnx_order(w_hh, layout, gates, H, axis=1)
    B = None
    if b is not None:  # ONNX's B = [Wb, Rb]: the seed's one bias per gate in Wb; Rb zero but the GRU's b_hn
        rb = [b_hn if (g == layout.separate_bias and b_hn is not None) else _zeros_like_rows(b, H, axis=1)
              for g in layout.gates]
        B = op.Concat(_onnx_order(b, layout, gates, H, axis=1), *rb, axis=1)
    seq = None
    if mask is not None:  # (T, B) 1 inside each sequence -> its length
        seq = op.Cast(op.ReduceSum(mask, _ints(0), keepdims=0), to=onnx.TensorProto.INT32)
    inputs = [x, W, R, B, seq, h0]
    lstm = cell == "lstm"
    if lstm:
        P = None
        if peep is not None:  # ONNX's P (D, 3H) in its own peephole order, from the seed's rows
            names = [g for g in PEEPHOLE_GATES if g in gates]
            parts = []
            for g in layout.peepholes:
                sign, block = _source(layout, gates, g)
                if block is None:
                    parts.append(_zeros_like_rows(peep, H, axis=1))
                else:
                    r = _rows(peep, names.index(gates[block]), H, axis=1)
                    parts.append(op.Neg(r) if sign < 0 else r)
            P = op.Concat(*parts, axis=1)
        inputs += [c0, P]
    while inputs[-1] is None:
        inputs.pop()
    attrs = {"hidden_size": H, **layout.attributes(options, D)}
    if D == 2:
        attrs["direction"] = "bidirectional"
    outs = getattr(op, layout.op)(*inputs, **attrs)
    Y, Y_h = outs[0], outs[1]  # (T, D, B, H), (D, B, H)
    states, cells = [], []
    for d in range(D):
        y = op.Squeeze(op.Slice(Y, _ints(d), _ints(d + 1), _ints(1)), _ints(1))  # (T, B, H)
        last = op.Squeeze(op.Slice(Y_h, _ints(d), _ints(d + 1), _ints(0)), _ints(0))
        start = op.Slice(h0, _ints(d), _ints(d + 1), _ints(0))  # (1, B, H)
        if d == 0:  # slots: h_0, h after steps 0 … T-2, and the final state (h after each sequence's last step)
            states.append(op.Concat(start, op.Slice(y, _ints(0), _ints(-1), _ints(0)), op.Unsqueeze(last, _ints(0)), axis=0))
        else:  # reverse: slot t holds h after step t; slot 0 the final state, slot T h_0
            states.append(op.Concat(op.Unsqueeze(last, _ints(0)), op.Slice(y, _ints(1), _ints(2**62), _ints(0)), start,
                                    axis=0))
        if lstm:  # the carried C_t: h_0's C_0 and the final C (the steps between are not kept by ONNX's LSTM)
            c_last = op.Unsqueeze(op.Squeeze(op.Slice(outs[2], _ints(d), _ints(d + 1), _ints(0)), _ints(0)), _ints(0))
            c_start = op.Slice(c0, _ints(d), _ints(d + 1), _ints(0))
            if keep:
                middle = op.Expand(c_start, op.Shape(op.Slice(y, _ints(1), _ints(2**62), _ints(0))))
                cells.append(op.Concat(c_start, middle, c_last, axis=0) if d == 0 else op.Concat(c_last, middle, c_start, axis=0))
            else:  # the operator's inference call keeps C's first and last slots only
                cells.append(op.Concat(c_start, c_last, axis=0) if d == 0 else op.Concat(c_last, c_start, axis=0))
    zero = op.CastLike(op.Constant(value_float=0.0), x)
    tb = op.Slice(op.Shape(x), _ints(0), _ints(2), _ints(0))  # (T, B)
    GH = STORED_GATES[cell] * H
    gates_out = op.Expand(zero, op.Concat(_ints(D), tb, _ints(GH), axis=0))
    K = reserve_width(cell, H, coupled, False, False)
    reserve = op.Expand(zero, op.Concat(_ints(D), op.Mul(op.ReduceProd(tb, keepdims=1), _ints(K)), axis=0))
    empty = op.Expand(zero, _ints(0))
    if not keep:  # the operator's inference call returns no gates and no reserve
        gates_out = reserve = empty
    return _stack(states), (_stack(cells) if lstm else empty), gates_out, empty, reserve


TRANSLATIONS = {}
if hasattr(torch.ops.rnnlab, "recurrent_level"):
    TRANSLATIONS[torch.ops.rnnlab.recurrent_level.default] = recurrent_level_onnx


def register() -> bool:
    """Make the translation part of torch.onnx's default registry, so that a plain
    ``torch.onnx.export(model, args)`` of a model holding rnnlab layers writes ONNX's recurrent nodes.
    Uses the exporter's registration hook (torch 2.13); returns False where it is missing (pass
    ``custom_translation_table=TRANSLATIONS`` then)."""
    if not TRANSLATIONS:
        return False
    try:  # what ``custom_translation_table`` does for one call, made the default for every call
        from torch.onnx._internal.exporter import _registration
        from torch.onnx._internal.exporter._torchlib import _torchlib_registry
    except ImportError:
        return False
    for target, fn in TRANSLATIONS.items():
        _torchlib_registry._registry.append(
            _registration.OnnxDecompMeta(onnx_function=fn, fx_target=target, signature=None, is_custom=True))
    return True


REGISTERED = register()
