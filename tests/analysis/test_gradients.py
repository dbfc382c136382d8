"""hidden_gradient_norms against hand-unrolled nets (torch.nn cells and hand-written equations),
an exactly geometric case, and fit_decay_rate on synthetic sequences."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import rnnlab
from rnnlab.analysis import fit_decay_rate, gradient_norm, hidden_gradient_norms


def _torch_cells(layer):
    """One torch.nn cell per (level, direction), holding the weights of layer.to_torch()."""
    ref = layer.to_torch().double()
    kind = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[layer.mode]
    cells = {}
    for k in range(layer.num_layers):
        for d in range(layer.num_directions):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            w_ih = getattr(ref, "weight_ih" + sfx)
            kw = {"nonlinearity": layer.options["nonlinearity"]} if layer.mode == "rnn" else {}
            cell = kind(w_ih.shape[1], layer.hidden_size, **kw).double()
            with torch.no_grad():
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(cell, name).copy_(getattr(ref, name + sfx))
            cells[k, d] = cell
    return cells


def _reference_norms(layer, x, loss_fn, level, direction, state="h"):
    """Unroll torch.nn cells step by step, retain the chosen states, differentiate with autograd."""
    cells = _torch_cells(layer)
    T, B, H = x.shape[0], x.shape[1], layer.hidden_size
    inp, kept = x, None
    for k in range(layer.num_layers):
        outs = []
        for d in range(layer.num_directions):
            h = torch.zeros(B, H, dtype=x.dtype)
            c = torch.zeros(B, H, dtype=x.dtype)
            hs, chosen = [None] * T, [None] * T
            for t in reversed(range(T)) if d else range(T):
                if layer.mode == "lstm":
                    h, c = cells[k, d](inp[t], (h, c))
                else:
                    h = cells[k, d](inp[t], h)
                hs[t] = h
                chosen[t] = c if state == "c" else h
            outs.append(torch.stack(hs))
            if (k, d) == (level, direction):
                kept = chosen
        inp = torch.cat(outs, -1)
    grads = torch.autograd.grad(loss_fn(inp), kept)
    return torch.stack([g.norm() for g in grads])


@pytest.mark.parametrize("cls, kw", [(rnnlab.RNN, {}), (rnnlab.LSTM, {}), (rnnlab.GRU, {"reset": "after"})])
@pytest.mark.parametrize("num_layers, bidirectional, level, direction", [(1, False, -1, 0), (2, True, 0, 1), (2, True, 1, 0)])
def test_matches_torch_cells_unrolled(cls, kw, num_layers, bidirectional, level, direction):
    layer = cls(3, 5, num_layers=num_layers, bidirectional=bidirectional, **kw).double()
    x = torch.randn(9, 4, 3, dtype=torch.float64)
    target = torch.randn(4, layer.num_directions * 5, dtype=torch.float64)
    loss_fn = lambda out: ((out[-1] - target) ** 2).mean() + out.pow(3).mean()
    got = hidden_gradient_norms(layer, x, loss_fn, level=level, direction=direction)
    want = _reference_norms(layer, x, loss_fn, level % num_layers, direction)
    assert got.shape == (9,)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_lstm_cell_state_norms():
    layer = rnnlab.LSTM(3, 4).double()
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    loss_fn = lambda out: out[-1].sum()
    got = hidden_gradient_norms(layer, x, loss_fn, state="c")
    torch.testing.assert_close(got, _reference_norms(layer, x, loss_fn, 0, 0, state="c"), rtol=1e-10, atol=1e-12)


def test_seed_gru_matches_hand_written_equations():
    """GRU reset="before" has no torch.nn twin: unroll the seed's equations by hand instead."""
    layer = rnnlab.GRU(2, 3).double()
    w_ih, w_hh, b = layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_l0
    x = torch.randn(6, 2, 2, dtype=torch.float64)
    h, hs = torch.zeros(2, 3, dtype=torch.float64), []
    for t in range(6):
        z = torch.sigmoid(x[t] @ w_ih[0:3].T + h @ w_hh[0:3].T + b[0:3])
        r = torch.sigmoid(x[t] @ w_ih[3:6].T + h @ w_hh[3:6].T + b[3:6])
        n = torch.tanh(x[t] @ w_ih[6:9].T + (r * h) @ w_hh[6:9].T + b[6:9])
        h = (1 - z) * h + z * n
        hs.append(h)
    loss_fn = lambda out: (out ** 2).sum()
    want = torch.stack([g.norm() for g in torch.autograd.grad(loss_fn(torch.stack(hs)), hs)])
    torch.testing.assert_close(hidden_gradient_norms(layer, x, loss_fn), want, rtol=1e-10, atol=1e-12)


def test_batch_first_and_finite_differences():
    """∂L/∂h_t by central differences: perturb h_t inside a hand-unrolled tanh RNN."""
    layer = rnnlab.RNN(2, 3, batch_first=True).double()
    w_ih, w_hh, b = layer.weight_ih_l0.detach(), layer.weight_hh_l0.detach(), layer.bias_l0.detach()
    x = torch.randn(1, 5, 2, dtype=torch.float64)  # (B, T, X)
    v = torch.randn(3, dtype=torch.float64)
    loss_fn = lambda out: out[:, -1] @ v  # out (B, T, H)

    def loss_with(t_pert, delta):
        h = torch.zeros(3, dtype=torch.float64)
        for t in range(5):
            h = torch.tanh(x[0, t] @ w_ih.T + h @ w_hh.T + b)
            if t == t_pert:
                h = h + delta
        return float(h @ v)

    eps = 1e-6
    fd = []
    for t in range(5):
        g = [(loss_with(t, eps * e) - loss_with(t, -eps * e)) / (2 * eps) for e in torch.eye(3, dtype=torch.float64)]
        fd.append(math.sqrt(sum(gi * gi for gi in g)))
    got = hidden_gradient_norms(layer, x, loss_fn)
    np.testing.assert_allclose(got.numpy(), fd, rtol=1e-6)


def test_scaled_identity_recurrence_is_exactly_geometric():
    """x = 0, b = 0, W_hh = a·I: h stays 0, tanh'(0) = 1, so ‖∂L/∂h_t‖ = |a|^(T-1-t)·‖v‖ and γ = a."""
    a, T = 0.8, 12
    layer = rnnlab.RNN(2, 4).double()
    with torch.no_grad():
        layer.weight_hh_l0.copy_(a * torch.eye(4, dtype=torch.float64))
        layer.bias_l0.zero_()
    v = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    norms = hidden_gradient_norms(layer, torch.zeros(T, 1, 2, dtype=torch.float64), lambda out: out[-1, 0] @ v)
    want = torch.tensor([a ** (T - 1 - t) for t in range(T)], dtype=torch.float64) * v.norm()
    torch.testing.assert_close(norms, want, rtol=1e-12, atol=0)
    assert fit_decay_rate(norms) == pytest.approx(a, rel=1e-10)


@pytest.mark.parametrize("gamma", [0.5, 0.93, 1.0, 1.2])
def test_fit_decay_rate_recovers_geometric_factor(gamma):
    T = 40
    seq = 3.0 * gamma ** (T - 1 - np.arange(T))
    assert fit_decay_rate(seq) == pytest.approx(gamma, rel=1e-10)
    assert fit_decay_rate(torch.tensor(seq)) == pytest.approx(gamma, rel=1e-10)


def test_fit_decay_rate_skips_zeros_and_rejects_too_few():
    seq = 0.7 ** (9 - np.arange(10.0))
    seq[[0, 4]] = 0.0
    seq[5] = np.nan
    assert fit_decay_rate(seq) == pytest.approx(0.7, rel=1e-10)
    with pytest.raises(ValueError, match="norms: expected at least two"):
        fit_decay_rate([0.0, 1.0])
    with pytest.raises(ValueError, match="1-D"):
        fit_decay_rate(np.ones((2, 2)))


def test_gradient_norm_is_clip_grad_norms_measure():
    m = nn.Linear(4, 3)
    m(torch.randn(5, 4)).pow(2).sum().backward()
    want = float(torch.nn.utils.clip_grad_norm_(m.parameters(), max_norm=1e9))
    assert gradient_norm(m.parameters()) == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="parameters"):
        gradient_norm(nn.Linear(2, 2).parameters())


def test_bad_arguments_are_named():
    layer = rnnlab.LSTM(3, 4)
    x = torch.randn(5, 2, 3)
    f = lambda out: out.sum()
    with pytest.raises(TypeError, match="layer"):
        hidden_gradient_norms(nn.LSTM(3, 4), x, f)
    with pytest.raises(TypeError, match="loss_fn"):
        hidden_gradient_norms(layer, x, 3)
    with pytest.raises(ValueError, match="x: expected last dimension"):
        hidden_gradient_norms(layer, torch.randn(5, 2, 2), f)
    with pytest.raises(ValueError, match="level"):
        hidden_gradient_norms(layer, x, f, level=1)
    with pytest.raises(ValueError, match="direction"):
        hidden_gradient_norms(layer, x, f, direction=1)
    with pytest.raises(ValueError, match="state"):
        hidden_gradient_norms(rnnlab.GRU(3, 4), x, f, state="c")
    with pytest.raises(ValueError, match="loss_fn: expected it to return a scalar"):
        hidden_gradient_norms(layer, x, lambda out: out)


@pytest.mark.parametrize("options", [dict(layer_norm=True), dict(peepholes=True, coupled=True),
                                     dict(recurrent_dropout=0.3), dict(zoneout=0.3)])
def test_variants_follow_the_layer(options):
    """The unrolled layer computes what the layer computes, variants included (dropouts drawn from the
    same seed as the layer's own call), so its output's gradient norms are the layer's."""
    import rnnlab
    from rnnlab.analysis.gradients import _unroll

    layer = rnnlab.LSTM(2, 3, num_layers=2, **options).double().train()
    x = torch.randn(6, 4, 2, dtype=torch.float64)
    torch.manual_seed(5)
    out, _ = layer(x)
    torch.manual_seed(5)
    out_unrolled, _ = _unroll(layer, x, -1, 0, 0)
    torch.testing.assert_close(out_unrolled, out, atol=1e-12, rtol=1e-12)
    norms = rnnlab.analysis.hidden_gradient_norms(layer.eval(), x, lambda o: o[-1].sum())
    assert norms.shape == (6,) and torch.all(torch.isfinite(norms))
