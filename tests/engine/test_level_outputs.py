"""The eager training path's outputs (``ops.level_outputs``): each direction's out, h_n and (LSTM) c_n as tensors
of their own, whose gradients reach ``recurrent_level_backward`` as they are (``g_states`` of T slots, with
``g_final`` and ``g_final_c``), against the operator's (T+1)-slot states and cells and the views of them that
autograd widens back to every slot."""

import pytest
import torch

import rnnlab
from rnnlab.engine import fused, ops

from .test_ops import CELLS, level_args

pytestmark = pytest.mark.skipif(not ops.available(), reason="the native operators are not built")


def _slots_form(args, kwargs):
    """out, h_n and c_n per direction as views of the operator's states and cells (the path before
    level_outputs)."""
    states, cells, *_ = ops.recurrent_level(*args, **kwargs)
    T = states.shape[1] - 1
    D = states.shape[0]
    outs = [states[0, 1:] if d == 0 else states[1, :T] for d in range(D)]
    finals = [states[0, T] if d == 0 else states[1, 0] for d in range(D)]
    c_finals = [cells[0, T] if d == 0 else cells[1, 0] for d in range(D)] if cells.numel() else []
    return outs, finals, c_finals, cells


def _grads(form, args, kwargs, seed):
    outs, finals, c_finals, cells = form(args, kwargs)
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.rand(o.shape, dtype=o.dtype, generator=g)).sum() for o in outs)
    loss = loss + sum((f * torch.rand(f.shape, dtype=f.dtype, generator=g)).sum() for f in finals)
    loss = loss + sum((c * torch.rand(c.shape, dtype=c.dtype, generator=g)).sum() for c in c_finals)
    if cells.numel():  # the cells' own slots too (the traces' C): g_cells beside g_final_c
        loss = loss + (cells[:, 2] * 0.5).sum()
    inputs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    kept = [o.detach() for o in outs] + [f.detach() for f in finals] + [c.detach() for c in c_finals]
    return kept + list(torch.autograd.grad(loss, inputs))


def _outputs_form(args, kwargs):
    outs, finals, c_finals, cells, *_ = ops.level_outputs(*args, **kwargs)
    return outs, finals, c_finals, cells


CASES = [(cell, lengths, D, variants) for cell in CELLS for lengths in (False, True) for D in (1, 2)
         for variants in (False, True) if not variants or cell in ("lstm", "gru_before", "gru_after")]


@pytest.mark.parametrize("cell,lengths,D,variants", CASES, ids=str)
def test_level_outputs_give_the_slots_forms_values_and_gradients_bit_for_bit(cell, lengths, D, variants):
    args, kwargs = level_args(cell, torch.float64, lengths, D, variants, T=5, B=3, H=4, X=3)
    want = _grads(_slots_form, args, kwargs, seed=1)
    got = _grads(_outputs_form, args, kwargs, seed=1)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


@pytest.mark.parametrize("D", [1, 2])
def test_projected_lstm_level_outputs_match_the_slots_form(D):
    args, kwargs = level_args("lstm", torch.float64, True, D, False, H=4, P=2)
    for a, b in zip(_grads(_outputs_form, args, kwargs, 2), _grads(_slots_form, args, kwargs, 2)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru_after"])
def test_level_outputs_pass_gradcheck_and_gradgradcheck(cell):
    args, kwargs = level_args(cell, torch.float64, True, 2, False, T=3, B=3, H=2, X=2)
    pos = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]

    def f(*free):
        full = list(args)
        for i, t in zip(pos, free):
            full[i] = t
        outs, finals, c_finals, *_ = ops.level_outputs(*full, **kwargs)
        return (*outs, *finals, *c_finals)

    free = [args[i].detach().clone().requires_grad_() for i in pos]
    assert torch.autograd.gradcheck(f, free)
    assert torch.autograd.gradgradcheck(f, free)  # create_graph: the T-slot gradients widened to every slot


def test_an_unused_output_gets_no_gradient_and_h_n_alone_still_reaches_the_weights():
    args, kwargs = level_args("gru_after", torch.float64, False, 2, False)
    outs, finals, c_finals, *_ = ops.level_outputs(*args, **kwargs)
    assert c_finals == ()
    (dw,) = torch.autograd.grad(finals[1].sum(), [args[1]])
    states = ops.recurrent_level(*args, **kwargs)[0]
    (want,) = torch.autograd.grad(states[1, 0].sum(), [args[1]])
    assert torch.equal(dw, want)


def test_an_in_place_change_to_out_is_refused_at_backward_and_h_n_is_its_own_tensor():
    args, kwargs = level_args("lstm", torch.float32, False, 1, False)
    outs, finals, c_finals, cells, *_ = ops.level_outputs(*args, **kwargs)
    assert finals[0].data_ptr() != outs[0][-1].data_ptr()
    assert c_finals[0].data_ptr() != cells[0, -1].data_ptr()
    h_last = outs[0][-1].clone()
    finals[0].add_(1.0)  # h_n is a copy: out keeps its values
    assert torch.equal(outs[0][-1], h_last)
    outs[0].mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        outs[0].sum().backward()


def test_backward_operator_reads_the_output_rows_with_g_final_as_every_slot():
    args, kwargs = level_args("lstm", torch.float64, True, 2, False, T=4, B=3, H=3)
    res = [t.detach() for t in ops.recurrent_level(*args, **kwargs)]
    states = res[0]
    D, T = states.shape[0], states.shape[1] - 1
    g = torch.Generator().manual_seed(3)
    rows = torch.rand(D, T, *states.shape[2:], dtype=torch.float64, generator=g)
    final = torch.rand(D, *states.shape[2:], dtype=torch.float64, generator=g)
    wide = torch.zeros_like(states)
    wide[0, 1:], wide[1, :T] = rows[0], rows[1]
    wide[0, T] += final[0]
    wide[1, 0] += final[1]
    plain = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    op = torch.ops.rnnlab.recurrent_level_backward
    common = dict(cell="lstm", need_x=True, need_weights=True)
    cells = torch.rand(res[1].shape, dtype=torch.float64, generator=g)
    c_last = torch.rand(D, *res[1].shape[2:], dtype=torch.float64, generator=g)
    wide_cells = cells.clone()
    wide_cells[0, T] += c_last[0]
    wide_cells[1, 0] += c_last[1]
    want = op(*plain[:17], *res, wide, wide_cells, None, None, None, **common)
    rows_form = dict(common, g_final=final, g_final_c=c_last, out_rows=True)
    got = op(*plain[:17], *res, rows, cells, None, None, None, **rows_form)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    last_only = torch.zeros_like(cells)  # c_n's gradient alone: every other cell slot's is zero
    last_only[0, T], last_only[1, 0] = c_last[0], c_last[1]
    want = op(*plain[:17], *res, wide, last_only, None, None, None, **common)
    got = op(*plain[:17], *res, rows, None, None, None, None, **rows_form)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="g_final: expected None"):
        op(*plain[:17], *res, wide, None, None, None, None, g_final=final, **common)
    # the output rows' form is asked for, never read off the shape: T slots without out_rows is a wrong shape
    with pytest.raises(ValueError, match="g_states: expected shape"):
        op(*plain[:17], *res, rows, None, None, None, None, **common)
    with pytest.raises(ValueError, match="g_states: expected shape"):
        op(*plain[:17], *res, wide, None, None, None, None, out_rows=True, **common)
    with pytest.raises(ValueError, match="g_final: expected shape"):
        op(*plain[:17], *res, rows, None, None, None, None, g_final=final[:, :2], out_rows=True, **common)


def test_g_final_c_is_refused_for_a_cell_without_c():
    args, kwargs = level_args("gru_after", torch.float64, False, 1, False, T=3, B=2, H=3)
    res = [t.detach() for t in ops.recurrent_level(*args, **kwargs)]
    plain = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    rows = torch.zeros(1, 3, 2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="g_final_c: expected None for cell 'gru_after'"):
        torch.ops.rnnlab.recurrent_level_backward(*plain[:17], *res, rows, None, None, None, None, cell="gru_after",
                                                  g_final_c=torch.zeros(1, 2, 3, dtype=torch.float64), out_rows=True)


@pytest.mark.parametrize("make", [lambda: rnnlab.LSTM(3, 256, 2, bidirectional=True, engine="native"),
                                  lambda: rnnlab.GRU(3, 256, engine="native"),
                                  lambda: rnnlab.LSTM(3, 256, proj_size=128, engine="native")])
@pytest.mark.parametrize("loop", ["auto", "split", "rows"])
def test_layers_from_the_size_rule_on_run_level_outputs_with_the_views_results(make, loop, monkeypatch):
    """A layer's eager training call from T·B·H = fused.OUTPUT_ROWS_MIN runs ops.level_outputs, and its out, h_n,
    c_n and every gradient are bit for bit those of the views' path (the rule set out of reach): on the loop the
    operator picks, split by unit (csrc/split.h's backward parts read the output rows too) and split by row."""
    if loop != "auto":
        monkeypatch.setenv("RNNLAB_SPLIT", "1" if loop == "split" else "0")
        monkeypatch.setenv("RNNLAB_ROWS", "1" if loop == "rows" else "0")
    torch.manual_seed(0)
    layer = make().double()
    x = torch.randn(16, 16, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.randint(1, 17, (16,))
    lengths[0] = 16
    assert 16 * 16 * 256 >= fused.OUTPUT_ROWS_MIN
    calls = []
    real = ops.level_outputs
    monkeypatch.setattr(ops, "level_outputs", lambda *a, **k: calls.append(1) or real(*a, **k))

    def run():
        out, state = layer(x, lengths=lengths)
        parts = state if isinstance(state, tuple) else (state,)
        g = torch.Generator().manual_seed(1)
        loss = sum((t * torch.rand(t.shape, dtype=t.dtype, generator=g)).sum() for t in (out, *parts))
        return [out, *parts, *torch.autograd.grad(loss, [x, *layer.parameters()])]

    new = run()
    assert calls
    monkeypatch.setattr(fused, "OUTPUT_ROWS_MIN", 1 << 60)
    calls.clear()
    old = run()
    assert not calls
    for a, b in zip(new, old):
        assert torch.equal(a, b)
