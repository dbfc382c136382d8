"""The native engine for linear recurrences h_t = a_t * h_{t-1} + b_t (minGRU, minLSTM).

Their gates see only x_t, so every coefficient comes before the loop, for all steps at once:

    k = x · W_ihᵀ + b                      one GEMM over all T·B rows
    a, b = the cell's ``coefficients(k)``  elementwise, under autograd
    h_t = a_t * h_{t-1} + b_t              the loop: one multiply-add per unit and step (``LinearRecurrence``)

The loop is compiled C++ (``linear_forward_loop`` in ``csrc/loops.cpp``; its PyTorch fallback in
``loops.py``), hand-differentiated (∂a_t = ∂h_t h_{t-1}, ∂b_t = ∂h_t, ∂h_{t-1} = a_t ∂h_t), and
autograd carries ∂a, ∂b back through the coefficients and the GEMM. It does T sequential steps of
B·H work each: O(T·B·H) in all, like the parallel scan (``scan.py``), in one pass over memory
instead of several — the faster of the two on a CPU. The scan's O(log T) depth pays on parallel
hardware.
"""

from __future__ import annotations

import torch

from ..layers.runner import run_stack
from . import native
from .fused import _kernels
from .loops import linear_states
from .scan import finish


class LinearRecurrence(torch.autograd.Function):
    """states (T+1, B, H) of h_t = a_t * h_{t-1} + b_t from a, b (T, B, H) and h_0 (B, H); the reverse
    direction runs t = T-1 … 0 and keeps h_0 in slot T (the layout of ``fused.FusedLevel``)."""

    @staticmethod
    def forward(ctx, mask, reverse, a, b, h0):
        T, B, H = a.shape
        a, b = a.contiguous(), b.contiguous()
        states = a.new_empty(T + 1, B, H)
        states[T if reverse else 0] = h0
        none = a.new_empty(0)
        _kernels(a).linear_forward_loop(a, b, none if mask is None else mask, reverse, states)
        ctx.reverse = reverse
        ctx.save_for_backward(mask, a, b, h0, states)
        return states

    @staticmethod
    def backward(ctx, g_states):
        mask, a, b, h0, states = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiate the same loop written in torch operations
            inputs = (a, b, h0)
            wanted = [k for k in range(3) if ctx.needs_input_grad[2 + k]]
            out = linear_states(a, b, h0, mask, ctx.reverse)
            got = torch.autograd.grad(out, [inputs[k] for k in wanted], g_states, create_graph=True, allow_unused=True)
            result = [None, None, None, None, None]
            for k, g in zip(wanted, got):
                result[2 + k] = g
            return tuple(result)
        T, B, H = a.shape
        da, db, dh0 = torch.empty_like(a), torch.empty_like(a), a.new_empty(B, H)
        none = a.new_empty(0)
        _kernels(a).linear_backward_loop(a, none if mask is None else mask, ctx.reverse, states,
                                         g_states.contiguous(), da, db, dh0)
        return None, None, da, db, dh0


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
    states = LinearRecurrence.apply(mask, reverse, a, b, h0)
    out = states[:T] if reverse else states[1:]
    return finish(out, states[0] if reverse else states[T], traces, live, trace)


class LinearEngine:
    """minGRU/minLSTM's sequential loop, compiled (``engine="native"``; ``"auto"`` on CPU)."""

    name = "native"

    def path(self, x: torch.Tensor, layer=None) -> str:
        return "native-python" if _kernels(x) is native.loops else "native-cpp"

    def run(self, layer, x, hx, lengths, trace):
        return run_stack(layer, x, hx, lengths, trace, direction)
