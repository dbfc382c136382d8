"""rnnlab::cell_step (the Streamer's step on CPU): one time step of a plain level through the native engine's
compiled cell pass, against the cells' own equations in float64, and refused arguments named."""

import pytest
import torch

import rnnlab
from rnnlab.stream import Streamer
from rnnlab.engine import ops

pytestmark = pytest.mark.skipif(not ops.available(), reason="cell_step is a compiled operator")

LAYERS = {
    "rnn_tanh": lambda **kw: rnnlab.RNN(nonlinearity="tanh", **kw),
    "rnn_relu": lambda **kw: rnnlab.RNN(nonlinearity="relu", **kw),
    "lstm": lambda **kw: rnnlab.LSTM(**kw),
    "gru_before": lambda **kw: rnnlab.GRU(reset="before", **kw),
    "gru_after": lambda **kw: rnnlab.GRU(reset="after", **kw),
}


@pytest.mark.parametrize("cell", sorted(LAYERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B,X,H", [(1, 3, 5), (3, 7, 21), (5, 0, 16), (2, 40, 100)])
@pytest.mark.parametrize("bias", [True, False])
def test_one_step_equals_the_equations(cell, dtype, B, X, H, bias):
    """B = 1-5 (the small kernel and BLAS), H = 21 and 100 (column tails), X = 0 (no input features)."""
    torch.manual_seed(B * 100 + H)
    layer = LAYERS[cell](input_size=max(X, 1), hidden_size=H, bias=bias)
    w = layer.weights(0, 0)
    w = w._replace(weight_ih=w.weight_ih[:, :X])  # X = 0: a layer has an input, the operator need not
    x, h, c = torch.randn(B, X), torch.randn(B, H), torch.randn(B, H)
    state = (h, c) if cell == "lstm" else (h,)
    want = layer.cell_class.equations(x.double(), tuple(t.double() for t in state),
                                      type(w)(*(None if t is None else t.detach().double() for t in w)),
                                      **layer.options)[0]
    cast = (lambda t: None if t is None else t.detach().to(dtype))
    got = torch.ops.rnnlab.cell_step(x.to(dtype), h.to(dtype), c.to(dtype) if cell == "lstm" else None,
                                     cast(w.weight_ih).t().contiguous(), cast(w.weight_hh).t().contiguous(),
                                     cast(w.bias), cast(w.bias_hn), cell=cell)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[0].double(), want[0], **tol)
    if cell == "lstm":
        torch.testing.assert_close(got[1].double(), want[1], **tol)
    else:
        assert got[1].numel() == 0


def test_bad_arguments_are_refused_by_name():
    x, h, wi, wh = torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(3, 16), torch.zeros(4, 16)
    step = torch.ops.rnnlab.cell_step
    with pytest.raises(ValueError, match="cell: expected one of"):
        step(x, h, None, wi, wh, None, None, cell="elman")
    with pytest.raises(ValueError, match="c: expected a tensor"):
        step(x, h, None, wi, wh, None, None, cell="lstm")
    with pytest.raises(ValueError, match="w_hhT: expected shape"):
        step(x, h, torch.zeros(2, 4), wi, torch.zeros(4, 12), None, None, cell="lstm")
    with pytest.raises(ValueError, match="h: expected shape"):
        step(x, torch.zeros(3, 4), torch.zeros(2, 4), wi, wh, None, None, cell="lstm")
    with pytest.raises(ValueError, match="b_hn: expected None"):
        step(x, h, None, torch.zeros(3, 12), torch.zeros(4, 12), None, torch.zeros(4), cell="gru_before")
    with pytest.raises(TypeError, match="x: expected float32 or float64"):
        step(x.half(), h, None, wi, wh, None, None, cell="lstm")


@pytest.mark.parametrize("cell", sorted(LAYERS))
def test_the_streamer_runs_it_and_equals_the_layer(cell):
    layer = LAYERS[cell](input_size=3, hidden_size=6, num_layers=2).eval()
    x = torch.randn(7, 2, 3)
    with torch.no_grad():
        out, _ = layer(x)
    s = Streamer(layer)
    assert s.paths == ["rnnlab::cell_step"] * 2
    got = torch.stack([s.step(x[t]) for t in range(7)])
    torch.testing.assert_close(got, out, rtol=1e-5, atol=1e-5)
    assert Streamer(layer, fused=False).paths == ["equations"] * 2
    assert Streamer(rnnlab.LSTM(3, 6, layer_norm=True)).paths == ["equations"]
