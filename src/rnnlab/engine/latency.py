"""The latency path: an eager inference call of a plain one-direction layer as one native call.

At batch 1 a call's steps are cheap (about a microsecond each at H = 64) and its fixed cost is what a user
waits on: the layer's argument handling, the engine's choice and one dispatcher call per level, whose Python
binding matches 18 arguments against the schema. ``forward`` takes the calls that would reach
``fused.run_lean`` anyway (inference, whole sequences, no variant in force, no tracing, no autocast, the
native engine chosen) and runs them through ``_C.lean_forward``: per level the same ``recurrent_level``
function the operator runs (``keep=False``), so the results are the general path's bit for bit. Anything
else returns None and the layer's general ``forward`` runs it, including every call with bad arguments, so
the errors are the general path's.
"""

from __future__ import annotations

import torch

from . import choose, wavefront
from .fused import NativeEngine, kernel, lean, run_lean
from .wavefront import CELLS


def applies(layer, x: torch.Tensor) -> bool:
    """Whether this call of ``layer`` on ``x`` (a (T, B, X) tensor of the parameters' dtype) is a latency call: a call
    ``fused.lean`` takes (the general path would reach ``run_lean``) on a CPU tensor with rows and steps, outside
    autocast, of a cell the operators compute, where the engine the layer asks for runs the native loops."""
    if (layer.engine not in ("auto", "native") or x.device.type != "cpu" or x.shape[0] == 0 or x.shape[1] == 0
            or torch.is_autocast_enabled("cpu") or not lean(layer, x, None, False)):
        return False
    cell = kernel(layer)
    if cell not in CELLS or not isinstance(choose(layer, x, False), NativeEngine):
        return False
    return layer.num_layers == 1 or not wavefront.applies(layer, x, cell)


def forward(layer, x, hx, guard):
    """``layer(x, hx)``'s (out, h_n) for a latency call, or None where the call is not one (or its arguments need
    the general path's checks and messages). ``guard(layer, T, B, dtype, device)``: the layer's memory check."""
    if type(x) is not torch.Tensor or x.dim() not in (2, 3) or x.dtype not in (torch.float32, torch.float64):
        return None
    own = getattr(layer, "_parameters", None)  # (a module's own parameter: skips Module.__getattr__)
    w_ih = own.get("weight_ih_l0") if own is not None else None
    if x.shape[-1] != layer.input_size or x.dtype != (layer.weight_ih_l0 if w_ih is None else w_ih).dtype:
        return None
    unbatched = x.dim() == 2
    xs = x.unsqueeze(1) if unbatched else x.transpose(0, 1) if layer.batch_first else x
    if not applies(layer, xs):
        return None
    T, B = xs.shape[0], xs.shape[1]
    guard(layer, T, B, xs.dtype, xs.device)
    state = None  # zeros, made by the library
    if hx is not None or layer.learn_initial_state:
        state = layer._check_hx(hx, B, unbatched)  # the general path's checks and messages
    out, finals, _ = run_lean(layer, xs, state, kernel(layer))
    if unbatched:
        out, finals = out.squeeze(1), tuple(f.squeeze(1) for f in finals)
    elif layer.batch_first:
        out = out.transpose(0, 1)
    return out, finals if len(finals) > 1 else finals[0]
