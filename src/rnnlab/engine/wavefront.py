"""A stack's levels as a wavefront: ``rnnlab::recurrent_stack`` (``csrc/wavefront.h``).

The per-level operator runs a stack one level after the other: level k+1 starts when level k has run all T
steps, so a unidirectional stack keeps one core busy. ``recurrent_stack`` runs all L levels at once, each on
its own thread, over chunks of time: level k+1 runs chunk c while level k runs chunk c+1 (forward), and the
backward runs the same wavefront in reverse chunks, level k+1's input gradient (∂a · W_ih) feeding level k.
Its outputs are the per-level operator's, levels first — states (L, T+1, B, H), cells, gates, reserve — and so
are its results: the same arithmetic row for row (bitwise equal wherever BLAS sums a row of a chunk's GEMM as
it does in the whole sequence's GEMM, which MKL does for chunks of a few hundred rows; equal to rounding else).

``applies(layer, x)`` is the one rule for when the native engine uses it (``fused.run_levels``):

* ``RNNLAB_WAVEFRONT`` is not 0 (0: never; 1: also for training calls);
* two or more levels, one direction (a bidirectional level k+1 needs level k's reverse direction at t = 0,
  its last step, before its own first step: no wavefront; its two directions already run on two threads);
* the plain cells (rnn_tanh, rnn_relu, lstm, gru_before, gru_after; no LSTM projection) with or without bias
  and lengths, with or
  without inter-layer dropout (its masks are drawn here, up front, as ``F.dropout`` draws them level by level);
  the variants (layer norm, peepholes, coupled gates, recurrent dropout, zoneout) stay on the per-level path;
* float32 or float64;
* a call without backward (grad mode off, or neither x nor the weights require grad), or a training call of a
  small stack: B·H ≤ ``TRAINING_MAX_BH`` (4096 for the LSTM, 8192 for the GRU and the RNN); any training call with
  ``TRAINING`` or ``RNNLAB_WAVEFRONT=1`` (see ``TRAINING`` for the measurements behind this default);
* in eager mode also two or more torch threads (``torch.get_num_threads()``), no autocast, ``T ≥ MIN_STEPS``,
  and levels that do not run split, by unit or by row (``rnnlab::splits_level``, csrc/split.h: then each level's
  loop already runs on both cores; level after level measured 0.67-0.90× the wavefront's time in inference for the
  LSTM and the reset-after GRU at (200, 4, 32, 64) to (100, 64, 256, 256) split by unit, and 0.88-0.90× in training
  at (100, 16, 64, 128) and (100, 32, 64, 128) split by row, LSTM, GRU and RNN);
  under torch.compile the above alone (the operator runs its levels in turn on one thread); never under
  torch.export (one ``recurrent_level`` node per level, as the export documents).

Autograd: the registered backward is ``recurrent_stack_backward`` (the same wavefront, reverse chunks); a double
backward (``create_graph=True``) recomputes every level through the cells' own equations (``ops.reference_level``)
and differentiates that, as the per-level operator's does.
"""

from __future__ import annotations

import torch

from ..cells.weights import Weights
from . import ops

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru_before", "gru_after")
MIN_STEPS = 8  # below this the fill and drain of the pipeline leave nothing to overlap
# training steps (forward + backward) measured 0.85–1.13× the per-level path's time on the 2-vCPU machine the
# wavefront was written on, when its levels ran on threads of rnnlab's own (which competed for the cores with
# OpenMP's spinning worker); on OpenMP's team (csrc/threads.h), A/B in one process, 2 threads, two runs: the GRUs
# 0.72–0.96 and the RNN 0.80–0.98 from (200, 4, 32, 64) to (100, 64, 64, 128) (B·H ≤ 8192), the LSTM 0.89–1.01 to
# B·H = 4096 but 1.23 at 8192; every cell 1.11–1.20 at (100, 64, 256, 256). So training calls run it up to
# TRAINING_MAX_BH, and every training call with RNNLAB_WAVEFRONT=1 or TRAINING = True
TRAINING = False
TRAINING_MAX_BH = {"rnn_tanh": 8192, "rnn_relu": 8192, "lstm": 4096, "gru_before": 8192, "gru_after": 8192}
CHUNK = 0  # steps per chunk; 0: the operator's choice (about 256 rows of B, at least 2 steps)
CALLS = {"stack": 0}  # recurrent_stack calls made by run (tests read it)
INPUTS = ("x", "w_ih", "w_hh", "h0", "c0", "b", "b_hn", "mask", "drop")
OUTPUTS = ("states", "cells", "gates", "reserve")


def training(layer, x: torch.Tensor) -> bool:
    """Whether this call is recorded for a backward: grad mode on and the input or a parameter needs a gradient
    (also ``engine.choose``'s test for the LSTM)."""
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in layer.parameters()))


def applies(layer, x: torch.Tensor, cell: str) -> bool:
    """Whether the native engine runs this call's stack as one ``recurrent_stack`` (the rule above). While
    torch.compile traces, no thread count or T enters the decision (no guard on T; the operator runs its levels in
    turn on one thread); torch.export keeps one ``recurrent_level`` per level (the exported program's documented
    form, which the ONNX translation reads)."""
    mode = ops.env("RNNLAB_WAVEFRONT")
    if torch.compiler.is_exporting() or mode == "0":
        return False
    plain = (layer.num_layers >= 2 and layer.num_directions == 1 and cell in CELLS and not layer.active_variants()
             and not layer.options.get("coupled", False) and not getattr(layer, "proj_size", 0)
             and x.dtype in (torch.float32, torch.float64)
             and not x.is_cuda and ops.available())
    if not plain:
        return False
    recorded = training(layer, x)
    if torch.compiler.is_compiling():  # (no guard on B: a small stack's training rule is eager's only)
        return mode == "1" or TRAINING or not recorded
    forced = mode == "1" or TRAINING
    small = x.shape[1] * layer.hidden_size <= TRAINING_MAX_BH[cell]
    if recorded and not (forced or small):
        return False
    if torch.get_num_threads() < 2 or torch.is_autocast_enabled("cpu") or x.shape[0] < MIN_STEPS:
        return False
    # a level whose loop runs split (by unit or by row) already uses both cores
    return (recorded and forced) or not torch.ops.rnnlab.splits_level(cell, x.shape[1], layer.hidden_size, recorded)


if ops.library_path() is not None:

    @torch.library.register_fake("rnnlab::recurrent_stack")
    def _stack_fake(x, w_ih, w_hh, h0, c0, b, b_hn, mask, drop, *, cell, chunk=0):
        T, B, _ = x.shape
        L, H = len(w_hh), w_hh[0].shape[1]
        K = ops.reserve_width(cell, H, False, False, False)
        lstm = cell == "lstm"
        return (x.new_empty(L, T + 1, B, H), x.new_empty(L, T + 1, B, H) if lstm else x.new_empty(0),
                x.new_empty(L, T, B, ops.STORED_GATES[cell] * H), x.new_empty(L, T * B * K))

    @torch.library.register_fake("rnnlab::recurrent_stack_backward")
    def _stack_backward_fake(x, w_ih, w_hh, h0, c0, b, b_hn, mask, drop, states, cells, gates, reserve, g_states,
                             g_cells, g_gates, *, cell, chunk=0, need_x=True, need_weights=True):
        none = x.new_empty(0)
        like = lambda ts: [torch.empty_like(t) for t in ts] if need_weights else []  # noqa: E731
        return (torch.empty_like(x) if need_x else none, like(w_ih), like(w_hh), torch.empty_like(h0),
                none if c0 is None else torch.empty_like(c0), like(b), like(b_hn))


def _setup(ctx, inputs, keyword_only_inputs, output):
    x, w_ih, w_hh, h0, c0, b, b_hn, mask, drop = inputs
    ctx.cell, ctx.chunk = keyword_only_inputs["cell"], keyword_only_inputs.get("chunk", 0)
    ctx.L, ctx.nb, ctx.nbn = len(w_hh), len(b), len(b_hn)
    ctx.has = (c0 is not None, mask is not None, drop is not None)
    ctx.save_for_backward(x, *w_ih, *w_hh, h0, *(t for t in (c0, mask, drop) if t is not None), *b, *b_hn, *output)
    ctx.set_materialize_grads(False)


def _saved(ctx) -> dict:
    it = iter(ctx.saved_tensors)
    take = lambda n: [next(it) for _ in range(n)]  # noqa: E731
    v = {"x": next(it), "w_ih": take(ctx.L), "w_hh": take(ctx.L), "h0": next(it)}
    for name, has in zip(("c0", "mask", "drop"), ctx.has):
        v[name] = next(it) if has else None
    v["b"], v["b_hn"] = take(ctx.nb), take(ctx.nbn)
    v.update(zip(OUTPUTS, it))
    return v


def _any(flag) -> bool:
    return any(flag) if isinstance(flag, (list, tuple)) else bool(flag)


def _each(grads, flags):
    """A list argument's gradients: one per tensor, None where not needed (the argument's own structure)."""
    return [g if f else None for g, f in zip(grads, flags)] if len(grads) else [None] * len(flags)


def _backward(ctx, g_states, g_cells, g_gates, g_reserve):
    v = _saved(ctx)
    need = ctx.needs_input_grad  # per argument; a list argument's is a list, one flag per tensor
    if torch.is_grad_enabled():  # create_graph=True: differentiate the reference's arithmetic instead
        return _double_backward(ctx, v, (g_states, g_cells, g_gates), need)
    weights = _any(need[1]) or _any(need[2]) or _any(need[5]) or _any(need[6])
    got = torch.ops.rnnlab.recurrent_stack_backward(
        *(v[n] for n in INPUTS), *(v[n] for n in OUTPUTS), g_states, g_cells if ctx.cell == "lstm" else None,
        g_gates, cell=ctx.cell, chunk=ctx.chunk, need_x=bool(need[0]), need_weights=weights)
    dx, dw_ih, dw_hh, dh0, dc0, db, db_hn = got
    return (dx if need[0] else None, _each(dw_ih, need[1]), _each(dw_hh, need[2]), dh0 if need[3] else None,
            dc0 if v["c0"] is not None and need[4] else None, _each(db, need[5]), _each(db_hn, need[6]), None, None)


def reference_stack(cell: str, x, w_ih, w_hh, h0, c0, b, b_hn, mask, drop):
    """The operator's (states, cells, gates) (L, ...) from the cells' equations under autograd, level by level
    (``ops.reference_level``), each level's input as run_stack builds it: where(live, h, 0) · drop."""
    L, T = len(w_hh), x.shape[0]
    live = None if mask is None else (mask != 0).unsqueeze(2)
    inp, hs, cs, gs = x, [], [], []
    for k in range(L):
        w = Weights(w_ih[k], w_hh[k], b[k] if b else None, b_hn[k] if b_hn else None)
        st, ce, ga, _ = ops.reference_level(cell, False, False, inp, mask, h0[k], None if c0 is None else c0[k], w,
                                            {}, None)
        hs.append(st), cs.append(ce), gs.append(ga)
        inp = st[1:] if live is None else torch.where(live, st[1:], 0.0)
        if drop is not None and k < L - 1:
            inp = inp * drop[k]
    return torch.stack(hs), (torch.stack(cs) if c0 is not None else None), torch.stack(gs)


def _double_backward(ctx, v, grads, need):
    res = reference_stack(ctx.cell, *(v[n] for n in INPUTS))
    pairs = [(o, g) for o, g in zip(res, grads) if o is not None and g is not None]
    lists = {"x": [v["x"]], "w_ih": v["w_ih"], "w_hh": v["w_hh"], "h0": [v["h0"]],
             "c0": [v["c0"]] if v["c0"] is not None else [], "b": v["b"], "b_hn": v["b_hn"]}
    flags = {n: (list(f) if isinstance(f, (list, tuple)) else [bool(f)]) for n, f in zip(INPUTS, need)}
    wanted = [(n, i) for n in lists for i, t in enumerate(lists[n]) if flags[n][i]]
    got = torch.autograd.grad([o for o, _ in pairs], [lists[n][i] for n, i in wanted], [g for _, g in pairs],
                              create_graph=True, allow_unused=True) if wanted and pairs else [None] * len(wanted)
    result = {n: [None] * len(lists[n]) for n in lists}
    for (n, i), g in zip(wanted, got):
        result[n][i] = g
    first = lambda n: result[n][0] if result[n] else None  # noqa: E731
    return (first("x"), result["w_ih"], result["w_hh"], first("h0"), first("c0"), result["b"], result["b_hn"],
            None, None)


if ops.library_path() is not None:
    torch.library.register_autograd("rnnlab::recurrent_stack", _backward, setup_context=_setup)


def dropout_masks(layer, T: int, like: torch.Tensor) -> torch.Tensor | None:
    """Inter-layer dropout's scaled keep masks (L-1, T, B, H), or None: the draws ``F.dropout`` makes between
    the levels of the per-level path (``empty_like(out).bernoulli_(1 - p).div_(1 - p)``, level by level)."""
    p = float(layer.dropout)
    if not (p > 0 and layer.training):
        return None
    L, B, H = layer.num_layers, like.shape[1], layer.hidden_size
    if p >= 1:
        return like.new_zeros(L - 1, T, B, H)
    return torch.stack([like.new_empty(T, B, H).bernoulli_(1 - p).div_(1 - p) for _ in range(L - 1)])


def run(layer, x, hx, mask, live, cell: str, trace: bool, views):
    """The whole stack as one ``recurrent_stack`` call: (out, state tuple, traces) as ``stack.run_stack``."""
    T, L = x.shape[0], layer.num_layers
    ws = [layer.weights(k, 0) for k in range(L)]
    b = [w.bias for w in ws] if ws[0].bias is not None else []
    b_hn = [w.bias_hn for w in ws] if ws[0].bias_hn is not None else []
    drop = dropout_masks(layer, T, x)
    lstm = cell == "lstm"
    states, cells, gates, _ = torch.ops.rnnlab.recurrent_stack(
        x, [w.weight_ih for w in ws], [w.weight_hh for w in ws], hx[0], hx[1] if lstm else None, b, b_hn, mask, drop,
        cell=cell, chunk=CHUNK)
    CALLS["stack"] += 1
    traces = {} if trace else None
    finals: list[list[torch.Tensor]] = [[] for _ in hx]
    out = None
    for k in range(L):
        if k < L - 1 and not trace:  # only the top level's output is used (and masked)
            final = (states[k][T],) if not lstm else (states[k][T], cells[k][T])
        else:
            out, final, tr = views(layer, states[k], cells[k] if lstm else None, gates[k], None, live, False, trace)
            if traces is not None:
                traces[layer._suffix(k, 0)[1:]] = tr
        for f, s in zip(finals, final):
            f.append(s)
    return out, tuple(torch.stack(f) for f in finals), traces
