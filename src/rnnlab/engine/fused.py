"""The native engine: hand-written BPTT, one ``rnnlab::recurrent_level`` operator call per level.

The operator (``ops.py``; its kernels in ``csrc/``: the driver ``driver.h`` and one unit per cell,
``csrc/cells/{rnn,lstm,gru}.h``) runs both directions of a level, forward and backward:

    forward   xp = x · W_ihᵀ                      one GEMM per chunk of steps, into a cache-sized buffer
              per step: h_{t-1} · W_hhᵀ (GEMM) and the cell's fused pointwise pass (which adds b)
              kept: activated gates (T, B, G·H), states (T+1, B, H) with h[0] = h_0
    backward  per step: the cell's derivatives ∂a, one GEMM for ∂h_{t-1}
              ∂W_ih = ∂aᵀ · x,  ∂x = ∂a · W_ih,  ∂b = Σ ∂a,  ∂W_hh = ∂aᵀ · h_{t-1}
              each one GEMM or reduction over all T·B rows

An eager training call of a level of T·B·H ≥ ``OUTPUT_ROWS_MIN`` (``ops.level_outputs``) hands the layer each
direction's out as a slice of the kept states and h_n (and the LSTM's c_n) as copies, each a tensor of its own to
autograd, so that their gradients reach the backward operator as they come, not widened by autograd to every state
slot.

Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` the operators run their bf16 mode: bf16 GEMM operands,
float32 accumulation, pointwise maths and state (``csrc/ops.cpp``'s ``use_bf16``; ``ops.bf16_kernel()``).

This file turns a layer's call into the operator's named fields: the cell's kernel and the variants
it computes come from the cell's ``SPEC``; the stacking is ``stack.run_stack``'s. Without the compiled
operators (no compiler at install) the native engine runs the reference engine, with one warning;
on CUDA tensors it runs torch's cuDNN kernel where that computes the same function, else the
reference engine.
"""

from __future__ import annotations

import functools

import torch

from ..cells import variants
from . import ops, wavefront
from .reference import ReferenceEngine
from .stack import run_stack
from .torch_kernel import TorchEngine, unsupported

# ops.level_outputs saves a zero fill and a copy of every state slot per level and direction, and costs a fixed
# 20-55 µs more per training call than the views (a 1-step LSTM at H = 8, blocks of 300 calls interleaved, 2026-12-03:
# min 807 against 785 µs, median 1018 against 963): so it runs from T·B·H of 2^16, where the fill and copy it saves
# (a quarter of a MB each at least) cost about that
OUTPUT_ROWS_MIN = 1 << 16

_REFERENCE = ReferenceEngine()
_TORCH = TorchEngine()


def kernel(layer) -> str:
    """The native kernel that computes this layer's cell (``csrc/ops.cpp``'s ``cell`` argument)."""
    return layer.cell_class.SPEC.kernel(layer.options)


def _views(layer, states, cells, gates, c_pre, live, reverse: bool, trace: bool):
    """One direction's out (T, B, H), final state and traces, as views of the operator's outputs."""
    T = states.shape[0] - 1
    out = states[:T] if reverse else states[1:]  # the reverse direction keeps h_t in slot t
    return _shown(layer, out, states[0 if reverse else T], None, cells, gates, c_pre, live, reverse, trace)


def _shown(layer, out, h_n, c_n, cells, gates, c_pre, live, reverse: bool, trace: bool):
    """One direction's out (T, B, H), final state and traces, from its out, h_n and c_n (None: a view of cells)
    and the operator's other outputs (views of those)."""
    T = out.shape[0]
    if cells is not None and c_n is None:
        # C: (T+1) slots, or in inference its first and last only (the operator's keep=False): the last is slot -1
        c_n = cells[0 if reverse else -1]
    final = (h_n,) if cells is None else (h_n, c_n)
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


def _directions(t: torch.Tensor, D: int) -> tuple:
    """An operator output (D, ...) as one tensor per direction: a view for one direction, ``unbind`` for two
    (their backward is one copy; indexing each direction would build a zero-filled gradient per index)."""
    if t.dim() < 2:  # an absent output (0,)
        return (t,) * D
    return (t.view(t.shape[1:]),) if D == 1 else t.unbind(0)


def level_fields(layer, k: int, inp: torch.Tensor, states: list, T: int) -> dict:
    """Level k's per-direction fields for the operator (``ops.FIELDS`` but ``mask``): one tensor per field with
    the directions first (a view for one direction, a stack for two), or None where the field is absent.
    Draws recurrent dropout's and zoneout's masks in the reference engine's order."""
    per: dict[str, list] = {name: [] for name in ops.FIELDS if name != "mask"}
    for d, state in enumerate(states):
        step = layer.step_arguments(k, d, inp.shape[1])
        extra = step.get("extra", {})
        w = layer.weights(k, d)
        values = dict(w_ih=w.weight_ih, w_hh=w.weight_hh, h0=state[0], c0=state[1] if len(state) > 1 else None,
                      b=w.bias, b_hn=w.bias_hn, peep=extra.get("weight_peep"), h_mask=step.get("h_mask"),
                      zone=zoneout_masks(layer, T, inp, d == 1), w_hr=w.weight_hr,
                      **{short: extra.get(name) for short, name in ops.LN_NAMES.items()})
        for name, t in values.items():
            if t is not None:
                per[name].append(t)
    return {name: (None if not ts else ts[0].unsqueeze(0) if len(ts) == 1 else torch.stack(ts))
            for name, ts in per.items()}


def keep(args, fields: dict, trace: bool) -> bool:
    """Whether a level's call keeps its gates and what its backward reads: with traces, under autograd with an
    input that needs a gradient, and with layer norm or zoneout (which read theirs at every step); else it is
    inference, and the operator keeps one step's gates, overwritten (``keep=False``)."""
    if trace or fields["ln_hh_w"] is not None or fields["zone"] is not None:
        return True
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args)


def lean(layer, x, lengths, trace) -> bool:
    """Whether a call takes ``run_lean``: inference (autograd off) of a one-direction layer with no variant in force and
    whole sequences, outside tracing, with the library's direct entry (``ops.lean_forward``). These are the latency
    calls (batch 1, small batches), where the general path's Python (named fields per level, views, the stacking
    driver) cost more than the operator; ``latency.forward`` takes most of them before the layer's own checks.
    ``RNNLAB_LEAN=0`` turns it off."""
    return (lengths is None and not trace and not torch.is_grad_enabled() and layer.num_directions == 1
            and not layer.active_variants() and not torch.compiler.is_compiling()
            and not torch.compiler.is_exporting() and ops.direct_available() and ops.env("RNNLAB_LEAN", "1") != "0")


@functools.lru_cache(maxsize=256)
def _level_names(start: int, stop: int, bias: bool, bias_hn: bool, proj: bool) -> tuple:
    return tuple(name for k in range(start, stop)
                 for name in ("weight_ih_l%d" % k, "weight_hh_l%d" % k, bias and "bias_l%d" % k or None,
                              bias_hn and "bias_hn_l%d" % k or None, proj and "weight_hr_l%d" % k or None))


def _names(layer, levels: range) -> tuple:
    """Per level the names of (w_ih, w_hh, b, b_hn, w_hr), flat, None where the layer has no such parameter."""
    return _level_names(levels.start, levels.stop, bool(layer.bias), bool(layer._has_bias_hn()),
                        bool(getattr(layer, "proj_size", 0)))


def lean_weights(layer, levels: range) -> list:
    """Per level (w_ih, w_hh, b, b_hn, w_hr), flat, as ``layer.weights`` reads them (None where absent): the module's
    own parameters, else the attribute (a parametrization). Read on every call, never kept: changes of any kind
    (in place, through ``.data``, replaced parameters) are seen as the general path sees them."""
    own = getattr(layer, "_parameters", None)
    if own is None:  # not a module (rnnlab.nn's TorchStack: its weights converted per call)
        return [t for k in levels for t in layer.weights(k, 0)]
    out = []
    for name in _names(layer, levels):
        t = None if name is None else own.get(name)
        out.append(t if t is not None or name is None else getattr(layer, name))
    return out


def run_lean(layer, x, hx, cell):
    """``run_levels`` for a ``lean`` call: the library's ``lean_forward``, per level one inference call of the
    operator (keep=False), each level's states the next level's input; with dropout between levels (a layer in
    training mode under no_grad) a call per level, dropout drawn between them as the general path draws it. Same
    results as the general path: the same operator on the same tensors. ``hx``: the (L, B, ·) state parts, or None
    for zeros."""
    L = layer.num_layers
    h0, c0 = (None, None) if hx is None else (hx[0], hx[1] if len(hx) > 1 else None)
    if not (layer.dropout > 0 and layer.training and L > 1):
        out, h_n, c_n = ops.lean_forward(x, lean_weights(layer, range(L)), h0, c0, cell)
        return out, (h_n, c_n) if cell == "lstm" else (h_n,), None
    finals: list[list[torch.Tensor]] = [[], []]
    inp = x

    def level(t, k):  # level k's part of a state, or None (zeros)
        return None if t is None else t[k:k + 1]

    for k in range(L):
        inp, h_n, c_n = ops.lean_forward(inp, lean_weights(layer, range(k, k + 1)), level(h0, k), level(c0, k), cell)
        finals[0].append(h_n)
        finals[1].append(c_n)
        if k < L - 1:
            inp = torch.nn.functional.dropout(inp, layer.dropout, training=True)
    finals = finals if cell == "lstm" else finals[:1]
    return inp, tuple(torch.cat(f) for f in finals), None


def run_levels(layer, x, hx, lengths, trace):
    """The stack through ``stack.run_stack``, each level (both directions) one operator call; or, where
    ``wavefront.applies`` (unidirectional plain stacks of 2+ levels on 2+ threads), all levels in one
    ``recurrent_stack`` call that runs them as a wavefront on threads, with the same results; or, for
    inference calls that are ``lean``, ``run_lean``."""
    T, D = x.shape[0], layer.num_directions
    cell, coupled = kernel(layer), bool(layer.options.get("coupled", False))
    mask = live = None
    if lengths is not None:
        live = (torch.arange(T, device=x.device).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(2)  # (T, B, 1)
        mask = live.squeeze(2).to(x.dtype)  # (T, B)
    lean_call = lean(layer, x, lengths, trace)
    if lean_call and layer.num_layers == 1:  # (the wavefront never runs one level: skip its test)
        return run_lean(layer, x, hx, cell)
    if wavefront.applies(layer, x, cell):
        return wavefront.run(layer, x, hx, mask, live, cell, trace, _views)
    if lean_call:
        return run_lean(layer, x, hx, cell)

    def level(k, inp, states):
        f = level_fields(layer, k, inp, states, T)
        args = (inp, *(mask if n == "mask" else f[n] for n in ops.FIELDS))
        kept = keep(args, f, trace)
        lstm, zone = cell == "lstm", f["zone"] is not None
        if kept and ops.eager_training() and T * x.shape[1] * layer.hidden_size >= OUTPUT_ROWS_MIN:
            # each direction's out, h_n (and c_n) as the layer shows them (ops.level_outputs)
            outs, finals, c_finals, *res = ops.level_outputs(*args, cell=cell, coupled=coupled)
            cells, gates, c_pre = (_directions(t, D) for t in res[:3])
            return [_shown(layer, outs[d], finals[d], c_finals[d] if lstm else None, cells[d] if lstm else None,
                           gates[d], c_pre[d] if zone and lstm else None, live, d == 1, trace) for d in range(D)]
        res = ops.recurrent_level(*args, cell=cell, coupled=coupled, keep=kept)
        out_states, cells, gates, c_pre = (_directions(t, D) for t in res[:4])  # each output is (D, ...)
        return [_views(layer, out_states[d], cells[d] if lstm else None, gates[d], c_pre[d] if zone and lstm else None,
                       live, d == 1, trace) for d in range(D)]

    return run_stack(layer, x, hx, lengths, trace, level=level)


class NativeEngine:
    """Hand-written BPTT: the compiled operators on CPU (the reference engine without them; cuDNN or the
    reference engine on CUDA)."""

    name = "native"

    def _fallback(self, layer, x, trace):
        """The engine that runs instead of the operators, or None when they run."""
        if x.is_cuda:
            return _TORCH if unsupported(layer, trace) is None else _REFERENCE
        if not ops.available():
            ops.warn_unavailable()
            return _REFERENCE
        return None

    def path(self, x: torch.Tensor, layer=None) -> str:
        if x.is_cuda:
            return "torch-cudnn" if layer is not None and unsupported(layer, False) is None else "reference"
        return "native-cpp" if ops.available() else "reference"

    def run(self, layer, x, hx, lengths, trace):
        active = layer.cell_class.SPEC.not_native(layer.active_variants())
        if active:  # every variant of LSTM and GRU is computed; a cell that gains one must say so in its SPEC
            raise ValueError(f"engine: 'native' cannot compute {type(layer).__name__} with "
                             f"{', '.join(f'{k}={v!r}' for k, v in active.items())}; expected engine='auto' or 'reference'")
        other = self._fallback(layer, x, trace)
        if other is not None:
            return other.run(layer, x, hx, lengths, trace)
        return run_levels(layer, x, hx, lengths, trace)
