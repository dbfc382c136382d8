"""The native engine's operators: ``rnnlab::recurrent_level`` and ``rnnlab::linear_recurrence``.

Their schemas and CPU kernels are C++ (``TORCH_LIBRARY`` at the end of ``csrc/ops.cpp``), compiled into
``rnnlab/engine/_C*.so`` when the package is installed (``setup.py``; ``make`` does it). This file loads
that library and registers, beside each operator, what tracing and autograd need:

* a fake implementation (``register_fake``): the outputs' shapes only, so that torch.compile,
  torch.export and the ONNX exporter see one node with named arguments;
* its backward (``register_autograd``): the hand-written BPTT operator
  (``recurrent_level_backward``, ``linear_recurrence_backward``); a double backward
  (``create_graph=True``) recomputes the forward through the cells' own ``equations`` — the
  reference engine's arithmetic — and differentiates that.

Each per-direction argument holds the level's directions in its first dimension (D = 1 or 2; direction 1
runs in reverse), or is None where the field is absent (no bias, a variant off). Without the compiled library (no compiler at
install, or ``RNNLAB_NATIVE=0``) ``available()`` is False and the layers run the reference engine,
with one warning.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from ..cells.gru import GRUCell
from ..cells.lstm import LSTMCell
from ..cells.rnn import RNNCell
from ..cells.weights import Weights

_LIBRARY = {"path": None, "error": None, "warned": False}


def _load() -> None:
    here = Path(__file__).parent
    found = sorted(here.glob("_C*.so")) + sorted(here.glob("_C*.pyd"))
    if not found:
        _LIBRARY["error"] = (f"no compiled library in {here} (the package was installed without a C++ compiler, "
                             "or from a source tree that was never built: run `make` or "
                             "`pip install --no-build-isolation -e .`)")
        return
    try:
        torch.ops.load_library(str(found[0]))
        _LIBRARY["path"] = str(found[0])
    except (OSError, RuntimeError) as e:  # a library built against another torch, a broken file
        _LIBRARY["error"] = f"{found[0].name} could not be loaded: {type(e).__name__}: {str(e).splitlines()[0][:300]}"


_load()

try:  # the same library as a Python module: its direct entry for latency calls (engine/latency.py)
    from . import _C as _DIRECT
except ImportError:  # no library, or one without the entry
    _DIRECT = None


def library_path() -> str | None:
    """The compiled library this process loaded (inside the package), or None."""
    return _LIBRARY["path"]


# os.environ's own store (bytes on POSIX): ``env`` reads it per call, so a change to os.environ is seen at once, for a
# tenth of os.environ.get's cost (which encodes the name each time; batch-1 calls read three switches)
_ENVIRON = getattr(os.environ, "_data", None) if os.name == "posix" else None


def env(name: str, default: str = "") -> str:
    """``os.environ.get(name, default)``, the engine's switches (``RNNLAB_*``) read on every call."""
    if _ENVIRON is None:
        return os.environ.get(name, default)
    value = _ENVIRON.get(name.encode())
    return default if value is None else os.fsdecode(value)


def available() -> bool:
    """Whether the native operators can run: the library loaded and ``RNNLAB_NATIVE`` is not 0."""
    return _LIBRARY["path"] is not None and env("RNNLAB_NATIVE", "1") != "0"


def direct_available() -> bool:
    """Whether ``lean_forward`` can run (``available()`` and the library's Python entry imported)."""
    return _DIRECT is not None and available()


def lean_forward(x, weights: list, h0, c0, cell: str):
    """The library's ``lean_forward`` (``csrc/ops.cpp``): an inference call of a plain one-direction stack, per
    level one ``recurrent_level(keep=False)`` (``weights``: per level w_ih, w_hh, b, b_hn, w_hr, each 2-D/1-D or
    None; ``h0``/``c0`` (L, B, ·) or None for zeros), in the bf16 mode under bfloat16 autocast (as
    ``level_inference``). Returns out (T, B, P), h_n (L, B, P), c_n (L, B, H) or (0,)."""
    return _DIRECT.lean_forward(x, weights, h0, c0, cell, autocast_bf16())


def warn_unavailable() -> None:
    """Say once per process that the native engine is missing and the reference engine runs instead."""
    if _LIBRARY["warned"]:
        return
    _LIBRARY["warned"] = True
    reason = "RNNLAB_NATIVE=0 is set" if _LIBRARY["path"] else _LIBRARY["error"]
    warnings.warn(f"rnnlab: the native engine is not available ({reason}); running the reference engine "
                  "instead (same results, several times slower).", RuntimeWarning, stacklevel=3)


# the per-direction fields of a level, in the operators' argument order (x first, then these; the backward
# operator takes w_hr last, after the outputs' gradients, where its default keeps older calls valid)
FIELDS = ("w_ih", "w_hh", "h0", "c0", "b", "b_hn", "mask", "peep", "h_mask", "ln_ih_w", "ln_ih_b",
          "ln_hh_w", "ln_hh_b", "ln_c_w", "ln_c_b", "zone", "w_hr")
OUTPUTS = ("states", "cells", "gates", "c_pre", "reserve")
# the cells whose levels the recurrent_level operator runs, by kernel: the class (its ``equations``, for
# double backward) and the options that select the kernel (from each cell's ``SPEC.kernels``)
EQUATIONS = {name: (cell, dict(options)) for cell in (RNNCell, LSTMCell, GRUCell)
             for name, options in cell.SPEC.kernels.items()}
STORED_GATES = {name: len(cell.SPEC.gates) for name, (cell, _) in EQUATIONS.items()}  # G of the gates output


def cell_of(cell: str, *, coupled: bool = False, peepholes: bool = False, layer_norm: bool = False):
    """The cell class a kernel computes and the options its ``equations`` take for these variants (the double
    backward's recomputation and the ONNX translation read the same)."""
    cell_class, options = EQUATIONS[cell]
    options = dict(options)
    if cell == "lstm":
        options.update(coupled=coupled, peepholes=peepholes)
    if layer_norm:
        options["layer_norm"] = True
    return cell_class, options


def reserve_width(cell: str, H: int, coupled: bool, ln_hh: bool, ln_ih: bool, proj: bool = False) -> int:
    """Values per (t, b) row in a direction's ``reserve`` (csrc/ops.cpp's ``reserve_layout``): the GRU's
    r·h or W_hn h + b_hn, the projected LSTM's m_t = o_t tanh(C_t), layer norm's saved normalised values and
    1/σ, and LN(x W_ihᵀ)'s input, μ, 1/σ."""
    G = 3 if cell == "lstm" and coupled else STORED_GATES[cell]
    k = H if cell.startswith("gru") or proj else 0
    if ln_hh:
        k += (2 * H if cell == "gru_before" else G * H) + 1
        k += H + 1 if cell in ("gru_before", "lstm") else 0
    if ln_ih:
        k += G * H + 2
    return k


if _LIBRARY["path"] is not None:

    @torch.library.register_fake("rnnlab::recurrent_level")
    def _level_fake(x, w_ih, w_hh, h0, c0, b, b_hn, mask, peep, h_mask, ln_ih_w, ln_ih_b, ln_hh_w, ln_hh_b,
                    ln_c_w, ln_c_b, zone, w_hr=None, *, cell, coupled=False, keep=True, bf16=False):
        T, B, _ = x.shape
        D, P, lstm = w_hh.shape[0], w_hh.shape[2], cell == "lstm"
        H = P if w_hr is None else w_hr.shape[2]  # a projection carries h (P wide), C_t and the gates are H wide
        K = reserve_width(cell, H, coupled, ln_hh_w is not None, ln_ih_w is not None, w_hr is not None)
        return (x.new_empty(D, T + 1, B, P), x.new_empty(D, T + 1 if keep else 2, B, H) if lstm else x.new_empty(0),
                x.new_empty(D, T, B, STORED_GATES[cell] * H) if keep else x.new_empty(0),
                x.new_empty(D, T, B, H) if lstm and zone is not None else x.new_empty(0),
                x.new_empty(D, T * B * K) if keep else x.new_empty(0))

    @torch.library.register_fake("rnnlab::recurrent_level_backward")
    def _level_backward_fake(x, w_ih, w_hh, h0, c0, b, b_hn, mask, peep, h_mask, ln_ih_w, ln_ih_b, ln_hh_w, ln_hh_b,
                             ln_c_w, ln_c_b, zone, states, cells, gates, c_pre, reserve, g_states, g_cells, g_gates,
                             g_c_pre, w_hr=None, *, cell, coupled=False, need_x=True, need_weights=True, bf16=False,
                             g_final=None, g_final_c=None, out_rows=False):
        none = x.new_empty(0)
        like = lambda t: torch.empty_like(t) if need_weights and t is not None else none  # noqa: E731
        return (torch.empty_like(x) if need_x else none, like(w_ih), like(w_hh), torch.empty_like(h0),
                none if c0 is None else torch.empty_like(c0), like(b), like(b_hn), like(peep), like(ln_ih_w),
                like(ln_ih_b), like(ln_hh_w), like(ln_hh_b), like(ln_c_w), like(ln_c_b), like(w_hr))

    @torch.library.register_fake("rnnlab::linear_recurrence")
    def _linear_fake(a, b, h0, mask, *, reverse=False):
        T, B, H = a.shape
        return a.new_empty(T + 1, B, H)

    @torch.library.register_fake("rnnlab::linear_recurrence_backward")
    def _linear_backward_fake(a, mask, states, g_states, *, reverse=False):
        return torch.empty_like(a), torch.empty_like(a), a.new_empty(a.shape[1], a.shape[2])


# ---------------------------------------------------------------------------------------------
# autograd: rnnlab::recurrent_level
# ---------------------------------------------------------------------------------------------

def _level_setup(ctx, inputs, keyword_only_inputs, output, also=()):
    ctx.cell, ctx.coupled = keyword_only_inputs["cell"], keyword_only_inputs["coupled"]
    if not keyword_only_inputs.get("keep", True) and any(isinstance(t, torch.Tensor) and t.requires_grad for t in inputs):
        raise ValueError("keep: expected True when an input needs a gradient (keep=False keeps nothing for the "
                         "backward), got False")
    ctx.bf16 = keyword_only_inputs.get("bf16", False)  # the backward runs the forward's mode
    ctx.given = len(inputs)  # a call may leave out the trailing w_hr (its default, None)
    inputs = (*inputs, *(None,) * (1 + len(FIELDS) - len(inputs)))
    ctx.save_for_backward(*inputs, *output, *also)  # also: saved for their version check alone
    ctx.set_materialize_grads(False)  # no zero tensors for unused outputs (gates without traces, c_n)


WEIGHTS = ("w_ih", "w_hh", "b", "b_hn", "peep", "ln_ih_w", "ln_ih_b", "ln_hh_w", "ln_hh_b", "ln_c_w", "ln_c_b", "w_hr")
GRAD_ORDER = ("w_ih", "w_hh", "h0", "c0", "b", "b_hn", "peep", "ln_ih_w", "ln_ih_b", "ln_hh_w", "ln_hh_b", "ln_c_w",
              "ln_c_b", "w_hr")  # recurrent_level_backward's outputs after dx


def _needs(ctx) -> dict[str, bool]:
    """Whether each of x and the FIELDS needs a gradient (False for the ones the call left out; the eager
    Function's first two inputs are the cell and coupled)."""
    given = ctx.needs_input_grad[getattr(ctx, "offset", 0):]
    return dict(zip(("x",) + FIELDS, (*given, *(False,) * (1 + len(FIELDS) - len(given)))))


def _level_backward(ctx, g_states, g_cells, g_gates, g_c_pre, g_reserve):
    return _level_gradients(ctx, g_states, g_cells, g_gates, g_c_pre)[:ctx.given]


def _level_gradients(ctx, g_states, g_cells, g_gates, g_c_pre, g_final=None, g_final_c=None, out_rows=False):
    """The inputs' gradients from the outputs': ``g_states`` every slot's (D, T+1, B, P), or with ``out_rows`` the
    output rows' alone (D, T, B, P: ``_EagerLevelOut``) with ``g_final`` (D, B, P) the last states' and ``g_final_c``
    (D, B, H) the LSTM's last C's."""
    saved = ctx.saved_tensors
    x, v = saved[0], dict(zip(FIELDS + OUTPUTS, saved[1:]))
    if torch.is_grad_enabled():  # create_graph=True: differentiate the reference's arithmetic instead
        if out_rows:
            g_states = _every_slot(g_states, g_final)
        if g_final_c is not None:
            g_cells = _at_last_slot(torch.zeros_like(v["cells"]) if g_cells is None else g_cells, g_final_c)
        return _level_double_backward(ctx, x, v, (g_states, g_cells, g_gates, g_c_pre))
    need = _needs(ctx)
    lstm = ctx.cell == "lstm"
    got = torch.ops.rnnlab.recurrent_level_backward(
        x, *(v[n] for n in FIELDS[:-1]), *(v[n] for n in OUTPUTS),
        torch.zeros_like(v["states"]) if g_states is None else g_states, g_cells if lstm else None, g_gates,
        g_c_pre if v["zone"] is not None and lstm else None, v["w_hr"], cell=ctx.cell, coupled=ctx.coupled,
        need_x=need["x"], need_weights=any(need[n] for n in WEIGHTS), bf16=ctx.bf16, g_final=g_final,
        g_final_c=g_final_c, out_rows=out_rows)
    grads = dict(zip(GRAD_ORDER, got[1:]))
    return (got[0] if need["x"] else None,
            *(grads[n] if n in grads and need[n] and v[n] is not None else None for n in FIELDS))


LN_NAMES = {"ln_ih_w": "ln_ih_weight", "ln_ih_b": "ln_ih_bias", "ln_hh_w": "ln_hh_weight", "ln_hh_b": "ln_hh_bias",
            "ln_c_w": "ln_c_weight", "ln_c_b": "ln_c_bias"}


def _slots(T: int, s: int, reverse: bool) -> tuple[int, int, int]:
    """Step s of the loop -> (time t, previous state slot, next state slot)."""
    t = T - 1 - s if reverse else s
    return (t, t + 1, t) if reverse else (t, t, t + 1)


def reference_level(cell: str, coupled: bool, reverse: bool, x, mask, h0, c0, w: Weights, step: dict, zone):
    """One direction's operator outputs (states, cells, gates, c_pre) computed from the cells' equations under
    autograd (``step``: ``equations``' further keyword arguments, a variant's ``extra`` and ``h_mask``; ``zone``:
    zoneout's keep masks (T, S, B, H), and then c_pre is the LSTM's C_t before zoneout)."""
    extra = step.get("extra", {})
    cell_class, options = cell_of(cell, coupled=coupled, peepholes="weight_peep" in extra,
                                  layer_norm="ln_hh_weight" in extra)
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
            new = tuple(torch.where(zone[t, k] != 0, old, val) for k, (old, val) in enumerate(zip(state, new)))
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


def _level_double_backward(ctx, x, v, grads):
    D = v["w_ih"].shape[0]
    one = lambda name, d: v[name][d] if v[name] is not None else None  # noqa: E731
    outs, outgrads = [], []
    for d in range(D):
        extra = {LN_NAMES[k]: one(k, d) for k in LN_NAMES if v[k] is not None}
        if v["peep"] is not None:
            extra["weight_peep"] = one("peep", d)
        step = {"extra": extra} if extra else {}
        if v["h_mask"] is not None:
            step["h_mask"] = one("h_mask", d)
        w = Weights(one("w_ih", d), one("w_hh", d), one("b", d), one("b_hn", d), one("w_hr", d))
        res = reference_level(ctx.cell, ctx.coupled, d == 1, x, v["mask"], one("h0", d), one("c0", d), w, step,
                              one("zone", d))
        for out, g in zip(res, grads):
            if out is not None and g is not None:
                outs.append(out)
                outgrads.append(g[d])
    need = _needs(ctx)
    wanted = [n for n in ("x",) + FIELDS if need[n] and n not in ("mask", "h_mask", "zone")
              and (n == "x" or v[n] is not None)]
    inputs = [x if n == "x" else v[n] for n in wanted]
    got = torch.autograd.grad(outs, inputs, outgrads, create_graph=True, allow_unused=True) if inputs else ()
    result = dict(zip(wanted, got))
    return (result.get("x"), *(result.get(n) for n in FIELDS))


# ---------------------------------------------------------------------------------------------
# autograd: rnnlab::linear_recurrence
# ---------------------------------------------------------------------------------------------

def linear_states(a, b, h0, mask, reverse):
    """States (T+1, B, H) of h_t = a_t h_{t-1} + b_t for a, b (T, B, H), in differentiable torch operations
    (``mask`` (T, B) or None: a row past its end keeps its state); slots as the operator's."""
    T = a.shape[0]
    hs = [None] * (T + 1)
    hs[T if reverse else 0] = h0
    for s in range(T):
        t, p, n = _slots(T, s, reverse)
        h = a[t] * hs[p] + b[t]
        hs[n] = h if mask is None else torch.where((mask[t] == 0).unsqueeze(1), hs[p], h)
    return torch.stack(hs)


def _linear_setup(ctx, inputs, keyword_only_inputs, output):
    a, b, h0, mask = inputs
    ctx.reverse = keyword_only_inputs["reverse"]
    ctx.save_for_backward(a, b, h0, mask, output)


def _linear_backward(ctx, g_states):
    a, b, h0, mask, states = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: differentiate the same loop written in torch operations
        inputs = (a, b, h0)
        wanted = [k for k in range(3) if ctx.needs_input_grad[k]]
        out = linear_states(a, b, h0, mask, ctx.reverse)
        got = torch.autograd.grad(out, [inputs[k] for k in wanted], g_states, create_graph=True, allow_unused=True)
        result = [None, None, None, None]
        for k, g in zip(wanted, got):
            result[k] = g
        return tuple(result)
    da, db, dh0 = torch.ops.rnnlab.linear_recurrence_backward(a, mask, states, g_states, reverse=ctx.reverse)
    return da, db, dh0, None


class _EagerLevel(torch.autograd.Function):
    """The registered autograd of ``recurrent_level`` (``_level_setup``, ``_level_backward``) for eager calls,
    without torch.library's per-call re-binding of the arguments to the schema (its ``fill_defaults`` reads
    the 21-argument schema once per argument: about 0.1 ms per training call, a quarter of a small layer's
    step). Tracing (torch.compile, torch.export) goes through the operator's own registration."""

    @staticmethod
    def forward(ctx, cell, coupled, bf16, *inputs):
        out = torch.ops.rnnlab.recurrent_level(*inputs, cell=cell, coupled=coupled, bf16=bf16)  # below autograd here
        _level_setup(ctx, inputs, {"cell": cell, "coupled": coupled, "bf16": bf16}, out)
        ctx.offset = 3
        return out

    @staticmethod
    def backward(ctx, *grads):
        return (None, None, None, *_level_backward(ctx, *grads))


def _every_slot(g_out, g_final):
    """The output rows' gradient (D, T, B, P) and the last states' (D, B, P, or None) as every state slot's
    (D, T+1, B, P): direction 0's rows are slots 1..T (its last state slot T), direction 1's slots 0..T-1 (its
    last slot 0); h_0's slot has none. Differentiable (a double backward's ``grad_outputs``)."""
    zero = g_out.new_zeros(g_out.shape[0], 1, *g_out.shape[2:])
    wide = torch.stack([torch.cat([zero[d], g_out[d]]) if d == 0 else torch.cat([g_out[d], zero[d]])
                        for d in range(g_out.shape[0])])
    return wide if g_final is None else _at_last_slot(wide, g_final)


def _at_last_slot(slots, last):
    """(D, T+1, ...) ``slots`` with ``last`` (D, ...) added to each direction's last slot (T forward, 0 reverse).
    Differentiable."""
    T = slots.shape[1] - 1
    return torch.stack([s.index_add(0, s.new_tensor([T if d == 0 else 0], dtype=torch.long), last[d].unsqueeze(0))
                        for d, s in enumerate(slots)])


def _stacked(grads, like):
    """Per-direction gradients (None where an output got none) as one (D, ...) tensor, or None if all are None."""
    if all(g is None for g in grads):
        return None
    grads = [g if g is not None else like() for g in grads]
    return grads[0].contiguous().unsqueeze(0) if len(grads) == 1 else torch.stack(grads)


class _EagerLevelOut(torch.autograd.Function):
    """``_EagerLevel`` returning what the layer shows: each direction's out (T, B, P), final state h_n (B, P) and,
    for the LSTM, final cell c_n (B, H), in place of the (D, T+1, B, ·) states and cells they are read from; then
    cells, gates, c_pre and reserve as the operator.

    Why: autograd gives a view's gradient to its base as a whole base-sized tensor, so out, h_n and c_n as views
    cost each training step a zero fill and a copy of every slot (per direction; c_n's where a loss or a decoder
    uses it). Here the backward gets out's gradient as the loss made it and h_n's and c_n's apart, and the operator
    reads them as they are (``recurrent_level_backward``'s ``g_states`` of T slots, ``g_final``, ``g_final_c``).

    Each out shares the states' memory (a slice taken below autograd's view tracking, so it is a tensor of its
    own to autograd); it is saved for the backward as an output, so an in-place change to it is refused at the
    backward, as a change to a view of the saved states is. h_n and c_n are copies, as torch.nn's are."""

    @staticmethod
    def forward(ctx, cell, coupled, bf16, *inputs):
        res = torch.ops.rnnlab.recurrent_level(*inputs, cell=cell, coupled=coupled, bf16=bf16)  # below autograd here
        states, cells = res[0], res[1]
        D, T = states.shape[0], states.shape[1] - 1
        with torch._C._AutoDispatchBelowADInplaceOrView():
            outs = tuple(states[0, 1:] if d == 0 else states[1, :T] for d in range(D))
        last = [T if d == 0 else 0 for d in range(D)]
        finals = tuple(states[d, k].clone() for d, k in enumerate(last))
        c_finals = tuple(cells[d, k].clone() for d, k in enumerate(last)) if cell == "lstm" else ()
        _level_setup(ctx, inputs, {"cell": cell, "coupled": coupled, "bf16": bf16}, res, also=outs)
        ctx.offset, ctx.D, ctx.C = 3, D, len(c_finals)
        ctx.sizes = (T, states.shape[2], states.shape[3], cells.shape[-1] if c_finals else 0)  # T, B, P, H
        ctx.dtype = states.dtype
        return (*outs, *finals, *c_finals, *res[1:])

    @staticmethod
    def backward(ctx, *grads):
        D, C = ctx.D, ctx.C
        g_outs, g_finals, g_c_finals = grads[:D], grads[D:2 * D], grads[2 * D:2 * D + C]
        g_cells, g_gates, g_c_pre, _ = grads[2 * D + C:]
        (T, B, P, H) = ctx.sizes  # (not the saved tensors: _level_gradients unpacks them, once)
        zeros = lambda *size: torch.zeros(size, dtype=ctx.dtype)  # noqa: E731
        g_states = g_final = None  # (None: the operator reads zeros for every slot)
        if any(g is not None for g in g_outs + g_finals):
            g_states = _stacked(g_outs, lambda: zeros(T, B, P))
            g_states = zeros(D, T, B, P) if g_states is None else g_states
            g_final = _stacked(g_finals, lambda: zeros(B, P))
        g_final_c = _stacked(g_c_finals, lambda: zeros(B, H))
        got = _level_gradients(ctx, g_states, g_cells, g_gates, g_c_pre, g_final, g_final_c,
                               out_rows=g_states is not None)[:ctx.given]
        return (None, None, None, *got)


def eager_training() -> bool:
    """Whether ``recurrent_level`` would run this call through the eager autograd Function (not traced, grad mode
    on): then ``level_outputs`` may stand in for it."""
    return torch.is_grad_enabled() and not (torch.compiler.is_compiling() or torch.compiler.is_exporting())


def level_outputs(*inputs, cell: str, coupled: bool = False):
    """An eager training call of ``recurrent_level`` (``eager_training()``, keep=True) as ``_EagerLevelOut``:
    (outs, finals, c_finals, cells, gates, c_pre, reserve) with outs, finals and c_finals one (T, B, P), one (B, P)
    and (the LSTM; else empty) one (B, H) per direction. Autocast as ``recurrent_level``."""
    bf16 = False
    if torch.is_autocast_enabled("cpu"):
        bf16 = autocast_bf16()
        inputs = tuple(t.float() if isinstance(t, torch.Tensor) and t.dtype in (torch.bfloat16, torch.float16) else t
                       for t in inputs)
    got = _EagerLevelOut.apply(cell, coupled, bf16, *inputs)
    D = inputs[FIELDS.index("w_hh") + 1].shape[0]
    C = D if cell == "lstm" else 0
    return got[:D], got[D:2 * D], got[2 * D:2 * D + C], *got[2 * D + C:]


def autocast_bf16() -> bool:
    """Whether CPU autocast is on with dtype bfloat16: the operators' bf16 mode is asked for (``csrc/ops.cpp``'s
    AutocastCPU kernel sets ``bf16=True`` the same way; ``use_bf16`` there decides whether it runs)."""
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def bf16_kernel() -> str:
    """Which kernel ``recurrent_level``'s bf16 mode (CPU autocast with bfloat16) runs on this machine: "mkl-bf16
    (amx)", or "mkl-bf16 (avx512-bf16)" where the CPU has AVX-512-BF16 but no AMX (on by default where csrc/brgemm.h's
    packed bf16 products run, which is every such CPU unless ``RNNLAB_BRGEMM=0``; else when ``RNNLAB_BF16=1`` asks for
    it: MKL's bf16 GEMM alone measured no faster than float32 there); or why it runs float32 instead: "float32 (no
    AMX; RNNLAB_BF16=1 runs the bf16 mode)", "float32 (no bf16 GEMM on this CPU)", "float32 (no bf16 GEMM in this
    BLAS)", "float32 (RNNLAB_BF16=0)" (the override that forces the float32 path). Even where it runs, small levels
    run float32 (``BF16_MIN_STEP_MACS`` in ``csrc/ops.cpp``)."""
    if _LIBRARY["path"] is None:
        return "float32 (no native operators)"
    return torch.ops.rnnlab.bf16_kernel()


def level_inference(*inputs, cell: str, coupled: bool = False, keep: bool = False):
    """The operator's overload called below autograd (torch.library's Python autograd layer costs about as much as
    the operator at batch 1), for a call that records nothing and is not traced: ``recurrent_level``'s eager
    inference, and ``fused.run_lean``, which knows both already. ``bf16`` as the AutocastCPU kernel would set it."""
    with torch._C._AutoDispatchBelowAutograd():
        return torch.ops.rnnlab.recurrent_level.default(*inputs, cell=cell, coupled=coupled, keep=keep,
                                                        bf16=autocast_bf16())


def recurrent_level(*inputs, cell: str, coupled: bool = False, keep: bool = True):
    """``torch.ops.rnnlab.recurrent_level(*inputs, cell=, coupled=)``, the same autograd, less per-call overhead
    in eager mode (``_EagerLevel``); the operator itself while torch traces. Under CPU autocast the eager path
    does what the operator's AutocastCPU kernel does (which ``_EagerLevel`` would bypass for its saved tensors):
    low-precision arguments cast up to float32, differentiably, and ``bf16=True`` under bfloat16 autocast.
    ``keep=False`` is inference: the caller asks for no gates and nothing for a backward (and of the LSTM's C the
    first and the last only: cells is (D, 2, B, H), the (T+1)-slot layout at T = 1), and no input may need
    a gradient."""
    tracing = torch.compiler.is_compiling() or torch.compiler.is_exporting()
    if tracing:  # bf16 given here too: torch.export traces above the AutocastCPU kernel, and so records it from here
        return torch.ops.rnnlab.recurrent_level(*inputs, cell=cell, coupled=coupled, keep=keep, bf16=autocast_bf16())
    if not keep or not torch.is_grad_enabled():  # inference: nothing to record
        return level_inference(*inputs, cell=cell, coupled=coupled, keep=keep)
    bf16 = False
    if torch.is_autocast_enabled("cpu"):
        bf16 = autocast_bf16()
        inputs = tuple(t.float() if isinstance(t, torch.Tensor) and t.dtype in (torch.bfloat16, torch.float16) else t
                       for t in inputs)
    return _EagerLevel.apply(cell, coupled, bf16, *inputs)


if _LIBRARY["path"] is not None:
    torch.library.register_autograd("rnnlab::recurrent_level", _level_backward, setup_context=_level_setup)
    torch.library.register_autograd("rnnlab::linear_recurrence", _linear_backward, setup_context=_linear_setup)
