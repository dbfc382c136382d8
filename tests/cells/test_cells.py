"""Cells: the seed's equations, against torch.nn cells, an independent transcription, finite differences."""

import pytest
import torch
from torch import nn

import rnnlab
from helpers import seed_grads_in_torch_layout

CELLS = [
    ("rnn", dict(nonlinearity="tanh")),
    ("rnn", dict(nonlinearity="relu")),
    ("lstm", {}),
    ("gru", dict(reset="before")),
    ("gru", dict(reset="after")),
]
CLASSES = {"rnn": rnnlab.RNNCell, "lstm": rnnlab.LSTMCell, "gru": rnnlab.GRUCell}


def make(mode, opts, X=3, H=4, bias=True, dtype=torch.float64):
    return CLASSES[mode](X, H, bias, **opts).to(dtype)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mode,opts", CELLS)
def test_gradcheck(mode, opts, bias):
    cell = make(mode, opts, bias=bias)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    params = list(cell.parameters())

    def f(x, h, c, *ps):
        state = (h, c) if mode == "lstm" else h
        out, st = cell(x, state)
        return (st.c if mode == "lstm" else out), out

    assert torch.autograd.gradcheck(f, (x, h, c, *params))


@pytest.mark.parametrize("mode,opts", [c for c in CELLS if c[1].get("reset") != "before"])
def test_equals_torch_cell(mode, opts):
    torch_cell = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[mode](5, 6, **({"nonlinearity": opts["nonlinearity"]} if mode == "rnn" else {}))
    cell = CLASSES[mode].from_torch(torch_cell)
    x = torch.randn(3, 5, requires_grad=True)
    h0 = torch.randn(3, 6, requires_grad=True)
    c0 = torch.randn(3, 6, requires_grad=True)
    w1, w2 = torch.randn(3, 6), torch.randn(3, 6)
    if mode == "lstm":
        ht, ct = torch_cell(x, (h0, c0))
        h, st = cell(x, rnnlab.LSTMState(h0, c0))
        ref_loss = (ht * w1).sum() + (ct * w2).sum()
        loss = (h * w1).sum() + (st.c * w2).sum()
    else:
        ht = torch_cell(x, h0)
        h, st = cell(x, h0)
        ref_loss, loss = (ht * w1).sum(), (h * w1).sum()
    torch.testing.assert_close(h, ht, atol=1e-5, rtol=1e-5)
    inputs = [x, h0] + ([c0] if mode == "lstm" else [])
    ref_grads = torch.autograd.grad(ref_loss, inputs + [torch_cell.weight_ih, torch_cell.weight_hh, torch_cell.bias_ih, torch_cell.bias_hh])
    grads = torch.autograd.grad(loss, inputs + list(cell.weights()[:3]) + ([cell.bias_hn] if cell.bias_hn is not None else []))
    for a, b in zip(grads[: len(inputs)], ref_grads[: len(inputs)]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    mapped = seed_grads_in_torch_layout(mode, *grads[len(inputs):len(inputs) + 3], grads[-1] if cell.bias_hn is not None else None)
    for k, name in enumerate(("weight_ih", "weight_hh", "bias_ih", "bias_hh")):
        torch.testing.assert_close(mapped[name], ref_grads[len(inputs) + k], atol=1e-5, rtol=1e-5)
    # and back
    back = cell.to_torch()
    torch.testing.assert_close(back(x, (h0, c0))[0] if mode == "lstm" else back(x, h0), ht, atol=1e-6, rtol=1e-6)


def test_gru_before_equals_transcription_of_the_seed():
    """An independent float64 transcription: W_h · [r_t * h_{t-1}, x_t] with the concatenation written out."""
    X, H = 3, 4
    cell = make("gru", dict(reset="before"), X, H)
    x, h_prev = torch.randn(5, X, dtype=torch.float64), torch.randn(5, H, dtype=torch.float64)
    Wih, Whh, b = cell.weight_ih.detach(), cell.weight_hh.detach(), cell.bias.detach()
    W = {g: torch.cat([Whh[k * H:(k + 1) * H], Wih[k * H:(k + 1) * H]], dim=1) for k, g in enumerate("zrh")}
    bb = {g: b[k * H:(k + 1) * H] for k, g in enumerate("zrh")}
    sig = lambda a: 1 / (1 + torch.exp(-a))
    z = sig(torch.cat([h_prev, x], 1) @ W["z"].T + bb["z"])
    r = sig(torch.cat([h_prev, x], 1) @ W["r"].T + bb["r"])
    h_tilde = torch.tanh(torch.cat([r * h_prev, x], 1) @ W["h"].T + bb["h"])
    h_expected = (1 - z) * h_prev + z * h_tilde
    h, _, gates = cell(x, h_prev, return_gates=True)
    torch.testing.assert_close(h, h_expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(gates["z"], z, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(gates["n"], h_tilde, atol=1e-12, rtol=1e-12)


def test_lstm_equals_transcription_of_the_seed():
    X, H = 3, 4
    cell = make("lstm", {}, X, H)
    x = torch.randn(2, X, dtype=torch.float64)
    h_prev, c_prev = torch.randn(2, H, dtype=torch.float64), torch.randn(2, H, dtype=torch.float64)
    Wih, Whh, b = cell.weight_ih.detach(), cell.weight_hh.detach(), cell.bias.detach()
    hx = torch.cat([h_prev, x], 1)
    gate = lambda k: hx @ torch.cat([Whh[k * H:(k + 1) * H], Wih[k * H:(k + 1) * H]], 1).T + b[k * H:(k + 1) * H]
    f, i, C_tilde, o = torch.sigmoid(gate(0)), torch.sigmoid(gate(1)), torch.tanh(gate(2)), torch.sigmoid(gate(3))
    C = f * c_prev + i * C_tilde
    h, st, tr = cell(x, (h_prev, c_prev), return_gates=True)
    torch.testing.assert_close(st.c, C, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(h, o * torch.tanh(C), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(tr["f"], f)
    torch.testing.assert_close(tr["g"], C_tilde)


@pytest.mark.parametrize("mode,opts", CELLS)
def test_unbatched_and_default_state(mode, opts):
    cell = make(mode, opts, dtype=torch.float32)
    x = torch.randn(3)
    h, st, tr = cell(x, return_gates=True)
    assert h.shape == (4,)
    assert set(tr) == set(cell.TRACES) and all(v.shape == (4,) for v in tr.values())
    h_b, _ = cell(x.unsqueeze(0))
    torch.testing.assert_close(h, h_b.squeeze(0))
    if mode == "lstm":
        assert isinstance(st, rnnlab.LSTMState)
        torch.testing.assert_close(h, tr["o"] * torch.tanh(tr["c"]))
    if mode == "gru":
        torch.testing.assert_close(h, tr["z"] * tr["n"])  # h_{t-1} = 0


def test_default_init():
    cell = rnnlab.LSTMCell(3, 8)
    b = cell.bias.detach()
    assert torch.all(b[:8] == 1) and torch.all(b[8:] == 0)  # forget bias 1
    Wf = cell.weight_hh[:8].detach()
    torch.testing.assert_close(Wf @ Wf.T, torch.eye(8), atol=1e-5, rtol=0)  # orthogonal block
    gru = rnnlab.GRUCell(3, 8)
    assert torch.all(gru.bias[:8] == -1) and torch.all(gru.bias[8:] == 0)
    t = rnnlab.RNNCell(3, 16, init="torch")
    assert t.weight_hh.abs().max() <= 0.25


@pytest.mark.parametrize(
    "call,exc,msg",
    [
        (lambda c: c(torch.randn(2, 2, 3)), ValueError, "x_t: expected a 2-D"),
        (lambda c: c(torch.randn(2, 5)), ValueError, "input_size = 3"),
        (lambda c: c(torch.randn(2, 3, dtype=torch.float64)), TypeError, "dtype"),
        (lambda c: c(torch.randn(2, 3), torch.randn(3, 4)), TypeError, "tuple"),
        (lambda c: c(torch.randn(2, 3), (torch.randn(3, 4), torch.randn(3, 4))), ValueError, "state.h: expected shape (2, 4)"),
        (lambda c: c([1.0, 2.0, 3.0]), TypeError, "x_t: expected a torch.Tensor"),
    ],
)
def test_cell_bad_input(call, exc, msg):
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
        call(rnnlab.LSTMCell(3, 4))


def test_cell_bad_construction():
    with pytest.raises(ValueError, match="nonlinearity"):
        rnnlab.RNNCell(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="reset"):
        rnnlab.GRUCell(3, 4, reset="middle")
    with pytest.raises(ValueError, match="hidden_size"):
        rnnlab.LSTMCell(3, 0)
    with pytest.raises(TypeError, match="input_size"):
        rnnlab.LSTMCell(3.0, 4)
    with pytest.raises(ValueError, match="reset='before'"):
        rnnlab.GRUCell(3, 4).to_torch()
    with pytest.raises(TypeError, match="torch.nn.GRUCell"):
        rnnlab.GRUCell.from_torch(nn.LSTMCell(3, 4))
