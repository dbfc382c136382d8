"""The native operators check every argument before touching memory: called directly (torch.ops.rnnlab.*) with
a tensor of the wrong shape, dtype or rank, a list of the wrong length, or an unknown cell, they raise a
ValueError/TypeError that names the argument — never read or write out of bounds. A non-contiguous tensor of
the right shape is accepted and gives the same result. And the ReLU RNN keeps NaN as torch.relu does
(-ffast-math would let a max drop it)."""

import math
import random

import pytest
import torch

import rnnlab
from rnnlab.engine import ops

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru_before", "gru_after")
G = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru_before": 3, "gru_after": 3}


@pytest.fixture(scope="module", autouse=True)
def built():
    if not ops.available():
        pytest.skip(f"the native operators are not built here ({ops._LIBRARY['error']})")


def level_args(cell, T=3, B=2, H=4, X=3, D=2, dtype=torch.float64, variants=True):
    """Valid arguments of rnnlab::recurrent_level: every variant the cell has on (layer norm, zoneout,
    recurrent dropout; the LSTM's peepholes), lengths, two directions (each field's first dimension)."""
    r = lambda *s: torch.rand(D, *s, dtype=dtype)  # noqa: E731
    lstm, gru = cell == "lstm", cell.startswith("gru")
    GH = G[cell] * H
    on = variants and (lstm or gru)
    return dict(
        x=torch.rand(T, B, X, dtype=dtype), w_ih=r(GH, X), w_hh=r(GH, H), h0=r(B, H), c0=r(B, H) if lstm else None,
        b=r(GH), b_hn=r(H) if cell == "gru_after" else None,
        mask=torch.tensor([[1, 1], [1, 0], [1, 0]], dtype=dtype)[:T], peep=r(3 * H) if on and lstm else None,
        h_mask=r(B, H) if on else None, ln_ih_w=r(GH) if on else None, ln_ih_b=r(GH) if on else None,
        ln_hh_w=r(GH) if on else None, ln_hh_b=r(GH) if on else None, ln_c_w=r(H) if on and lstm else None,
        ln_c_b=r(H) if on and lstm else None,
        zone=(torch.rand(D, T, 2 if lstm else 1, B, H) < 0.3).to(dtype) if on else None)


def backward_args(cell, **kw):
    """Valid arguments of rnnlab::recurrent_level_backward, from a forward call."""
    args = level_args(cell, **kw)
    out = torch.ops.rnnlab.recurrent_level(*args.values(), cell=cell)
    names = ("states", "cells", "gates", "c_pre", "reserve")
    args.update(zip(names, out))
    lstm = cell == "lstm"
    args["g_states"] = torch.randn_like(args["states"])
    args["g_cells"] = torch.randn_like(args["cells"]) if lstm else None
    args["g_gates"] = torch.randn_like(args["gates"])
    args["g_c_pre"] = torch.randn_like(args["c_pre"]) if lstm and args["c_pre"].numel() else None
    return args


def _broken(t: torch.Tensor, kind: str, rng: random.Random) -> torch.Tensor | None:
    """``t`` broken in one way (None when that way does not apply to it)."""
    if kind == "grow" and t.dim():
        d = rng.randrange(t.dim())
        return torch.zeros(*[s + (1 if i == d else 0) for i, s in enumerate(t.shape)], dtype=t.dtype)
    if kind == "shrink" and t.numel():
        d = rng.randrange(t.dim())
        return torch.zeros(*[max(s - 1, 0) if i == d else s for i, s in enumerate(t.shape)], dtype=t.dtype)
    if kind == "rank" and t.numel():
        return t.reshape(-1) if t.dim() != 1 else t.reshape(1, -1)
    if kind == "dtype" and t.numel():
        return t.to(rng.choice([torch.float32, torch.int64, torch.float16]))
    return None


def slots(args: dict):
    """Every tensor argument's name."""
    return [k for k, v in args.items() if isinstance(v, torch.Tensor)]


def call(op, args, cell):
    return op(*args.values(), cell=cell)


OPS = {"forward": (level_args, lambda: torch.ops.rnnlab.recurrent_level),
       "backward": (backward_args, lambda: torch.ops.rnnlab.recurrent_level_backward)}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variants", [False, True])
def test_valid_calls_run(cell, dtype, variants):
    a = backward_args(cell, dtype=dtype, variants=variants)
    assert torch.isfinite(a["states"]).all()
    grads = call(torch.ops.rnnlab.recurrent_level_backward, a, cell)
    assert torch.isfinite(grads[0]).all() and torch.isfinite(grads[3]).all()


def mutations(args: dict, rng: random.Random, count: int | None = None):
    """Ways to break one tensor argument: (name, the bad value); every tensor broken every way that applies
    to it, or ``count`` drawn at random."""
    names = slots(args)
    if count is None:
        for name in names:
            for kind in ("grow", "shrink", "rank", "dtype"):
                bad = _broken(args[name], kind, rng)
                if bad is not None:
                    yield name, bad
        return
    while count:
        name = rng.choice(names)
        bad = _broken(args[name], rng.choice(["grow", "shrink", "rank", "dtype"]), rng)
        if bad is not None:
            count -= 1
            yield name, bad


def check_bad_call(direction: str, cell: str, args: dict, name: str, bad: torch.Tensor) -> str:
    """A direct call with argument ``name`` replaced by ``bad``: refused, naming it (or, for the tensors T, B,
    X, D and H are read from, the first argument that disagrees with them). Returns the error's type."""
    with pytest.raises((ValueError, TypeError)) as e:
        call(OPS[direction][1](), {**args, name: bad}, cell)
    msg = str(e.value).splitlines()[0]
    assert msg.startswith(f"rnnlab::recurrent_level{'_backward' if direction == 'backward' else ''}: "), msg
    assert "expected" in msg, msg
    assert f" {name}:" in msg or (name in ("x", "w_hh") and any(f" {n}:" in msg for n in slots(args))), (name, msg)
    return type(e.value).__name__


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_bad_tensors_are_refused_before_memory_is_touched(cell, direction):
    """Every tensor argument, broken each way that applies: refused with its name."""
    args = OPS[direction][0](cell)
    seen = [check_bad_call(direction, cell, args, name, bad)
            for name, bad in mutations(args, random.Random(len(cell) * 7 + len(direction)))]
    assert len(seen) > 20


@pytest.mark.parametrize("cell", CELLS)
def test_fields_the_cell_does_not_have_are_refused(cell):
    """A field given where the cell has none (the RNN's c0, a GRU's peepholes, b_hn before reset="after") is refused
    by name, never ignored."""
    args = level_args(cell)
    extra = {"c0": args["h0"], "peep": torch.rand(2, 12, dtype=torch.float64), "b_hn": torch.rand(2, 4, dtype=torch.float64)}
    for name, value in extra.items():
        if args[name] is not None:
            continue
        with pytest.raises(ValueError, match=f"{name}: expected None"):
            call(torch.ops.rnnlab.recurrent_level, {**args, name: value}, cell)


def test_unknown_cells_and_misplaced_options_are_refused():
    args = level_args("lstm")
    with pytest.raises(ValueError, match="cell: expected one of 'rnn_tanh', 'rnn_relu', 'lstm'"):
        call(torch.ops.rnnlab.recurrent_level, args, "gru")
    gru = level_args("gru_before")
    with pytest.raises(ValueError, match="coupled: expected False for cell 'gru_before'"):
        torch.ops.rnnlab.recurrent_level(*gru.values(), cell="gru_before", coupled=True)


@pytest.mark.parametrize("cell", CELLS)
def test_non_contiguous_tensors_give_the_same_result(cell):
    args = level_args(cell)
    want = call(torch.ops.rnnlab.recurrent_level, args, cell)
    strided = {k: (v.transpose(-1, -2).contiguous().transpose(-1, -2) if isinstance(v, torch.Tensor) and v.dim() >= 2
                   else v) for k, v in args.items()}
    got = call(torch.ops.rnnlab.recurrent_level, strided, cell)
    for a, b in zip(want, got):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_linear_recurrence_refuses_bad_tensors():
    r = lambda *s: torch.rand(*s, dtype=torch.float64)  # noqa: E731
    mask = torch.tensor([[1, 1], [1, 0], [1, 0]], dtype=torch.float64)
    args = dict(a=r(3, 2, 4), b=r(3, 2, 4), h0=r(2, 4), mask=mask)
    torch.ops.rnnlab.linear_recurrence(*args.values(), reverse=True)  # valid: runs
    rng = random.Random(3)
    for name in args:
        for kind in ("grow", "shrink", "dtype"):
            bad = _broken(args[name], kind, rng)
            with pytest.raises((ValueError, TypeError)) as e:
                torch.ops.rnnlab.linear_recurrence(*{**args, name: bad}.values(), reverse=True)
            msg = str(e.value).splitlines()[0]
            assert msg.startswith("rnnlab::linear_recurrence: ") and "expected" in msg, msg
            assert f" {name}:" in msg or (name == "a" and any(f" {k}:" in msg for k in args)), (name, msg)


@pytest.mark.parametrize("special", [math.nan, math.inf, -math.inf])
def test_relu_rnn_keeps_nan_like_torch(special):
    torch.manual_seed(0)
    layer = rnnlab.RNN(3, 4, nonlinearity="relu", engine="native")
    ref = rnnlab.RNN(3, 4, nonlinearity="relu", engine="reference")
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(5, 2, 3)
    x[1, 0, 0] = special
    out, _ = layer(x)
    out_r, _ = ref(x)
    torch.testing.assert_close(out, out_r, equal_nan=True)
    g = torch.autograd.grad(out.sum(), list(layer.parameters()))
    g_r = torch.autograd.grad(out_r.sum(), list(ref.parameters()))
    for a, b in zip(g, g_r):
        torch.testing.assert_close(a, b, equal_nan=True)
