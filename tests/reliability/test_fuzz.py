"""Fuzzing the public layer API: every call either returns the reference engine's answer or raises a
clear ValueError/TypeError naming the argument — and it raises exactly when the call is invalid."""

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnlab

ARGS = ("x", "hx", "lengths")
KINDS = [(rnnlab.RNN, {}), (rnnlab.RNN, {"nonlinearity": "relu"}), (rnnlab.LSTM, {}),
         (rnnlab.GRU, {"reset": "before"}), (rnnlab.GRU, {"reset": "after"})]


@st.composite
def calls(draw):
    cls, opts = draw(st.sampled_from(KINDS))
    X, H = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    L, bi = draw(st.integers(1, 2)), draw(st.booleans())
    D = 2 if bi else 1
    T, B = draw(st.integers(0, 4)), draw(st.integers(0, 3))
    rank = draw(st.sampled_from([1, 2, 3, 3, 3, 4]))
    feat = draw(st.sampled_from([X, X, X, X + 1]))
    shape = {1: (feat,), 2: (T, feat), 3: (T, B, feat), 4: (T, B, 1, feat)}[rank]
    dtype = draw(st.sampled_from([torch.float32, torch.float32, torch.float32, torch.float64, torch.int64]))
    special = draw(st.sampled_from([None, None, None, math.nan, math.inf]))
    hx_kind = draw(st.sampled_from(["none", "none", "good", "bad-shape", "bad-batch", "wrong-type"]))
    len_kind = draw(st.sampled_from(["none", "none", "good", "zero", "too-long", "float", "short"]))
    return dict(cls=cls, opts=opts, X=X, H=H, L=L, bi=bi, D=D, T=T, B=B, rank=rank, feat=feat, shape=shape,
                dtype=dtype, special=special, hx_kind=hx_kind, len_kind=len_kind, seed=draw(st.integers(0, 999)))


def build(c):
    torch.manual_seed(c["seed"])
    layer = c["cls"](c["X"], c["H"], num_layers=c["L"], bidirectional=c["bi"], **c["opts"])
    x = (torch.randn(c["shape"]) * 3).to(c["dtype"])
    if c["special"] is not None and x.numel() and x.is_floating_point():
        x.view(-1)[0] = c["special"]
    lstm = c["cls"] is rnnlab.LSTM
    batched = c["rank"] == 3
    hshape = (c["D"] * c["L"], c["B"], c["H"]) if batched else (c["D"] * c["L"], c["H"])
    hx = None
    if c["hx_kind"] == "good":
        hx = torch.randn(hshape)
    elif c["hx_kind"] == "bad-shape":
        hx = torch.randn(hshape[:-1] + (c["H"] + 1,))
    elif c["hx_kind"] == "bad-batch":
        hx = torch.randn((c["D"] * c["L"], c["B"] + 1, c["H"]))
    elif c["hx_kind"] == "wrong-type":
        hx = [[0.0] * c["H"]]
    if lstm and isinstance(hx, torch.Tensor):
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
    batched = c["rank"] == 3
    if c["hx_kind"] in ("bad-shape", "wrong-type"):
        return False
    if c["hx_kind"] == "bad-batch" and batched:
        return False
    if c["hx_kind"] == "bad-batch" and not batched:
        return False
    if c["len_kind"] != "none":
        if not batched:
            return False
        if c["len_kind"] in ("zero", "too-long", "float", "short"):
            return c["B"] == 0 and c["len_kind"] in ("zero", "too-long")  # empty batch: nothing out of range
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls())
def test_fuzz_layer_calls(c):
    layer, x, hx, lengths = build(c)
    try:
        out, h_n = layer(x, hx, lengths=lengths)
    except (ValueError, TypeError) as e:
        msg = str(e)
        assert msg.split(":")[0].split(".")[0].split("[")[0] in ARGS, msg
        assert "expected" in msg, msg
        assert not is_valid(c), f"valid call refused: {msg}"
        return
    assert is_valid(c), "invalid call accepted"
    ref = type(layer)(c["X"], c["H"], num_layers=c["L"], bidirectional=c["bi"], engine="reference", **c["opts"])
    ref.load_state_dict(layer.state_dict())
    out_r, h_r = ref(x, hx, lengths=lengths)
    torch.testing.assert_close(out, out_r, atol=1e-5, rtol=1e-5, equal_nan=True)
    for a, b in zip(h_n if isinstance(h_n, tuple) else (h_n,), h_r if isinstance(h_r, tuple) else (h_r,)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, equal_nan=True)
