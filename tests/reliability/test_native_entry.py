"""The compiled loops' entry points check every argument before touching memory: called directly
with a tensor of the wrong shape, dtype, layout or device, or a wrong cell code, they raise a
ValueError/TypeError that names the argument — never read or write out of bounds. And the ReLU
RNN keeps NaN as torch.relu does (-ffast-math would let a max drop it)."""

import math
import random

import pytest
import torch

import rnnlab
from rnnlab.engine import native
from rnnlab.engine.loops import GRU_AFTER, GRU_BEFORE, LSTM, RNN_RELU, RNN_TANH

CELLS = (RNN_TANH, RNN_RELU, LSTM, GRU_BEFORE, GRU_AFTER)
G = {RNN_TANH: 1, RNN_RELU: 1, LSTM: 4, GRU_BEFORE: 3, GRU_AFTER: 3}


@pytest.fixture(scope="module")
def ext():
    mod = native.compiled()
    if mod is None:
        pytest.skip(f"the C++ loops are not built here ({native._state['error']}); the Python loops run instead")
    return mod


def forward_args(cell, T=3, B=2, H=4, dtype=torch.float32, masked=True):
    GH = G[cell] * H
    e = torch.empty(0, dtype=dtype)
    return dict(
        cell=cell, xp=torch.randn(T, B, GH, dtype=dtype), w_hhT=torch.randn(H, GH, dtype=dtype),
        b_hn=torch.randn(H, dtype=dtype) if cell == GRU_AFTER else e,
        mask=torch.ones(T, B, dtype=dtype) if masked else e, reverse=False,
        states=torch.zeros(T + 1, B, H, dtype=dtype), cells=torch.zeros(T + 1, B, H, dtype=dtype) if cell == LSTM else e,
        gates=torch.empty(T, B, GH, dtype=dtype),
        extra=torch.empty(T, B, H, dtype=dtype) if cell in (GRU_BEFORE, GRU_AFTER) else e, threads=1,
    )


def backward_args(cell, T=3, B=2, H=4, dtype=torch.float32):
    GH = G[cell] * H
    e = torch.empty(0, dtype=dtype)
    lstm, gru = cell == LSTM, cell in (GRU_BEFORE, GRU_AFTER)
    return dict(
        cell=cell, w_hh=torch.randn(GH, H, dtype=dtype), mask=e, reverse=False,
        states=torch.randn(T + 1, B, H, dtype=dtype), cells=torch.randn(T + 1, B, H, dtype=dtype) if lstm else e,
        gates=torch.rand(T, B, GH, dtype=dtype), extra=torch.randn(T, B, H, dtype=dtype) if gru else e,
        g_states=torch.randn(T + 1, B, H, dtype=dtype), g_cells=e, g_gates=e, da=torch.empty(T, B, GH, dtype=dtype),
        dhn=torch.empty(T, B, H, dtype=dtype) if cell == GRU_AFTER else e, dh0=torch.empty(B, H, dtype=dtype),
        dc0=torch.empty(B, H, dtype=dtype) if lstm else e, threads=1,
    )


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
        return t.to(rng.choice([torch.float64 if t.dtype == torch.float32 else torch.float32, torch.int64, torch.float16]))
    if kind == "strided" and t.dim() >= 2 and t.shape[-1] > 1 and t.shape[-2] > 1:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)  # same shape, not contiguous
    if kind == "fill" and not t.numel():
        return torch.zeros(5, dtype=t.dtype)
    return None


def mutations(args: dict, rng: random.Random, count: int = 12):
    """``count`` ways to break one argument: (name, the bad value)."""
    tensors = [k for k, v in args.items() if isinstance(v, torch.Tensor)]
    while count:
        k = rng.choice(tensors)
        bad = _broken(args[k], rng.choice(["grow", "shrink", "rank", "dtype", "strided", "fill"]), rng)
        if bad is not None:
            count -= 1
            yield k, bad


def call(fn, args):
    return fn(*args.values())


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_valid_calls_run(ext, cell, dtype):
    a = forward_args(cell, dtype=dtype)
    call(ext.forward_loop, a)
    assert torch.isfinite(a["states"]).all()
    b = backward_args(cell, dtype=dtype)
    call(ext.backward_loop, b)
    assert torch.isfinite(b["dh0"]).all()


def check_bad_call(ext, direction: str, cell: int, name: str, bad: torch.Tensor) -> str:
    """A direct call with argument ``name`` replaced by ``bad``: refused, naming it. Returns the error's type."""
    args = (forward_args if direction == "forward" else backward_args)(cell)
    args[name] = bad
    fn = ext.forward_loop if direction == "forward" else ext.backward_loop
    with pytest.raises((ValueError, TypeError)) as e:
        call(fn, args)
    msg = str(e.value).splitlines()[0]
    assert f"{direction}_loop: " in msg and "expected" in msg, msg
    # T, B, H and the dtype are read from these two; when one of them is wrong, the error names the first
    # argument that disagrees with it
    sizes = ("xp", "w_hhT") if direction == "forward" else ("gates", "w_hh")
    named = name in msg or (name in sizes and (any(f"{k}:" in msg for k in args) or "float32 or float64" in msg))
    assert named, (name, msg)
    return type(e.value).__name__


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_bad_tensors_are_refused_before_memory_is_touched(ext, cell, direction):
    rng = random.Random(cell * 7 + len(direction))
    args = (forward_args if direction == "forward" else backward_args)(cell)
    seen = 0
    for name, bad in mutations(args, rng):
        check_bad_call(ext, direction, cell, name, bad)
        seen += 1
    assert seen == 12


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_bad_scalars_are_refused(ext, direction):
    args = (forward_args if direction == "forward" else backward_args)(LSTM)
    fn = ext.forward_loop if direction == "forward" else ext.backward_loop
    for key, value, words in [("cell", 7, "cell: expected 0..4"), ("cell", -1, "cell: expected 0..4"),
                              ("threads", 0, "threads: expected at least 1")]:
        with pytest.raises(ValueError, match=words):
            call(fn, {**args, key: value})


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
