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
from types import SimpleNamespace

import torch

from ..cells import variants
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


def _reference_forward(spec, reverse, mask, x, h0, c0, w, step=None, zone=None):
    """The Function's outputs (states, cells, gates, c_pre) from the cells' equations, under autograd
    (``step``: ``equations``' further keyword arguments, a variant's ``extra`` and ``h_mask``; ``zone``:
    zoneout's keep masks (T, S, B, H), and then c_pre is the LSTM's C_t before zoneout)."""
    cell_class, options = spec
    step = step or {}
    T = x.shape[0]
    state = (h0,) if c0 is None else (h0, c0)
    first = T if reverse else 0
    hs, cs, gs, pre = [None] * (T + 1), [None] * (T + 1), [None] * T, [None] * T
    hs[first], cs[first] = h0, c0
    for s in range(T):
        t, p, n = _slots(T, s, reverse)
        new, tr = cell_class.equations(x[t], state, w, **options, **step)
        g = torch.cat([tr[name] for name in cell_class.GATES], 1)
        c_pre = tr.get("c")
        if zone is not None:
            new = tuple(torch.where(zone[t, k] != 0, old, v) for k, (old, v) in enumerate(zip(state, new)))
        if mask is not None:
            live = (mask[t] != 0).unsqueeze(1)
            new = tuple(torch.where(live, a, b) for a, b in zip(new, state))
            g = torch.where(live, g, 0.0)
            c_pre = None if c_pre is None else torch.where(live, c_pre, 0.0)
        state = new
        hs[n], gs[t], pre[t] = new[0], g, c_pre
        if c0 is not None:
            cs[n] = new[1]
    c_pres = torch.stack(pre) if zone is not None and c0 is not None else None
    return torch.stack(hs), (torch.stack(cs) if c0 is not None else None), torch.stack(gs), c_pres


# inputs per direction (FusedLevel.forward's, after cell, mask, spec, D, x); None where absent
INPUTS = ("h0", "c0", "w_ih", "w_hh", "b", "b_hn",
          "peep",  # LSTM peepholes (P·H)
          "h_mask",  # recurrent dropout: the sequence's mask (B, H)
          "ln_ih_w", "ln_ih_b", "ln_hh_w", "ln_hh_b", "ln_c_w", "ln_c_b",  # layer norm's gains and biases
          "zone")  # zoneout: keep masks (T, S, B, H), 1 where a unit keeps its previous value (S = 2: h, C; 1: h)
# saved per direction: the inputs, then the outputs and the loops' own buffers
SAVED = INPUTS + ("states", "cells", "gates", "extra", "c_pre",
                  "raw", "ih_mean", "ih_rstd",  # layer norm of the input projection: x W_ihᵀ, its μ and 1/σ
                  "uhat", "urstd", "nhat", "nrstd", "chat", "crstd")  # the loops' normalised values and 1/σ
PER_DIRECTION, OUTPUTS = len(INPUTS), 4  # outputs per direction: states, cells, gates, c_pre
LN_INPUTS = {"ln_ih_w": "ln_ih_weight", "ln_ih_b": "ln_ih_bias", "ln_hh_w": "ln_hh_weight", "ln_hh_b": "ln_hh_bias",
             "ln_c_w": "ln_c_weight", "ln_c_b": "ln_c_bias"}

# the variants the native loops compute, per cell: every one (the variant loops lstm_forward_loop and
# gru_forward_loop; the plain cells run forward_loop)
NATIVE_VARIANTS = {"lstm": ("layer_norm", "peepholes", "coupled", "recurrent_dropout", "zoneout"),
                   "gru": ("layer_norm", "recurrent_dropout", "zoneout")}


def unsupported_variants(layer) -> dict:
    """The variants in force for this call (``active_variants()``) that the native loops do not compute."""
    ok = NATIVE_VARIANTS.get(layer.mode, ())
    return {k: v for k, v in layer.active_variants().items() if k not in ok}


def _lstm_variant(cell, spec, peep, h_mask, ln, zone) -> bool:
    """Whether this level runs the LSTM's variant loops (peepholes, coupled, recurrent dropout, layer norm, zoneout)."""
    return cell == LSTM and (peep is not None or h_mask is not None or bool(spec[1].get("coupled"))
                             or ln is not None or zone is not None)


def _gru_variant(cell, h_mask, ln, zone) -> bool:
    """Whether this level runs the GRU's variant loops (recurrent dropout, layer norm, zoneout)."""
    return cell in (GRU_BEFORE, GRU_AFTER) and (h_mask is not None or ln is not None or zone is not None)

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


def _or(t, none):
    """t, contiguous, or ``none`` (the call's one empty tensor: the loops read empty as absent) when t is None."""
    return none if t is None else t.contiguous()


class FusedLevel(torch.autograd.Function):
    """One level, D = 1 or 2 directions over the same x (T, B, X). Per direction d: the ``INPUTS`` (h_0, C_0
    (B, H), the Weights, the variants' tensors or None); outputs states (T+1, B, H), cells (T+1, B, H)
    (LSTM; else None), gates (T, B, G·H) and c_pre (T, B, H), the LSTM's C_t before zoneout (else None).
    Direction 1 is the reverse one."""

    @staticmethod
    def forward(ctx, cell, mask, spec, D, x, *per_direction):
        T, B, X = x.shape
        kernels = _kernels(x)
        x2 = x.reshape(T * B, X)
        parallel = _parallel_directions(kernels, D)
        outputs, saved, jobs = [], [x, mask], []
        none = x.new_empty(0)
        coupled = bool(spec[1].get("coupled"))
        for d in range(D):
            v = SimpleNamespace(**dict(zip(INPUTS, per_direction[PER_DIRECTION * d : PER_DIRECTION * (d + 1)])))
            reverse = d == 1
            GH, H = v.w_hh.shape
            ln = v.ln_hh_w is not None
            raw = ih_mean = ih_rstd = None
            if v.ln_ih_w is not None:  # LN(x W_ihᵀ) + b over all T·B rows at once (b folded into LN's bias)
                raw = x2 @ v.w_ih.T
                shift = v.ln_ih_b if v.b is None else v.ln_ih_b + v.b
                xp, ih_mean, ih_rstd = torch.native_layer_norm(raw, [GH], v.ln_ih_w, shift, variants.EPS)
                xp = xp.view(T, B, GH)
            else:
                xp = (x2 @ v.w_ih.T if v.b is None else torch.addmm(v.b, x2, v.w_ih.T)).view(T, B, GH)  # one GEMM
            states = x.new_empty(T + 1, B, H)
            states[T if reverse else 0] = v.h0
            cells = none
            if cell == LSTM:
                cells = x.new_empty(T + 1, B, H)
                cells[T if reverse else 0] = v.c0
            extra = x.new_empty(T, B, H) if cell in (GRU_BEFORE, GRU_AFTER) else none  # r·h, or W_hn h + b_hn
            w_hh = v.w_hh.contiguous()
            threads = 1 if parallel else blas_threads(B, GH, H)
            zone, c_pre = _or(v.zone, none), None
            norm = {}
            if ln:  # the loops' saved values (zeros where a row is past its sequence's end)
                W = 2 * H if cell == GRU_BEFORE else GH  # the first GEMM's LN width
                norm = dict(uhat=x.new_empty(T, B, W), urstd=x.new_empty(T, B))
                if cell == GRU_BEFORE:
                    norm.update(nhat=x.new_empty(T, B, H), nrstd=x.new_empty(T, B))
                if cell == LSTM:
                    norm.update(chat=x.new_empty(T, B, H), crstd=x.new_empty(T, B))
            m = _or(mask, none)
            if _lstm_variant(cell, spec, v.peep, v.h_mask, v.ln_hh_w, v.zone):
                gates = x.new_empty(T, B, 4 * H)  # (f, i, g, o) even when coupled (i = 1 - f)
                if v.zone is not None:
                    c_pre = x.new_empty(T, B, H)
                nl = [] if not ln else [v.ln_hh_w, v.ln_hh_b, v.ln_c_w, v.ln_c_b, norm["uhat"], norm["urstd"],
                                        norm["chat"], norm["crstd"]]
                args = (xp, w_hh.T.contiguous(), _or(v.peep, none), coupled, _or(v.h_mask, none), m, reverse,
                        states, cells, gates, threads, nl, zone, _or(c_pre, none))
                jobs.append(lambda args=args: kernels.lstm_forward_loop(*args))
            elif _gru_variant(cell, v.h_mask, v.ln_hh_w, v.zone):
                gates = x.new_empty(T, B, GH)
                nl = [] if not ln else [v.ln_hh_w, v.ln_hh_b, norm["uhat"], norm["urstd"],
                                        norm.get("nhat", none), norm.get("nrstd", none)]
                args = (cell, xp, w_hh.T.contiguous(), _or(v.b_hn, none), _or(v.h_mask, none), m, reverse, states,
                        cells, gates, extra, threads, nl, zone)
                jobs.append(lambda args=args: kernels.gru_forward_loop(*args))
            else:
                gates = x.new_empty(T, B, GH)
                args = (cell, xp, w_hh.T.contiguous(), _or(v.b_hn, none), m, reverse, states, cells, gates, extra,
                        threads)
                jobs.append(lambda args=args: kernels.forward_loop(*args))
            own = dict(states=states, cells=cells, gates=gates, extra=extra, c_pre=c_pre, raw=raw, ih_mean=ih_mean,
                       ih_rstd=ih_rstd, **norm)
            saved += [getattr(v, k) for k in INPUTS] + [own.get(k) for k in SAVED[PER_DIRECTION:]]
            outputs += [states, cells if cell == LSTM else None, gates, c_pre]
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
        none = x.new_empty(0)
        # the compiled loops read an empty gradient as zero; the Python loops want the zeros
        absent = (lambda like: x.new_zeros(like.shape)) if kernels is native.loops else (lambda like: none)
        jobs, chains = [], []
        coupled = bool(ctx.spec[1].get("coupled"))
        m = _or(mask, none)
        per = len(SAVED)
        dirs = [SimpleNamespace(**dict(zip(SAVED, saved[per * d : per * (d + 1)]))) for d in range(D)]
        for d, v in enumerate(dirs):
            g_states, g_cells, g_gates, g_cpre = grads[OUTPUTS * d : OUTPUTS * (d + 1)]
            GH, H = v.w_hh.shape
            g_states = x.new_zeros(v.states.shape) if g_states is None else g_states.contiguous()
            g_gates = absent(v.gates) if g_gates is None else g_gates.contiguous()
            g_cells = none if cell != LSTM else (absent(v.cells) if g_cells is None else g_cells.contiguous())
            da = x.new_empty(T, B, GH)
            dhn = x.new_empty(T, B, H) if cell == GRU_AFTER else none
            dh0 = x.new_empty(B, H)
            dc0 = x.new_empty(B, H) if cell == LSTM else none
            threads = 1 if parallel else blas_threads(B, GH, H)
            ln = v.ln_hh_w is not None
            # layer norm: ∂ of the raw recurrent GEMM outputs, and the gradients of LN(W_h ·)'s (and LN(C_t)'s) gain, bias
            v.dhh = x.new_empty(T, B, GH) if ln else None
            v.dln = [x.new_empty(n) for n in ((GH, GH) + ((H, H) if cell == LSTM else ()))] if ln else []
            zone = _or(v.zone, none)
            if _lstm_variant(cell, ctx.spec, v.peep, v.h_mask, v.ln_hh_w, v.zone):
                nl = [] if not ln else [v.ln_hh_w, v.ln_hh_b, v.ln_c_w, v.ln_c_b, v.uhat, v.urstd, v.chat, v.crstd,
                                        v.dhh, *v.dln]
                g_cpre = none if v.zone is None else (absent(v.c_pre) if g_cpre is None else g_cpre.contiguous())
                args = (v.w_hh, _or(v.peep, none), coupled, _or(v.h_mask, none), m, d == 1, v.states, v.cells,
                        v.gates, g_states, g_cells, g_gates, da, dh0, dc0, threads, nl, zone, _or(v.c_pre, none),
                        g_cpre)
                jobs.append(lambda args=args: kernels.lstm_backward_loop(*args))
            elif _gru_variant(cell, v.h_mask, v.ln_hh_w, v.zone):
                nl = [] if not ln else [v.ln_hh_w, v.ln_hh_b, v.uhat, v.urstd, _or(v.nhat, none),
                                        _or(v.nrstd, none), v.dhh, *v.dln]
                args = (cell, v.w_hh, _or(v.h_mask, none), m, d == 1, v.states, v.cells, v.gates, v.extra,
                        g_states, g_cells, g_gates, da, dhn, dh0, dc0, threads, nl, zone)
                jobs.append(lambda args=args: kernels.gru_backward_loop(*args))
            else:
                args = (cell, v.w_hh, m, d == 1, v.states, v.cells, v.gates, v.extra,
                        g_states, g_cells, g_gates, da, dhn, dh0, dc0, threads)
                jobs.append(lambda args=args: kernels.backward_loop(*args))
            chains.append((da, dhn, dh0, dc0))
        _concurrently(jobs)
        # after the loops: every weight and input gradient is one GEMM or reduction over T·B rows
        x2 = x.reshape(T * B, X)
        dx = None
        result = [None] * (_FIRST + PER_DIRECTION * D)
        for d, (v, (da, dhn, dh0, dc0)) in enumerate(zip(dirs, chains)):
            GH, H = v.w_hh.shape
            g = {k: _FIRST + PER_DIRECTION * d + i for i, k in enumerate(INPUTS)}  # each input's place in result
            wants = {k: need[i] and getattr(v, k) is not None for k, i in g.items()}
            da2 = da.view(T * B, GH)
            d_raw, d_bias = da2, None  # ∂ of x W_ihᵀ; Σ ∂a, the gate bias's gradient
            if v.ln_ih_w is not None:  # through LN(x W_ihᵀ); its bias β and the gate bias b share the gradient Σ ∂a
                d_raw, dg, d_bias = torch.ops.aten.native_layer_norm_backward(
                    da2, v.raw, [GH], v.ih_mean, v.ih_rstd, v.ln_ih_w, v.ln_ih_b,
                    [True, wants["ln_ih_w"], wants["ln_ih_b"] or wants["b"]])
                result[g["ln_ih_w"]], result[g["ln_ih_b"]] = dg, d_bias if wants["ln_ih_b"] else None
            if need[4]:
                dx = d_raw @ v.w_ih if dx is None else dx.addmm_(d_raw, v.w_ih)
            h_prev = v.states[1:] if d == 1 else v.states[:-1]  # h_{t-1} of each time step t
            if v.h_mask is not None:  # recurrent dropout: W_hh saw h_{t-1} · mask
                h_prev = h_prev * v.h_mask
            h_prev = h_prev.reshape(T * B, H)
            rec = da2 if v.dhh is None else v.dhh.view(T * B, GH)  # ∂ of the recurrent GEMMs' outputs
            if wants["w_hh"]:
                if cell == GRU_BEFORE:  # the n rows multiply r·h_{t-1}
                    dw_hh = torch.cat((rec[:, : 2 * H].T @ h_prev, rec[:, 2 * H :].T @ v.extra.view(T * B, H)))
                elif cell == GRU_AFTER and v.dhh is None:  # the n rows' gradient is r·∂n_pre
                    dw_hh = torch.cat((rec[:, : 2 * H].T @ h_prev, dhn.view(T * B, H).T @ h_prev))
                else:
                    dw_hh = rec.T @ h_prev
                result[g["w_hh"]] = dw_hh
            if v.ln_hh_w is not None:  # the gains and biases of LN(W_h ·) and LN(C_t), summed by the loops
                for name, grad in zip(("ln_hh_w", "ln_hh_b", "ln_c_w", "ln_c_b"), v.dln):
                    result[g[name]] = grad if wants[name] else None
            result[g["h0"]] = dh0 if wants["h0"] else None
            result[g["c0"]] = dc0 if wants["c0"] else None
            result[g["w_ih"]] = d_raw.T @ x2 if wants["w_ih"] else None
            result[g["b"]] = (da2.sum(0) if d_bias is None else d_bias) if wants["b"] else None
            result[g["b_hn"]] = dhn.view(T * B, H).sum(0) if wants["b_hn"] else None
            if wants["peep"]:  # ∂p = Σ over T·B rows of ∂a_gate · C (C_{t-1} for f, i; C_t before zoneout for o)
                c_prev, c_next = (v.cells[1:], v.cells[:-1]) if d == 1 else (v.cells[:-1], v.cells[1:])
                if v.c_pre is not None:
                    c_next = v.c_pre
                rows = (0, 2) if coupled else (0, 1, 3)  # da's blocks of f, (i,) o
                result[g["peep"]] = torch.cat([(da[:, :, k * H : (k + 1) * H] * (c_next if k == rows[-1] else c_prev)).sum((0, 1))
                                               for k in rows])
        result[4] = None if dx is None else dx.view(T, B, X)
        return tuple(result)


def _step_of(v) -> dict:
    """``equations``' further keyword arguments from one direction's Function inputs."""
    extra = {name: getattr(v, k) for k, name in LN_INPUTS.items() if getattr(v, k) is not None}
    if v.peep is not None:
        extra["weight_peep"] = v.peep
    step = {"extra": extra} if extra else {}
    if v.h_mask is not None:
        step["h_mask"] = v.h_mask
    return step


def _double_backward(ctx, x, mask, saved, grads):
    from ..cells.base import Weights

    inputs, outs, outgrads = [x], [], []
    per = len(SAVED)
    for d in range(ctx.D):
        v = SimpleNamespace(**dict(zip(INPUTS, saved[per * d : per * d + PER_DIRECTION])))
        inputs += [getattr(v, k) for k in INPUTS]
        outs += _reference_forward(ctx.spec, d == 1, mask, x, v.h0, v.c0, Weights(v.w_ih, v.w_hh, v.b, v.b_hn),
                                   _step_of(v), v.zone)
        outgrads += grads[OUTPUTS * d : OUTPUTS * (d + 1)]
    pairs = [(o, g) for o, g in zip(outs, outgrads) if o is not None and g is not None]
    index = [4] + list(range(_FIRST, _FIRST + PER_DIRECTION * ctx.D))  # inputs' positions among forward's
    wanted = [k for k, t in enumerate(inputs) if t is not None and ctx.needs_input_grad[index[k]]]
    got = torch.autograd.grad([o for o, _ in pairs], [inputs[k] for k in wanted], [g for _, g in pairs],
                              create_graph=True, allow_unused=True)
    result: list = [None] * (_FIRST + PER_DIRECTION * ctx.D)
    for k, g in zip(wanted, got):
        result[index[k]] = g
    return tuple(result)


def _views(layer, states, cells, gates, c_pre, live, reverse: bool, trace: bool):
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
        if cells is not None:  # the cell's C_t (before zoneout, which only the carried state sees)
            c = c_pre if c_pre is not None else (cells[:T] if reverse else cells[1:])
            traces["c"] = c if live is None else torch.where(live, c, 0.0)
    return out, final, traces


def zoneout_masks(layer, T: int, like: torch.Tensor, reverse: bool) -> torch.Tensor | None:
    """Zoneout's keep masks (T, S, B, H) for one direction of one call, in time order, or None: the draws
    the reference engine makes for the same direction (``variants.zoneout_keep``, in step order)."""
    p = layer.regularisers.get("zoneout", 0.0) if layer.training else 0.0
    if not p:
        return None
    S, B = len(layer.cell_class.STATE), like.shape[1]
    keep = variants.zoneout_keep(p, T, S, like.new_empty(B, layer.hidden_size))
    return keep.flip(0) if reverse else keep  # the reverse direction's step s is time T-1-s


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
            extra = step.get("extra", {})
            args += [state[0], state[1] if len(state) > 1 else None, *layer.weights(k, d), extra.get("weight_peep"),
                     step.get("h_mask"), *(extra.get(name) for name in LN_INPUTS.values()),
                     zoneout_masks(layer, T, inp, d == 1)]
        res = FusedLevel.apply(cell, mask, spec, D, inp, *args)
        return [_views(layer, *res[OUTPUTS * d : OUTPUTS * (d + 1)], live, d == 1, trace) for d in range(D)]

    return run_stack(layer, x, hx, lengths, trace, level=level)


class NativeEngine:
    """Hand-written BPTT: compiled loops on CPU (pure-PyTorch loops without a compiler or on GPU)."""

    name = "native"

    def path(self, x: torch.Tensor, layer=None) -> str:
        return "native-python" if _kernels(x) is native.loops else "native-cpp"

    def run(self, layer, x, hx, lengths, trace):
        active = unsupported_variants(layer)
        if active:  # every variant of LSTM and GRU is computed; a cell that gains one must say so here
            raise ValueError(f"engine: 'native' cannot compute {type(layer).__name__} with "
                             f"{', '.join(f'{k}={v!r}' for k, v in active.items())}; expected engine='auto' or 'reference'")
        return run_levels(layer, x, hx, lengths, trace)
