"""Layer behaviour that torch.nn cannot check: lengths, the seed's GRU, traces, gradcheck, bad input."""

import pytest
import torch

import rnnlab
from helpers import CELL_IDS, CELLS_AND_OPTIONS
from rnnlab.analysis import closed_form_parameters, count_parameters

ALL, IDS = CELLS_AND_OPTIONS, CELL_IDS


def states(h_n):
    return h_n if isinstance(h_n, tuple) else (h_n,)


@pytest.mark.parametrize("cls,opts", ALL, ids=IDS)
def test_gradcheck_stacked_bidirectional_lengths(cls, opts):
    layer = cls(2, 3, num_layers=2, bidirectional=True, **opts).double()
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    n_state = 2 if cls is rnnlab.LSTM else 1
    hx = [torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True) for _ in range(n_state)]
    lengths = torch.tensor([4, 2, 1])
    params = list(layer.parameters())

    def f(x, *rest):
        h = tuple(rest[:n_state])
        out, h_n = layer(x, h if n_state == 2 else h[0], lengths=lengths)
        return (out, *states(h_n))

    assert torch.autograd.gradcheck(f, (x, *hx, *params))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cls,opts", ALL, ids=IDS)
def test_lengths_equal_per_sequence_runs(cls, opts, bidirectional):
    layer = cls(3, 4, num_layers=2, bidirectional=bidirectional, **opts).double()
    T, B = 6, 4
    lengths = torch.tensor([6, 3, 1, 5])
    x = torch.randn(T, B, 3, dtype=torch.float64)
    x_pad = x.clone()
    for b in range(B):
        x_pad[lengths[b]:, b] = 1e3  # padding content must not matter
    out, h_n, traces = layer(x_pad, lengths=lengths, return_gates=True)
    for b in range(B):
        n = int(lengths[b])
        out_b, h_b = layer(x[:n, b])  # unbatched, unpadded
        torch.testing.assert_close(out[:n, b], out_b, atol=1e-12, rtol=1e-12)
        assert torch.all(out[n:, b] == 0)
        for s, s_b in zip(states(h_n), states(h_b)):
            torch.testing.assert_close(s[:, b], s_b, atol=1e-12, rtol=1e-12)
        for tr in traces.values():
            for v in tr.values():
                assert torch.all(v[n:, b] == 0)


def test_gru_before_layer_equals_cell_loop():
    """The seed's GRU as a layer equals the seed's GRU cell stepped by hand (reverse direction too)."""
    layer = rnnlab.GRU(3, 4, bidirectional=True).double()
    cell_f, cell_b = rnnlab.GRUCell(3, 4).double(), rnnlab.GRUCell(3, 4).double()
    with torch.no_grad():
        for cell, sfx in ((cell_f, "_l0"), (cell_b, "_l0_reverse")):
            for n in ("weight_ih", "weight_hh", "bias"):
                getattr(cell, n).copy_(getattr(layer, n + sfx))
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, h_n = layer(x)
    h = torch.zeros(2, 4, dtype=torch.float64)
    for t in range(5):
        h, _ = cell_f(x[t], h)
        torch.testing.assert_close(out[t, :, :4], h)
    h = torch.zeros(2, 4, dtype=torch.float64)
    for t in reversed(range(5)):
        h, _ = cell_b(x[t], h)
        torch.testing.assert_close(out[t, :, 4:], h)
    torch.testing.assert_close(h_n[1], h)


@pytest.mark.parametrize("cls,opts", ALL, ids=IDS)
def test_traces_names_shapes_and_reconstruction(cls, opts):
    layer = cls(3, 4, num_layers=2, bidirectional=True, **opts)
    x = torch.randn(5, 2, 3)
    out, h_n, traces = layer(x, return_gates=True)
    assert set(traces) == {"l0", "l0_reverse", "l1", "l1_reverse"}
    names = layer.cell_class.TRACES
    for key, tr in traces.items():
        assert tuple(tr) == names
        assert all(v.shape == (5, 2, 4) for v in tr.values())
    top_f, top_b = traces["l1"], traces["l1_reverse"]
    if cls is rnnlab.LSTM:
        torch.testing.assert_close(out[..., :4], top_f["o"] * torch.tanh(top_f["c"]))
        torch.testing.assert_close(out[..., 4:], top_b["o"] * torch.tanh(top_b["c"]))
        torch.testing.assert_close(h_n[1][2], top_f["c"][-1])
    elif cls is rnnlab.GRU:
        h_prev = torch.cat([torch.zeros(1, 2, 4), out[:-1, :, :4]])
        torch.testing.assert_close(out[..., :4], (1 - top_f["z"]) * h_prev + top_f["z"] * top_f["n"])
    else:
        torch.testing.assert_close(out[..., :4], top_f["h"])
    out2, h_n2 = layer(x)
    torch.testing.assert_close(out, out2)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("cls,opts", ALL, ids=IDS)
def test_parameter_count_is_closed_form(cls, opts, bias):
    for L, bi in ((1, False), (3, True)):
        layer = cls(7, 5, num_layers=L, bidirectional=bi, bias=bias, **opts)
        mode = layer.mode
        assert count_parameters(layer) == closed_form_parameters(mode, 7, 5, L, bi, bias, opts.get("reset", "before"))
    G = {"rnn": 1, "lstm": 4, "gru": 3}[mode]
    X, H = 7, 5
    extra = H if opts.get("reset") == "after" else 0
    assert count_parameters(cls(X, H, **opts)) == G * (H * (X + H) + H) + extra
    names = {n for n, _ in cls(X, H, num_layers=2, bidirectional=True, **opts).named_parameters()}
    assert {"weight_ih_l1_reverse", "weight_hh_l0", "bias_l1"} <= names


def test_batch_first_and_unbatched_agree():
    layer = rnnlab.LSTM(3, 4, batch_first=True)
    x = torch.randn(2, 5, 3)
    out, (h, c) = layer(x)
    assert out.shape == (2, 5, 4) and h.shape == (1, 2, 4)
    out1, (h1, c1) = layer(x[1])
    torch.testing.assert_close(out1, out[1])
    torch.testing.assert_close(h1, h[:, 1])


def test_dropout_between_layers_only_in_training():
    layer = rnnlab.LSTM(3, 8, num_layers=2, dropout=0.5)
    x = torch.randn(4, 2, 3)
    layer.eval()
    a, _ = layer(x)
    b, _ = layer(x)
    torch.testing.assert_close(a, b)
    layer.train()
    c, _ = layer(x)
    assert not torch.allclose(a, c)
    one = rnnlab.LSTM(3, 8, num_layers=1, dropout=0.5)
    torch.testing.assert_close(one(x)[0], one.eval()(x)[0])


def _e(s):
    return s.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")


BAD_CALLS = [
    (lambda l: l(torch.randn(5)), ValueError, "x: expected a 3-D tensor"),
    (lambda l: l(torch.randn(5, 2, 4)), ValueError, "input_size = 3"),
    (lambda l: l(torch.randn(0, 2, 3)), ValueError, "T >= 1"),
    (lambda l: l(torch.randn(5, 2, 3).double()), TypeError, "x: expected dtype torch.float32"),
    (lambda l: l(torch.randint(0, 3, (5, 2, 3))), TypeError, "x: expected a floating-point"),
    (lambda l: l(torch.randn(5, 2, 3), torch.zeros(1, 2, 4)), TypeError, "hx: expected a tuple (h_0, c_0)"),
    (lambda l: l(torch.randn(5, 2, 3), (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4))), ValueError, "expected shape (1, 2, 4), got (1, 3, 4) (batch differs"),
    (lambda l: l(torch.randn(5, 2, 3), (torch.zeros(2, 2, 4), torch.zeros(1, 2, 4))), ValueError, "hx[0] (h_0): expected shape (1, 2, 4)"),
    (lambda l: l(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4).double())), TypeError, "hx[1] (c_0): expected dtype"),
    (lambda l: l(torch.randn(5, 2, 3), lengths=[5]), ValueError, "lengths: expected shape (2,)"),
    (lambda l: l(torch.randn(5, 2, 3), lengths=[5, 0]), ValueError, "lengths: expected every length in [1, 5]"),
    (lambda l: l(torch.randn(5, 2, 3), lengths=[5, 6]), ValueError, "lengths: expected every length in [1, 5]"),
    (lambda l: l(torch.randn(5, 2, 3), lengths=torch.tensor([5.0, 2.0])), TypeError, "lengths: expected an integer tensor"),
    (lambda l: l(torch.randn(5, 2, 3), lengths=[5, 2.5]), TypeError, "lengths: expected integers"),
    (lambda l: l(torch.randn(5, 3), lengths=[5]), ValueError, "lengths: expected None for unbatched input"),
    (lambda l: l("hello"), TypeError, "x: expected a torch.Tensor"),
]


@pytest.mark.parametrize("call,exc,msg", BAD_CALLS)
def test_bad_calls(call, exc, msg):
    with pytest.raises(exc, match=_e(msg)):
        call(rnnlab.LSTM(3, 4))


def test_hx_for_single_state_cells_must_be_a_tensor():
    with pytest.raises(TypeError, match=_e("hx: expected a tensor of shape (1, 2, 4)")):
        rnnlab.GRU(3, 4)(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4),))


@pytest.mark.parametrize(
    "make,exc,msg",
    [
        (lambda: rnnlab.RNN(3, 4, nonlinearity="gelu"), ValueError, "nonlinearity: expected one of 'tanh', 'relu', got 'gelu'"),
        (lambda: rnnlab.GRU(3, 4, reset="sideways"), ValueError, "reset: expected one of 'before', 'after'"),
        (lambda: rnnlab.LSTM(3, 4, dropout=1.0), ValueError, "dropout: expected a float in [0, 1), got 1.0"),
        (lambda: rnnlab.LSTM(3, 4, dropout=-0.1), ValueError, "dropout"),
        (lambda: rnnlab.LSTM(0, 4), ValueError, "input_size: expected a positive int, got 0"),
        (lambda: rnnlab.LSTM(3, -4), ValueError, "hidden_size"),
        (lambda: rnnlab.LSTM(3, 4, num_layers=0), ValueError, "num_layers"),
        (lambda: rnnlab.LSTM(3, 4, engine="fastest"), ValueError, "engine"),
        (lambda: rnnlab.LSTM(3, 4, init="zeros"), ValueError, "init"),
        (lambda: rnnlab.LSTM(3, 4, bidirectional="yes"), TypeError, "bidirectional: expected a bool"),
    ],
)
def test_bad_construction(make, exc, msg):
    with pytest.raises(exc, match=_e(msg)):
        make()


def test_packed_with_lengths_is_refused():
    from torch.nn.utils.rnn import pack_padded_sequence

    p = pack_padded_sequence(torch.randn(5, 2, 3), [5, 3])
    with pytest.raises(ValueError, match="lengths: expected None when x is a PackedSequence"):
        rnnlab.LSTM(3, 4)(p, lengths=[5, 3])
