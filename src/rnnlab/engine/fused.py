"""The native engine: hand-written BPTT for one level and direction, as one autograd.Function.

The structure of cuDNN, oneDNN and haste:

    forward   xp = x · W_ihᵀ + b                  one GEMM over all T·B rows        (T, B, G·H)
              per step: h_{t-1} · W_hhᵀ (GEMM) and one fused pointwise pass        (the loops)
              cached: activated gates (T, B, G·H), states (T+1, B, H) with h[0] = h_0
    backward  per step: one fused pass for ∂a, one GEMM for ∂h_{t-1}             (the loops)
              ∂W_ih = ∂aᵀ · x,  ∂x = ∂a · W_ih,  ∂b = Σ ∂a,  ∂W_hh = ∂aᵀ · h_{t-1}
              each one GEMM or reduction over all T·B rows

The loops are compiled C++ (``csrc/loops.cpp``) or, without a compiler, the same algorithm in
PyTorch (``loops.py``). Double backward (``create_graph=True``) recomputes the forward through
the cells' own ``equations`` (the reference engine's arithmetic) and differentiates that.
"""

from __future__ import annotations

import torch

from ..layers.runner import run_stack
from . import native
from .loops import GRU_AFTER, GRU_BEFORE, LSTM, RNN_RELU, RNN_TANH, _slots


def cell_code(layer) -> int:
    """The loops' cell number for a layer (see csrc/loops.cpp)."""
    if layer.mode == "rnn":
        return RNN_TANH if layer.options.get("nonlinearity", "tanh") == "tanh" else RNN_RELU
    if layer.mode == "lstm":
        return LSTM
    return GRU_BEFORE if layer.options.get("reset", "before") == "before" else GRU_AFTER


def _kernels(x: torch.Tensor):
    if x.dtype in (torch.float32, torch.float64):
        return native.kernels(x.device)
    return native.loops


# per-step GEMMs below this many multiply-adds (B·G·H·H) run on one BLAS thread: waking a second
# thread for a few-µs GEMM costs more than it saves, and far more on a busy machine
PARALLEL_STEP_MACS = 1 << 20


def blas_threads(B: int, GH: int, H: int) -> int:
    """BLAS threads for the loops' per-step GEMMs."""
    return torch.get_num_threads() if B * GH * H >= PARALLEL_STEP_MACS else 1


def _empty(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty(0)


def _reference_forward(spec, reverse, mask, x, h0, c0, w):
    """The Function's outputs (states, cells, gates) from the cells' equations, under autograd."""
    cell_class, options = spec
    T = x.shape[0]
    state = (h0,) if c0 is None else (h0, c0)
    first = T if reverse else 0
    hs, cs, gs = [None] * (T + 1), [None] * (T + 1), [None] * T
    hs[first], cs[first] = h0, c0
    for s in range(T):
        t, p, n = _slots(T, s, reverse)
        new, tr = cell_class.equations(x[t], state, w, **options)
        g = torch.cat([tr[name] for name in cell_class.GATES], 1)
        if mask is not None:
            live = (mask[t] != 0).unsqueeze(1)
            new = tuple(torch.where(live, a, b) for a, b in zip(new, state))
            g = torch.where(live, g, 0.0)
        state = new
        hs[n], gs[t] = new[0], g
        if c0 is not None:
            cs[n] = new[1]
    return torch.stack(hs), (torch.stack(cs) if c0 is not None else None), torch.stack(gs)


class FusedDirection(torch.autograd.Function):
    """One level, one direction: inputs x (T, B, X), h_0, C_0 (B, H) and the level's Weights;
    outputs states (T+1, B, H), cells (T+1, B, H) (LSTM; else None) and gates (T, B, G·H)."""

    @staticmethod
    def forward(ctx, cell, reverse, mask, spec, x, h0, c0, w_ih, w_hh, b, b_hn):
        T, B, X = x.shape
        GH, H = w_hh.shape
        x2 = x.reshape(T * B, X)
        xp = (x2 @ w_ih.T if b is None else torch.addmm(b, x2, w_ih.T)).view(T, B, GH)  # one GEMM, all steps
        states = x.new_empty(T + 1, B, H)
        states[T if reverse else 0] = h0
        cells = _empty(x)
        if cell == LSTM:
            cells = x.new_empty(T + 1, B, H)
            cells[T if reverse else 0] = c0
        gates = x.new_empty(T, B, GH)
        extra = x.new_empty(T, B, H) if cell in (GRU_BEFORE, GRU_AFTER) else _empty(x)  # r·h, or W_hn h + b_hn
        w_hh = w_hh.contiguous()
        _kernels(x).forward_loop(cell, xp, w_hh.T.contiguous(), _empty(x) if b_hn is None else b_hn.contiguous(),
                                 _empty(x) if mask is None else mask, reverse, states, cells, gates, extra,
                                 blas_threads(B, GH, H))
        ctx.cell, ctx.reverse, ctx.spec = cell, reverse, spec
        ctx.set_materialize_grads(False)  # no zero tensors for unused outputs (gates without traces, c_n)
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b, b_hn, mask, states, cells, gates, extra)
        return states, (cells if cell == LSTM else None), gates

    @staticmethod
    def backward(ctx, g_states, g_cells, g_gates):
        x, h0, c0, w_ih, w_hh, b, b_hn, mask, states, cells, gates, extra = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiate the reference's arithmetic instead
            return (None,) * 4 + _double_backward(ctx, (x, h0, c0, w_ih, w_hh, b, b_hn), mask, g_states, g_cells, g_gates)
        cell, reverse = ctx.cell, ctx.reverse
        T, B, X = x.shape
        GH, H = w_hh.shape
        kernels = _kernels(x)
        # the compiled loops read an empty gradient as zero; the Python loops want the zeros
        absent = (lambda like: x.new_zeros(like.shape)) if kernels is native.loops else (lambda like: _empty(x))
        g_states = x.new_zeros(states.shape) if g_states is None else g_states.contiguous()
        g_gates = absent(gates) if g_gates is None else g_gates.contiguous()
        g_cells = _empty(x) if cell != LSTM else (absent(cells) if g_cells is None else g_cells.contiguous())
        da = x.new_empty(T, B, GH)
        dhn = x.new_empty(T, B, H) if cell == GRU_AFTER else _empty(x)
        dh0 = x.new_empty(B, H)
        dc0 = x.new_empty(B, H) if cell == LSTM else _empty(x)
        kernels.backward_loop(cell, w_hh, _empty(x) if mask is None else mask, reverse, states, cells, gates,
                                  extra, g_states, g_cells, g_gates, da, dhn, dh0, dc0, blas_threads(B, GH, H))
        # after the loop: every weight and input gradient is one GEMM or reduction over T·B rows
        da2 = da.view(T * B, GH)
        need = ctx.needs_input_grad
        dx = (da2 @ w_ih).view(T, B, X) if need[4] else None
        dw_ih = da2.T @ x.reshape(T * B, X) if need[7] else None
        db = da2.sum(0) if b is not None and need[9] else None
        dw_hh = db_hn = None
        h_prev = (states[1:] if reverse else states[:-1]).reshape(T * B, H)  # h_{t-1} of each time step t
        if need[8]:
            if cell == GRU_BEFORE:  # the n rows multiply r·h_{t-1}
                dw_hh = torch.cat((da2[:, : 2 * H].T @ h_prev, da2[:, 2 * H :].T @ extra.view(T * B, H)))
            elif cell == GRU_AFTER:  # the n rows' gradient is r·∂n_pre
                dw_hh = torch.cat((da2[:, : 2 * H].T @ h_prev, dhn.view(T * B, H).T @ h_prev))
            else:
                dw_hh = da2.T @ h_prev
        if b_hn is not None and need[10]:
            db_hn = dhn.view(T * B, H).sum(0)
        return (None, None, None, None, dx, dh0 if need[5] else None, dc0 if c0 is not None and need[6] else None,
                dw_ih, dw_hh, db, db_hn)


def _double_backward(ctx, inputs, mask, g_states, g_cells, g_gates):
    x, h0, c0, w_ih, w_hh, b, b_hn = inputs
    from ..cells.base import Weights

    outs = _reference_forward(ctx.spec, ctx.reverse, mask, x, h0, c0, Weights(w_ih, w_hh, b, b_hn))
    pairs = [(o, g) for o, g in zip(outs, (g_states, g_cells, g_gates)) if o is not None and g is not None]
    wanted = [i for i, t in enumerate(inputs) if t is not None and ctx.needs_input_grad[4 + i]]
    grads = torch.autograd.grad([o for o, _ in pairs], [inputs[i] for i in wanted], [g for _, g in pairs],
                                create_graph=True, allow_unused=True)
    result: list = [None] * len(inputs)
    for i, g in zip(wanted, grads):
        result[i] = g
    return tuple(result)


def direction(layer, w, x, state, lengths, reverse: bool, trace: bool):
    """run_stack's direction function: one level, one direction through FusedDirection."""
    T = x.shape[0]
    cell = cell_code(layer)
    mask = None
    if lengths is not None:
        mask = (torch.arange(T, device=x.device).unsqueeze(1) < lengths.unsqueeze(0)).to(x.dtype)  # (T, B)
    h0 = state[0]
    c0 = state[1] if len(state) > 1 else None
    spec = (layer.cell_class, layer.options)
    states, cells, gates = FusedDirection.apply(cell, reverse, mask, spec, x, h0, c0, *w)
    out = states[:T] if reverse else states[1:]  # the reverse direction keeps h_t in slot t
    last = 0 if reverse else T
    final = (states[last],) if cells is None else (states[last], cells[last])
    live = None if mask is None else mask.unsqueeze(2)
    if live is not None:
        out = out * live
    traces = None
    if trace:
        H = layer.hidden_size
        traces = {name: gates[:, :, k * H : (k + 1) * H] for k, name in enumerate(layer.cell_class.GATES)}
        if cells is not None:
            c = cells[:T] if reverse else cells[1:]
            traces["c"] = c if live is None else c * live
    return out, final, traces


class NativeEngine:
    """Hand-written BPTT: compiled loops on CPU (pure-PyTorch loops without a compiler or on GPU)."""

    name = "native"

    def path(self, x: torch.Tensor) -> str:
        return "native-python" if _kernels(x) is native.loops else "native-cpp"

    def run(self, layer, x, hx, lengths, trace):
        return run_stack(layer, x, hx, lengths, trace, direction)
