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


def variant_args(loop: str, T=3, B=2, H=4, dtype=torch.float64):
    """Valid arguments of a variant loop with every variant on (layer norm, zoneout, recurrent dropout; the
    LSTM's peepholes): ``lstm_forward_loop`` and the others, as the native engine calls them."""
    e = torch.empty(0, dtype=dtype)
    z = lambda *s: torch.zeros(*s, dtype=dtype)  # noqa: E731
    r = lambda *s: torch.rand(*s, dtype=dtype)  # noqa: E731
    keep = lambda S: (torch.rand(T, S, B, H) < 0.3).to(dtype)  # noqa: E731
    if loop.startswith("lstm"):
        G = 4 * H
        norm = [r(G), r(G), r(H), r(H), z(T, B, G), z(T, B), z(T, B, H), z(T, B)]
        common = dict(peep=r(3 * H), coupled=False, h_mask=r(B, H), mask=torch.ones(T, B, dtype=dtype), reverse=False)
        if loop == "lstm_forward_loop":
            return dict(xp=r(T, B, G), w_hhT=r(H, G), **common, states=z(T + 1, B, H), cells=z(T + 1, B, H),
                        gates=z(T, B, G), threads=1, norm=norm, zone=keep(2), c_pre=z(T, B, H))
        return dict(w_hh=r(G, H), **common, states=r(T + 1, B, H), cells=r(T + 1, B, H), gates=r(T, B, G),
                    g_states=r(T + 1, B, H), g_cells=e, g_gates=e, da=z(T, B, G), dh0=z(B, H), dc0=z(B, H), threads=1,
                    norm=norm + [z(T, B, G), z(G), z(G), z(H), z(H)], zone=keep(2), c_pre=r(T, B, H), g_cpre=r(T, B, H))
    G = 3 * H
    norm = [r(G), r(G), z(T, B, 2 * H), z(T, B), z(T, B, H), z(T, B)]  # reset="before"
    if loop == "gru_forward_loop":
        return dict(cell=GRU_BEFORE, xp=r(T, B, G), w_hhT=r(H, G), b_hn=e, h_mask=r(B, H), mask=e, reverse=False,
                    states=z(T + 1, B, H), cells=e, gates=z(T, B, G), extra=z(T, B, H), threads=1, norm=norm, zone=keep(1))
    return dict(cell=GRU_BEFORE, w_hh=r(G, H), h_mask=r(B, H), mask=e, reverse=False, states=r(T + 1, B, H), cells=e,
                gates=r(T, B, G), extra=r(T, B, H), g_states=r(T + 1, B, H), g_cells=e, g_gates=e, da=z(T, B, G), dhn=e,
                dh0=z(B, H), dc0=e, threads=1, norm=norm + [z(T, B, G), z(G), z(G)], zone=keep(1))


VARIANT_LOOPS = ("lstm_forward_loop", "lstm_backward_loop", "gru_forward_loop", "gru_backward_loop")
NORM_NAMES = {"lstm": ["g_hh", "b_hh", "g_c", "b_c", "uhat", "urstd", "chat", "crstd", "dhh", "dg_hh", "db_hh", "dg_c", "db_c"],
              "gru": ["g_hh", "b_hh", "uhat", "urstd", "nhat", "nrstd", "dhh", "dg_hh", "db_hh"]}  # the norm list's entries, by name


@pytest.mark.parametrize("loop", VARIANT_LOOPS)
def test_variant_loops_refuse_bad_layer_norm_and_zoneout_tensors(ext, loop):
    """Each of layer norm's tensors, zoneout's masks and c_pre, grown, shrunk or of another dtype: refused by name.
    A norm list of the wrong length is refused too."""
    fn = getattr(ext, loop)
    args = variant_args(loop)
    call(fn, args)  # valid: runs
    assert torch.isfinite(args["states" if "forward" in loop else "dh0"]).all()
    rng = random.Random(len(loop))
    names = ["zone"] + (["c_pre"] if loop.startswith("lstm") else []) + [f"norm[{k}]" for k in range(len(args["norm"]))]
    for name in names:
        for kind in ("grow", "shrink", "dtype"):
            bad_args = variant_args(loop)
            if name.startswith("norm"):
                k = int(name[5:-1])
                bad = _broken(bad_args["norm"][k], kind, rng)
                bad_args["norm"] = [bad if i == k else t for i, t in enumerate(bad_args["norm"])]
            else:
                bad = _broken(bad_args[name], kind, rng)
                bad_args[name] = bad
            with pytest.raises((ValueError, TypeError)) as e:
                call(fn, bad_args)
            msg = str(e.value).splitlines()[0]
            named = NORM_NAMES[loop[:loop.index("_")]][int(name[5:-1])] if name.startswith("norm") else name
            assert msg.startswith(f"{loop}: ") and "expected" in msg and f": {named}: " in msg, (name, msg)
    short = variant_args(loop)
    short["norm"] = short["norm"][:-1]
    with pytest.raises(ValueError, match=r"norm: expected an empty list \(no layer norm\) or \d+ tensors, got"):
        call(fn, short)


def linear_args(loop: str, T=3, B=2, H=4, dtype=torch.float64):
    """Valid arguments of ``linear_forward_loop`` / ``linear_backward_loop`` (minGRU, minLSTM), with lengths."""
    r = lambda *s: torch.rand(*s, dtype=dtype)  # noqa: E731
    mask = torch.tensor([[1, 1], [1, 0], [1, 0]], dtype=dtype)
    if loop == "linear_forward_loop":
        return dict(a=r(T, B, H), b=r(T, B, H), mask=mask, reverse=True, states=r(T + 1, B, H))
    return dict(a=r(T, B, H), mask=mask, reverse=True, states=r(T + 1, B, H), g_states=r(T + 1, B, H),
                da=r(T, B, H), db=r(T, B, H), dh0=r(B, H))


@pytest.mark.parametrize("loop", ["linear_forward_loop", "linear_backward_loop"])
def test_linear_loops_refuse_bad_tensors(ext, loop):
    fn = getattr(ext, loop)
    args = linear_args(loop)
    call(fn, args)  # valid: runs
    rng = random.Random(len(loop))
    for name, bad in mutations(args, rng):
        with pytest.raises((ValueError, TypeError)) as e:
            call(fn, {**args, name: bad})
        msg = str(e.value).splitlines()[0]
        assert msg.startswith(f"{loop}: ") and "expected" in msg, (name, msg)
        assert f": {name}: " in msg or (name == "a" and ("float32 or float64" in msg or ": a:" in msg)) or \
            any(f": {k}: " in msg for k in args), (name, msg)
