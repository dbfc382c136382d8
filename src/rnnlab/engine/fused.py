"""The native engine: hand-written BPTT, one autograd.Function per level (``FusedLevel``).

The structure of cuDNN, oneDNN and haste, per direction:

    forward   xp = x · W_ihᵀ + b                  one GEMM over all T·B rows        (T, B, G·H)
              per step: h_{t-1} · W_hhᵀ (GEMM) and one fused pointwise pass        (the loops)
              cached: activated gates (T, B, G·H), states (T+1, B, H) with h[0] = h_0
    backward  per step: one fused pass for ∂a, one GEMM for ∂h_{t-1}             (the loops)
              ∂W_ih = ∂aᵀ · x,  ∂x = ∂a · W_ih,  ∂b = Σ ∂a,  ∂W_hh = ∂aᵀ · h_{t-1}
              each one GEMM or reduction over all T·B rows

The loops are compiled C++ (``csrc/loops.cpp``) or, without a compiler, the same algorithm in
PyTorch (``loops.py``). The two directions of a bidirectional level are independent chains: on two
or more threads their loops run at once. Double backward (``create_graph=True``) recomputes the
forward through the cells' own ``equations`` (the reference engine's arithmetic) and
differentiates that.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

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


def _reference_forward(spec, reverse, mask, x, h0, c0, w, step=None):
    """The Function's outputs (states, cells, gates) from the cells' equations, under autograd
    (``step``: ``equations``' further keyword arguments, a variant's ``extra`` and ``h_mask``)."""
    cell_class, options = spec
    step = step or {}
    T = x.shape[0]
    state = (h0,) if c0 is None else (h0, c0)
    first = T if reverse else 0
    hs, cs, gs = [None] * (T + 1), [None] * (T + 1), [None] * T
    hs[first], cs[first] = h0, c0
    for s in range(T):
        t, p, n = _slots(T, s, reverse)
        new, tr = cell_class.equations(x[t], state, w, **options, **step)
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


PER_DIRECTION = 8  # inputs per direction: h0, c0, w_ih, w_hh, b, b_hn, peep (LSTM peepholes), h_mask (recurrent dropout)
SAVED = 12  # saved tensors per direction: the inputs, then states, cells, gates, extra

# the variants the native loops compute, per cell (the LSTM's variant loops: lstm_forward_loop);
# and the GRU's recurrent dropout (gru_forward_loop); the rest (layer_norm, zoneout) run on the reference engine
NATIVE_VARIANTS = {"lstm": ("peepholes", "coupled", "recurrent_dropout"), "gru": ("recurrent_dropout",)}


def unsupported_variants(layer) -> dict:
    """The variants in force for this call (``active_variants()``) that the native loops do not compute."""
    ok = NATIVE_VARIANTS.get(layer.mode, ())
    return {k: v for k, v in layer.active_variants().items() if k not in ok}


def _lstm_variant(cell, spec, peep, h_mask) -> bool:
    """Whether this level runs the LSTM's variant loops (peepholes, coupled, recurrent dropout)."""
    return cell == LSTM and (peep is not None or h_mask is not None or bool(spec[1].get("coupled")))

_FIRST = 5  # FusedLevel.forward's (ctx excluded) first per-direction input: after cell, mask, spec, D, x
_POOL: dict = {"pid": None, "executor": None}


def _worker() -> ThreadPoolExecutor:
    """The reverse direction's thread, one per process (a forked child does not inherit the thread)."""
    if _POOL["pid"] != os.getpid():
        _POOL["executor"] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnnlab-reverse")
        _POOL["pid"] = os.getpid()
    return _POOL["executor"]


def _concurrently(jobs):
    """Run the directions' loops at once: the reverse one on a worker thread (the loops release the GIL)."""
    if len(jobs) == 1:
        jobs[0]()
        return
    pending = _worker().submit(jobs[1])
    jobs[0]()
    pending.result()


def _parallel_directions(kernels, D: int) -> bool:
    """The two directions are independent chains: on two or more threads, run them at once (compiled
    loops only), each loop's GEMMs on one BLAS thread."""
    return D == 2 and kernels is not native.loops and torch.get_num_threads() >= 2


class FusedLevel(torch.autograd.Function):
    """One level, D = 1 or 2 directions over the same x (T, B, X). Per direction d: inputs h_0, C_0 (B, H)
    and the Weights; outputs states (T+1, B, H), cells (T+1, B, H) (LSTM; else None) and gates (T, B, G·H).
    Direction 1 is the reverse one."""

    @staticmethod
    def forward(ctx, cell, mask, spec, D, x, *per_direction):
        T, B, X = x.shape
        kernels = _kernels(x)
        x2 = x.reshape(T * B, X)
        parallel = _parallel_directions(kernels, D)
        outputs, saved, jobs = [], [x, mask], []
        coupled = bool(spec[1].get("coupled"))
        for d in range(D):
            h0, c0, w_ih, w_hh, b, b_hn, peep, h_mask = per_direction[PER_DIRECTION * d : PER_DIRECTION * (d + 1)]
            reverse = d == 1
            GH, H = w_hh.shape
            xp = (x2 @ w_ih.T if b is None else torch.addmm(b, x2, w_ih.T)).view(T, B, GH)  # one GEMM, all steps
            states = x.new_empty(T + 1, B, H)
            states[T if reverse else 0] = h0
            cells = _empty(x)
            if cell == LSTM:
                cells = x.new_empty(T + 1, B, H)
                cells[T if reverse else 0] = c0
            extra = x.new_empty(T, B, H) if cell in (GRU_BEFORE, GRU_AFTER) else _empty(x)  # r·h, or W_hn h + b_hn
            w_hh = w_hh.contiguous()
            threads = 1 if parallel else blas_threads(B, GH, H)
            if _lstm_variant(cell, spec, peep, h_mask):
                gates = x.new_empty(T, B, 4 * H)  # (f, i, g, o) even when coupled (i = 1 - f)
                args = (xp, w_hh.T.contiguous(), _empty(x) if peep is None else peep.contiguous(), coupled,
                        _empty(x) if h_mask is None else h_mask.contiguous(), _empty(x) if mask is None else mask,
                        reverse, states, cells, gates, threads)
                jobs.append(lambda args=args: kernels.lstm_forward_loop(*args))
            elif h_mask is not None:  # the GRU with recurrent dropout
                gates = x.new_empty(T, B, GH)
                args = (cell, xp, w_hh.T.contiguous(), _empty(x) if b_hn is None else b_hn.contiguous(),
                        h_mask.contiguous(), _empty(x) if mask is None else mask, reverse, states, cells, gates, extra,
                        threads)
                jobs.append(lambda args=args: kernels.gru_forward_loop(*args))
            else:
                gates = x.new_empty(T, B, GH)
                args = (cell, xp, w_hh.T.contiguous(), _empty(x) if b_hn is None else b_hn.contiguous(),
                        _empty(x) if mask is None else mask, reverse, states, cells, gates, extra, threads)
                jobs.append(lambda args=args: kernels.forward_loop(*args))
            saved += [h0, c0, w_ih, w_hh, b, b_hn, peep, h_mask, states, cells, gates, extra]
            outputs += [states, cells if cell == LSTM else None, gates]
        _concurrently(jobs)
        ctx.cell, ctx.spec, ctx.D = cell, spec, D
        ctx.set_materialize_grads(False)  # no zero tensors for unused outputs (gates without traces, c_n)
        ctx.save_for_backward(*saved)
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *grads):
        x, mask, *saved = ctx.saved_tensors
        cell, D, need = ctx.cell, ctx.D, ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph=True: differentiate the reference's arithmetic instead
            return _double_backward(ctx, x, mask, saved, grads)
        T, B, X = x.shape
        kernels = _kernels(x)
        parallel = _parallel_directions(kernels, D)
        # the compiled loops read an empty gradient as zero; the Python loops want the zeros
        absent = (lambda like: x.new_zeros(like.shape)) if kernels is native.loops else (lambda like: _empty(x))
        jobs, chains = [], []
        coupled = bool(ctx.spec[1].get("coupled"))
        for d in range(D):
            h0, c0, w_ih, w_hh, b, b_hn, peep, h_mask, states, cells, gates, extra = saved[SAVED * d : SAVED * (d + 1)]
            g_states, g_cells, g_gates = grads[3 * d : 3 * (d + 1)]
            GH, H = w_hh.shape
            g_states = x.new_zeros(states.shape) if g_states is None else g_states.contiguous()
            g_gates = absent(gates) if g_gates is None else g_gates.contiguous()
            g_cells = _empty(x) if cell != LSTM else (absent(cells) if g_cells is None else g_cells.contiguous())
            da = x.new_empty(T, B, GH)
            dhn = x.new_empty(T, B, H) if cell == GRU_AFTER else _empty(x)
            dh0 = x.new_empty(B, H)
            dc0 = x.new_empty(B, H) if cell == LSTM else _empty(x)
            threads = 1 if parallel else blas_threads(B, GH, H)
            if _lstm_variant(cell, ctx.spec, peep, h_mask):
                args = (w_hh, _empty(x) if peep is None else peep.contiguous(), coupled,
                        _empty(x) if h_mask is None else h_mask.contiguous(), _empty(x) if mask is None else mask,
                        d == 1, states, cells, gates, g_states, g_cells, g_gates, da, dh0, dc0, threads)
                jobs.append(lambda args=args: kernels.lstm_backward_loop(*args))
            elif h_mask is not None:  # the GRU with recurrent dropout
                args = (cell, w_hh, h_mask.contiguous(), _empty(x) if mask is None else mask, d == 1, states, cells,
                        gates, extra, g_states, g_cells, g_gates, da, dhn, dh0, dc0, threads)
                jobs.append(lambda args=args: kernels.gru_backward_loop(*args))
            else:
                args = (cell, w_hh, _empty(x) if mask is None else mask, d == 1, states, cells, gates, extra,
                        g_states, g_cells, g_gates, da, dhn, dh0, dc0, threads)
                jobs.append(lambda args=args: kernels.backward_loop(*args))
            chains.append((da, dhn, dh0, dc0))
        _concurrently(jobs)
        # after the loops: every weight and input gradient is one GEMM or reduction over T·B rows
        x2 = x.reshape(T * B, X)
        dx = None
        result = [None] * (_FIRST + PER_DIRECTION * D)
        for d, (da, dhn, dh0, dc0) in enumerate(chains):
            h0, c0, w_ih, w_hh, b, b_hn, peep, h_mask, states, cells, gates, extra = saved[SAVED * d : SAVED * (d + 1)]
            GH, H = w_hh.shape
            i = _FIRST + PER_DIRECTION * d  # index of this direction's h0 among the inputs
            da2 = da.view(T * B, GH)
            if need[4]:
                dx = da2 @ w_ih if dx is None else dx.addmm_(da2, w_ih)
            h_prev = states[1:] if d == 1 else states[:-1]  # h_{t-1} of each time step t
            if h_mask is not None:  # recurrent dropout: W_hh saw h_{t-1} · mask
                h_prev = h_prev * h_mask
            h_prev = h_prev.reshape(T * B, H)
            if need[i + 3]:
                if cell == GRU_BEFORE:  # the n rows multiply r·h_{t-1}
                    dw_hh = torch.cat((da2[:, : 2 * H].T @ h_prev, da2[:, 2 * H :].T @ extra.view(T * B, H)))
                elif cell == GRU_AFTER:  # the n rows' gradient is r·∂n_pre
                    dw_hh = torch.cat((da2[:, : 2 * H].T @ h_prev, dhn.view(T * B, H).T @ h_prev))
                else:
                    dw_hh = da2.T @ h_prev
                result[i + 3] = dw_hh
            result[i] = dh0 if need[i] else None
            result[i + 1] = dc0 if c0 is not None and need[i + 1] else None
            result[i + 2] = da2.T @ x2 if need[i + 2] else None
            result[i + 4] = da2.sum(0) if b is not None and need[i + 4] else None
            result[i + 5] = dhn.view(T * B, H).sum(0) if b_hn is not None and need[i + 5] else None
            if peep is not None and need[i + 6]:  # ∂p = Σ over T·B rows of ∂a_gate · C (C_{t-1} for f, i; C_t for o)
                c_prev, c_next = (cells[1:], cells[:-1]) if d == 1 else (cells[:-1], cells[1:])
                rows = (0, 2) if coupled else (0, 1, 3)  # da's blocks of f, (i,) o
                result[i + 6] = torch.cat([(da[:, :, k * H : (k + 1) * H] * (c_next if k == rows[-1] else c_prev)).sum((0, 1))
                                           for k in rows])
        result[4] = None if dx is None else dx.view(T, B, X)
        return tuple(result)


def _double_backward(ctx, x, mask, saved, grads):
    from ..cells.base import Weights

    inputs, outs, outgrads = [x], [], []
    for d in range(ctx.D):
        h0, c0, w_ih, w_hh, b, b_hn, peep, h_mask = saved[SAVED * d : SAVED * d + PER_DIRECTION]
        inputs += [h0, c0, w_ih, w_hh, b, b_hn, peep, h_mask]
        step = {} if peep is None else {"extra": {"weight_peep": peep}}
        if h_mask is not None:
            step["h_mask"] = h_mask
        outs += _reference_forward(ctx.spec, d == 1, mask, x, h0, c0, Weights(w_ih, w_hh, b, b_hn), step)
        outgrads += grads[3 * d : 3 * (d + 1)]
    pairs = [(o, g) for o, g in zip(outs, outgrads) if o is not None and g is not None]
    index = [4] + list(range(_FIRST, _FIRST + PER_DIRECTION * ctx.D))  # inputs' positions among forward's
    wanted = [k for k, t in enumerate(inputs) if t is not None and ctx.needs_input_grad[index[k]]]
    got = torch.autograd.grad([o for o, _ in pairs], [inputs[k] for k in wanted], [g for _, g in pairs],
                              create_graph=True, allow_unused=True)
    result: list = [None] * (_FIRST + PER_DIRECTION * ctx.D)
    for k, g in zip(wanted, got):
        result[index[k]] = g
    return tuple(result)


def _views(layer, states, cells, gates, live, reverse: bool, trace: bool):
    """One direction's out (T, B, H), final state and traces, as views of the Function's outputs."""
    T = gates.shape[0]
    out = states[:T] if reverse else states[1:]  # the reverse direction keeps h_t in slot t
    last = 0 if reverse else T
    final = (states[last],) if cells is None else (states[last], cells[last])
    if live is not None:
        out = torch.where(live, out, 0.0)  # not out * live: a NaN state at a padded step must still give 0
    traces = None
    if trace:
        H = layer.hidden_size
        traces = {name: gates[:, :, k * H : (k + 1) * H] for k, name in enumerate(layer.cell_class.GATES)}
        if cells is not None:
            c = cells[:T] if reverse else cells[1:]
            traces["c"] = c if live is None else torch.where(live, c, 0.0)
    return out, final, traces


def run_levels(layer, x, hx, lengths, trace):
    """The stack through ``layers/runner.run_stack``, both directions of a level in one FusedLevel (so
    they can run at once): one Function call per level, not per direction."""
    T, D = x.shape[0], layer.num_directions
    cell, spec = cell_code(layer), (layer.cell_class, layer.options)
    mask = None
    if lengths is not None:
        mask = (torch.arange(T, device=x.device).unsqueeze(1) < lengths.unsqueeze(0)).to(x.dtype)  # (T, B)
    live = None if mask is None else (mask != 0).unsqueeze(2)  # (T, B, 1) bool

    def level(k, inp, states):
        args = []
        for d, state in enumerate(states):
            step = layer.step_arguments(k, d, x.shape[1])  # the reference engine's draws, in its order
            args += [state[0], state[1] if len(state) > 1 else None, *layer.weights(k, d),
                     step.get("extra", {}).get("weight_peep"), step.get("h_mask")]
        res = FusedLevel.apply(cell, mask, spec, D, inp, *args)
        return [_views(layer, *res[3 * d : 3 * (d + 1)], live, d == 1, trace) for d in range(D)]

    return run_stack(layer, x, hx, lengths, trace, level=level)


class NativeEngine:
    """Hand-written BPTT: compiled loops on CPU (pure-PyTorch loops without a compiler or on GPU)."""

    name = "native"

    def path(self, x: torch.Tensor, layer=None) -> str:
        return "native-python" if _kernels(x) is native.loops else "native-cpp"

    def run(self, layer, x, hx, lengths, trace):
        active = unsupported_variants(layer)
        if active:
            raise ValueError(f"engine: 'native' cannot compute {type(layer).__name__} with "
                             f"{', '.join(f'{k}={v!r}' for k, v in active.items())} (its loops compute the plain cell,"
                             " the LSTM's peepholes and coupled, and recurrent_dropout); expected engine='auto' or 'reference'")
        return run_levels(layer, x, hx, lengths, trace)
