"""rnnlab::cell_step (the Streamer's step on CPU): one time step of a plain level through the native engine's
compiled cell pass, against the cells' own equations in float64, and refused arguments named."""

import pytest
import torch

import rnnlab
from rnnlab.stream import Streamer
from rnnlab.stream.streamer import column_blocks
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


@pytest.mark.parametrize("cell", sorted(LAYERS))
@pytest.mark.parametrize("B,X,H", [(1, 3, 5), (1, 70, 100), (1, 0, 64), (3, 7, 21), (2, 40, 130)])
def test_column_blocks_equal_the_equations_either_way_round(cell, B, X, H):
    """The weights as column blocks (float32): at one row (block_gemv) and, given alone, at more rows; H = 5 and
    100 (one block, and blocks past the gates' edges, where the reset-before GRU's W_hn product starts mid-block),
    X = 0; blocks first to last and last to first give the same sums, and the same as the transposed layout."""
    torch.manual_seed(B * 100 + H + X)
    layer = LAYERS[cell](input_size=max(X, 1), hidden_size=H)
    w = layer.weights(0, 0)
    w = w._replace(weight_ih=w.weight_ih[:, :X])
    x, h, c = torch.randn(B, X), torch.randn(B, H), torch.randn(B, H)
    state = (h, c) if cell == "lstm" else (h,)
    want = layer.cell_class.equations(x.double(), tuple(t.double() for t in state),
                                      type(w)(*(None if t is None else t.detach().double() for t in w)),
                                      **layer.options)[0]
    d = (lambda t: None if t is None else t.detach())
    args = (x, h, c if cell == "lstm" else None)
    blocks = dict(w_ih_blocks=column_blocks(d(w.weight_ih)), w_hh_blocks=column_blocks(d(w.weight_hh)))
    assert blocks["w_hh_blocks"].shape == (-(-w.weight_hh.shape[0] // 64), H, 64)
    step = torch.ops.rnnlab.cell_step
    got = [step(*args, None, None, d(w.bias), d(w.bias_hn), cell=cell, backwards=back, **blocks)
           for back in (False, True)]
    plain = step(*args, d(w.weight_ih).t().contiguous(), d(w.weight_hh).t().contiguous(), d(w.bias), d(w.bias_hn),
                 cell=cell)
    for g in got:
        torch.testing.assert_close(g[0].double(), want[0], rtol=1e-5, atol=1e-5)
        if cell == "lstm":
            torch.testing.assert_close(g[1].double(), want[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[0][0], got[1][0], rtol=0, atol=0)  # each sum formed the same way
    torch.testing.assert_close(got[0][0], plain[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("N,K", [(5, 3), (64, 7), (130, 4), (256, 0)])
def test_column_blocks_hold_each_column_of_the_transpose(N, K):
    """rnnlab::column_blocks: block b, row k, lane j is W[64 b + j, k], zero past N (a definition element by element)."""
    w = torch.randn(N, K)
    got = column_blocks(w)
    assert got.shape == (-(-N // 64), K, 64) and got.is_contiguous()
    for b in range(got.shape[0]):
        for j in range(64):
            n = 64 * b + j
            want = w[n] if n < N else torch.zeros(K)
            assert torch.equal(got[b, :, j], want)
    with pytest.raises(TypeError, match="column_blocks: w: expected float32, got Double"):
        column_blocks(w.double())
    with pytest.raises(ValueError, match="column_blocks: w: expected a 2-D tensor"):
        column_blocks(w[0])


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
    c = torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"w_ihT: expected a tensor \(3, 16\) or w_ih_blocks \(1, 3, 64\), got neither"):
        step(x, h, c, None, wh, None, None, cell="lstm")
    with pytest.raises(ValueError, match="w_hhT: expected a tensor .* or w_hh_blocks .*got neither"):
        step(x, h, c, wi, None, None, None, cell="lstm")
    with pytest.raises(ValueError, match=r"w_hh_blocks: expected shape \[1, 4, 64\]"):
        step(x, h, c, wi, None, None, None, cell="lstm", w_hh_blocks=torch.zeros(1, 4, 32))
    with pytest.raises(TypeError, match="w_ih_blocks: expected dtype Float, got Double"):
        step(x, h, c, wi, wh, None, None, cell="lstm", w_ih_blocks=torch.zeros(1, 3, 64, dtype=torch.float64))
    with pytest.raises(TypeError, match="the blocks are float32 only"):
        step(x.double(), h.double(), c.double(), wi.double(), wh.double(), None, None, cell="lstm",
             w_hh_blocks=torch.zeros(1, 4, 64))


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


@pytest.mark.parametrize("cell", sorted(LAYERS))
def test_a_large_level_streams_on_column_blocks_and_equals_the_layer(cell, monkeypatch):
    """A level at the blocks' size (W_hh of BLOCKS_FROM numbers, lowered here) steps on column blocks at one row,
    alternating their order step by step, and on the transposed copies made at its first call with three rows."""
    monkeypatch.setattr("rnnlab.stream.streamer.BLOCKS_FROM", 64 * 8)
    made = []
    monkeypatch.setattr("rnnlab.stream.streamer.column_blocks", lambda w: made.append(w.shape) or column_blocks(w))
    layer = LAYERS[cell](input_size=5, hidden_size=24, num_layers=2).eval()
    assert layer.weights(0, 0).weight_hh.numel() >= 64 * 8
    x = torch.randn(9, 3, 5)
    with torch.no_grad():
        out, _ = layer(x)
    for rows in (slice(0, 1), slice(0, 3)):
        s = Streamer(layer)
        got = torch.stack([s.step(x[t, rows]) for t in range(9)])
        torch.testing.assert_close(got, out[:, rows], rtol=1e-5, atol=1e-5)
    assert len(made) == 2 * 2 * 2  # two Streamers, two levels, W_ih and W_hh each
