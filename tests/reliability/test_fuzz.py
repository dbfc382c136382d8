"""Fuzzing the public API: every call either returns the reference engine's answer (outputs, final
states and gradients) or raises a clear ValueError/TypeError naming the argument — and it raises
exactly when the call is invalid.

Layers are fuzzed over every engine (auto, native, torch, reference; scan for MinGRU/MinLSTM),
ranks, dtypes, devices, memory layouts (strided, expanded, batch_first), lengths, hx, NaN/Inf,
T = 1 and batch 0; cells over the same; sizes too large for memory are refused before any
allocation. ``check_layer_call`` and ``check_cell_call`` return the outcome ("ok" or the error's
type name) so that ``scripts/reliability_report.py`` can count them.
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnlab

ARGS = ("x", "hx", "lengths", "engine")
KINDS = [(rnnlab.RNN, {}), (rnnlab.RNN, {"nonlinearity": "relu"}), (rnnlab.LSTM, {}),
         (rnnlab.GRU, {"reset": "before"}), (rnnlab.GRU, {"reset": "after"}), (rnnlab.MinGRU, {}), (rnnlab.MinLSTM, {})]
MINIMAL = (rnnlab.MinGRU, rnnlab.MinLSTM)
CELLS = [(rnnlab.RNNCell, {}, rnnlab.RNN), (rnnlab.RNNCell, {"nonlinearity": "relu"}, rnnlab.RNN),
         (rnnlab.LSTMCell, {}, rnnlab.LSTM), (rnnlab.GRUCell, {"reset": "before"}, rnnlab.GRU),
         (rnnlab.GRUCell, {"reset": "after"}, rnnlab.GRU), (rnnlab.MinGRUCell, {}, rnnlab.MinGRU),
         (rnnlab.MinLSTMCell, {}, rnnlab.MinLSTM)]


def _devices():
    return ["cpu", "meta"] + (["cuda"] if torch.cuda.is_available() else [])


# the ways a call can be wrong; each drawn call has none (about half of them), one or two
FAULTS = ("rank", "feat", "dtype", "T", "device", "hx", "lengths")


@st.composite
def calls(draw):
    faults = set(draw(st.lists(st.sampled_from(FAULTS), max_size=draw(st.sampled_from([0, 0, 1, 2])))))

    def pick(name, good, bad):
        return draw(st.sampled_from(bad if name in faults else good))

    cls, opts = draw(st.sampled_from(KINDS))
    engines = ("auto", "scan", "reference") if cls in MINIMAL else ("auto", "native", "torch", "reference")
    X, H = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    L, bi = draw(st.integers(1, 2)), draw(st.booleans())
    return dict(
        cls=cls, opts=opts, engine=draw(st.sampled_from(engines)), X=X, H=H, L=L, bi=bi, D=2 if bi else 1,
        T=pick("T", [1, 1, 2, 3, 4], [0]), B=draw(st.integers(0, 3)), rank=pick("rank", [2, 3, 3, 3], [0, 1, 4]),
        feat=pick("feat", [X], [X + 1]),
        dtype=pick("dtype", [torch.float32], [torch.float64, torch.float16, torch.int64, torch.bool]),
        special=draw(st.sampled_from([None, None, None, math.nan, math.inf, -math.inf])),
        layout=draw(st.sampled_from(["contiguous", "contiguous", "strided", "expanded", "batch_first"])),
        device=pick("device", ["cpu"], _devices()[1:]),
        hx_kind=pick("hx", ["none", "good", "good-nan"], ["bad-shape", "bad-batch", "wrong-type", "wrong-dtype"]),
        len_kind=pick("lengths", ["none", "none", "good"], ["zero", "too-long", "float", "short"]),
        seed=draw(st.integers(0, 999)),
    )


def _input(c) -> torch.Tensor:
    """x in the drawn rank, dtype, device and memory layout (values: randn·3, one special)."""
    T, B, feat = c["T"], c["B"], c["feat"]
    shape = {0: (), 1: (feat,), 2: (T, feat), 3: (T, B, feat), 4: (T, B, 1, feat)}[c["rank"]]
    layout = c["layout"]
    if layout == "strided" and len(shape):  # every other element of a twice-as-long last dimension
        base = torch.randn(shape[:-1] + (2 * shape[-1],)) * 3
    elif layout == "expanded" and len(shape) >= 2:  # one step broadcast over time: stride 0
        base = torch.randn((1,) + shape[1:]) * 3
    else:
        base = torch.randn(shape) * 3
    if c["special"] is not None and base.numel():
        base.view(-1)[0] = c["special"]
    if layout == "strided" and len(shape):
        x = base[..., ::2]
    elif layout == "expanded" and len(shape) >= 2:
        x = base.expand(shape)
    else:
        x = base
    if layout == "batch_first" and c["rank"] == 3:
        x = x.transpose(0, 1)  # (B, T, X), not contiguous
    return x.to(device=c["device"], dtype=c["dtype"])


def build(c):
    torch.manual_seed(c["seed"])
    layer = c["cls"](c["X"], c["H"], num_layers=c["L"], bidirectional=c["bi"], engine=c["engine"],
                     batch_first=c["layout"] == "batch_first", **c["opts"])
    x = _input(c)
    batched = c["rank"] == 3
    hshape = (c["D"] * c["L"], c["B"], c["H"]) if batched else (c["D"] * c["L"], c["H"])
    hx = None
    if c["hx_kind"] in ("good", "good-nan"):
        hx = torch.randn(hshape)
        if c["hx_kind"] == "good-nan" and hx.numel():
            hx.view(-1)[-1] = math.nan
    elif c["hx_kind"] == "bad-shape":
        hx = torch.randn(hshape[:-1] + (c["H"] + 1,))
    elif c["hx_kind"] == "bad-batch":
        hx = torch.randn((c["D"] * c["L"], c["B"] + 1, c["H"]))
    elif c["hx_kind"] == "wrong-type":
        hx = [[0.0] * c["H"]]
    elif c["hx_kind"] == "wrong-dtype":
        hx = torch.randn(hshape, dtype=torch.float64)
    if c["cls"] is rnnlab.LSTM and isinstance(hx, torch.Tensor):
        hx = (hx, hx.clone())
    T, B = c["T"], c["B"]
    lengths = {"none": None, "good": [max(1, T - i % max(T, 1)) for i in range(B)], "zero": [0] * B,
               "too-long": [T + 1] * B, "float": torch.full((B,), float(max(T, 1))),
               "short": [max(T, 1)] * max(B - 1, 0) if B > 1 else [1, 1]}[c["len_kind"]]
    return layer, x, hx, lengths


def is_valid(c):
    """An independent statement of what a valid call is."""
    if c["rank"] not in (2, 3) or c["feat"] != c["X"] or c["dtype"] != torch.float32 or c["T"] < 1:
        return False
    if c["device"] != "cpu":
        return False
    batched = c["rank"] == 3
    if c["hx_kind"] in ("bad-shape", "wrong-type", "wrong-dtype", "bad-batch"):
        return False
    if c["len_kind"] != "none":
        if not batched:
            return False
        if c["len_kind"] in ("zero", "too-long", "float", "short"):
            return c["B"] == 0 and c["len_kind"] in ("zero", "too-long")  # empty batch: nothing out of range
    if c["engine"] == "torch" and c["cls"] is rnnlab.GRU and c["opts"]["reset"] == "before":
        return False  # torch has no kernel for the seed's GRU
    return True


def _states(h):
    return h if isinstance(h, tuple) else (h,)


def _grads(layer, out, h_n):
    """Gradients of a fixed function of the outputs with respect to every parameter."""
    loss = out.sum() + sum(s.pow(2).sum() for s in _states(h_n))
    params = [p for p in layer.parameters()]
    return torch.autograd.grad(loss, params, allow_unused=True)


def _close(a, b):
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, equal_nan=True)


def check_layer_call(c) -> str:
    """Run one drawn call; assert the contract; return "ok" or the refusal's type name."""
    layer, x, hx, lengths = build(c)
    try:
        out, h_n = layer(x, hx, lengths=lengths)
    except (ValueError, TypeError) as e:
        msg = str(e)
        assert msg.split(":")[0].split(".")[0].split("[")[0] in ARGS, msg
        assert "expected" in msg or "cannot" in msg, msg
        assert not is_valid(c), f"valid call refused: {msg}"
        return type(e).__name__
    assert is_valid(c), "invalid call accepted"
    ref = type(layer)(c["X"], c["H"], num_layers=c["L"], bidirectional=c["bi"], engine="reference",
                      batch_first=layer.batch_first, **c["opts"])
    ref.load_state_dict(layer.state_dict())
    out_r, h_r = ref(x, hx, lengths=lengths)
    assert out.shape == out_r.shape
    # the log-space scan turns an infinite input into NaN from there on (log 0 − log 0), where the
    # sequential form may still have a number: allowed, as long as every number it does give is right
    scan_inf = c["cls"] in MINIMAL and c["engine"] != "reference" and c["special"] in (math.inf, -math.inf)
    for a, b in [(out, out_r), *zip(_states(h_n), _states(h_r))]:
        if scan_inf:
            a, b = torch.where(a.isnan(), b, a), b
        _close(a, b)
    finite = c["special"] is None and c["hx_kind"] != "good-nan"
    if finite:  # with NaN/Inf anywhere, gradients are NaN wherever they meet it; the values above say enough
        for g, g_r in zip(_grads(layer, out, h_n), _grads(ref, out_r, h_r)):
            if g is None and g_r is None:
                continue
            if c["cls"] in MINIMAL and c["engine"] != "reference":
                # the scan differentiates log A_t + logcumsumexp(log b − log A): in float32 its small
                # gradient entries carry the rounding of the large ones they cancel, so it is held to
                # 1e-4 of the tensor's largest entry, not of each entry
                scale = max(1.0, float(g_r.abs().max())) if g_r.numel() else 1.0
                torch.testing.assert_close(g, g_r, atol=1e-4 * scale, rtol=1e-4, equal_nan=True)
            else:
                _close(g, g_r)
    return "ok"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls())
def test_fuzz_layer_calls(c):
    check_layer_call(c)


# -- cells ------------------------------------------------------------------------------------
@st.composite
def cell_calls(draw):
    faults = set(draw(st.lists(st.sampled_from(("rank", "feat", "dtype", "device", "state")),
                               max_size=draw(st.sampled_from([0, 0, 1, 2])))))

    def pick(name, good, bad):
        return draw(st.sampled_from(bad if name in faults else good))

    cls, opts, layer_cls = draw(st.sampled_from(CELLS))
    X, H, B = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(0, 3))
    return dict(
        cls=cls, opts=opts, layer_cls=layer_cls, X=X, H=H, B=B, rank=pick("rank", [1, 2, 2], [0, 3]),
        feat=pick("feat", [X], [X + 1]), dtype=pick("dtype", [torch.float32], [torch.float64, torch.int64]),
        device=pick("device", ["cpu"], _devices()[1:]),
        special=draw(st.sampled_from([None, None, math.nan, math.inf])),
        state_kind=pick("state", ["none", "good", "good"], ["bad-shape", "wrong-type", "wrong-dtype"]),
        seed=draw(st.integers(0, 999)),
    )


def cell_is_valid(c):
    if c["rank"] not in (1, 2) or c["feat"] != c["X"] or c["dtype"] != torch.float32 or c["device"] != "cpu":
        return False
    return c["state_kind"] in ("none", "good")


def check_cell_call(c) -> str:
    """One step of a cell; when valid it equals a one-step layer on the native engine (or scan)."""
    torch.manual_seed(c["seed"])
    cell = c["cls"](c["X"], c["H"], **c["opts"])
    shape = {0: (), 1: (c["feat"],), 2: (c["B"], c["feat"]), 3: (1, c["B"], c["feat"])}[c["rank"]]
    x = torch.randn(shape) * 3
    if c["special"] is not None and x.numel():
        x.view(-1)[0] = c["special"]
    x = x.to(device=c["device"], dtype=c["dtype"])
    sshape = (c["H"],) if c["rank"] == 1 else (c["B"], c["H"])
    state = None
    if c["state_kind"] == "good":
        state = torch.randn(sshape)
    elif c["state_kind"] == "bad-shape":
        state = torch.randn(sshape[:-1] + (c["H"] + 1,))
    elif c["state_kind"] == "wrong-type":
        state = [0.0] * c["H"]
    elif c["state_kind"] == "wrong-dtype":
        state = torch.randn(sshape, dtype=torch.float64)
    if c["cls"] is rnnlab.LSTMCell and isinstance(state, torch.Tensor):
        state = (state, state.clone())
    try:
        h, new_state = cell(x, state)
    except (ValueError, TypeError) as e:
        msg = str(e)
        assert msg.split(":")[0].split(".")[0] in ("x_t", "state"), msg
        assert "expected" in msg, msg
        assert not cell_is_valid(c), f"valid call refused: {msg}"
        return type(e).__name__
    assert cell_is_valid(c), "invalid call accepted"
    engine = "scan" if c["layer_cls"] in MINIMAL else "native"
    layer = c["layer_cls"](c["X"], c["H"], engine=engine, **c["opts"])
    layer.load_state_dict({f"{k}_l0": v for k, v in cell.state_dict().items()})
    hx = None if state is None else tuple(s.unsqueeze(0) for s in _states(state))
    _, h_n = layer(x.unsqueeze(0), hx if hx is None or len(hx) > 1 else hx[0])
    scan_inf = engine == "scan" and c["special"] in (math.inf, -math.inf)  # see check_layer_call
    for a, b in [(h, _states(h_n)[0]), *zip(_states(new_state), _states(h_n))]:
        b = b.squeeze(0)
        if scan_inf:
            b = torch.where(b.isnan(), a, b)
        _close(a, b)
    return "ok"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cell_calls())
def test_fuzz_cell_calls(c):
    check_cell_call(c)


# -- sizes that cannot fit are refused before anything is allocated ----------------------------
def check_huge_call(kind: str, huge: int) -> str:
    """A layer or cell too large for memory, or a (stride-0, so free) input too long for it: a
    ValueError naming the argument and the fix, never a MemoryError or a killed process."""
    try:
        if kind == "layer":
            rnnlab.LSTM(4, huge)
        elif kind == "cell":
            rnnlab.GRUCell(huge, 4)
        else:
            layer = rnnlab.GRU(4, 64, num_layers=2, engine=kind)
            layer(torch.zeros(1, 1, 4).expand(huge, 1024, 4))
    except ValueError as e:
        msg = str(e)
        name = "hidden_size" if kind in ("layer", "cell") else "x"  # the parameter guard names hidden_size
        assert msg.startswith(name + ":") and "available" in msg, msg
        if name == "x":
            assert "truncated BPTT in chunks of at most" in msg, msg
        return "ValueError"
    raise AssertionError(f"{kind}: a call of size {huge} was not refused")


@pytest.mark.parametrize("kind", ["layer", "cell", "auto", "native", "torch", "reference"])
def test_sizes_too_large_are_refused_early(kind):
    check_huge_call(kind, 1 << 40 if kind in ("layer", "cell") else 1 << 30)
