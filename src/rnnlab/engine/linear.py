"""The native engine for linear recurrences h_t = a_t * h_{t-1} + b_t (minGRU, minLSTM).

Their gates see only x_t, so every coefficient comes before the loop, for all steps at once:

    k = x · W_ihᵀ + b                      one GEMM over all T·B rows
    a, b = the cell's ``coefficients(k)``  elementwise, under autograd
    h_t = a_t * h_{t-1} + b_t              the loop: the ``rnnlab::linear_recurrence`` operator

The operator's loop is the driver's (``csrc/driver.h``) over ``csrc/cells/linear.h``, hand-differentiated
(∂a_t = ∂h_t h_{t-1}, ∂b_t = ∂h_t, ∂h_{t-1} = a_t ∂h_t), and autograd carries ∂a, ∂b back through the
coefficients and the GEMM. It does T sequential steps of B·H work each: O(T·B·H) in all, like the
parallel scan (``scan.py``), in one pass over memory instead of several — the faster of the two on a
CPU. The scan's O(log T) depth pays on parallel hardware.
"""

from __future__ import annotations

import torch

from . import ops
from .scan import ScanEngine, finish
from .stack import run_stack


def direction(layer, w, x, state, lengths, reverse: bool, trace: bool, step: dict):
    """One level, one direction (``step`` is always empty: minimal cells have no variants)."""
    (h0,) = state
    T, B, X = x.shape
    x2 = x.reshape(T * B, X)
    k = (x2 @ w.weight_ih.T if w.bias is None else torch.addmm(w.bias, x2, w.weight_ih.T)).view(T, B, w.weight_ih.shape[0])  # one GEMM
    a, b, traces = layer.cell_class.coefficients(k)
    mask = live = None
    if lengths is not None:
        live = (torch.arange(T, device=x.device).unsqueeze(1) < lengths).unsqueeze(2)  # (T, B, 1)
        mask = live.squeeze(2).to(x.dtype)
    states = torch.ops.rnnlab.linear_recurrence(a, b, h0, mask, reverse=reverse)
    out = states[:T] if reverse else states[1:]
    return finish(out, states[0] if reverse else states[T], traces, live, trace)


class LinearEngine:
    """minGRU/minLSTM's sequential loop, compiled (``engine="native"``; ``"auto"`` on CPU). Without the
    compiled operators, and on CUDA tensors, the parallel scan runs instead."""

    name = "native"

    def path(self, x: torch.Tensor, layer=None) -> str:
        return "native-cpp" if ops.available() and not x.is_cuda else "scan"

    def run(self, layer, x, hx, lengths, trace):
        if x.is_cuda or not ops.available():
            if not x.is_cuda:
                ops.warn_unavailable()
            return ScanEngine().run(layer, x, hx, lengths, trace)
        return run_stack(layer, x, hx, lengths, trace, direction)
