"""The cells' own float32 activations (csrc/pointwise.h: act::tanh, act::sigmoid) against the correctly rounded
values, through rnnlab::activation, which runs the kernel clone the cells run on this CPU."""

import math

import numpy as np
import pytest
import torch

import rnnlab.engine.ops  # noqa: F401 (registers the operators)

REFERENCE = {"tanh": torch.tanh, "sigmoid": torch.sigmoid}


def _ulps(name, x):
    """(the op's error in ulps of the correctly rounded float32 value, signed toward larger magnitude; where finite)"""
    y = torch.ops.rnnlab.activation(x, name).double()
    truth = REFERENCE[name](x.double())
    rounded = truth.float().abs()
    ulp = (torch.nextafter(rounded, torch.tensor(math.inf)) - rounded).double()
    keep = torch.isfinite(x) & (rounded > 1e-37)  # below: σ's subnormal tail, within 1e-37 absolute
    return ((y - truth) / ulp * truth.sign())[keep]


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_within_two_and_a_half_ulps_over_the_float32_line(name):
    """Every 61st bit pattern of float32 (all signs and exponents, 70 M inputs), in chunks."""
    worst = 0.0
    for start in range(0, 2**32, 2**27):
        bits = np.arange(start, start + 2**27, 61, dtype=np.uint64).astype(np.uint32)
        err = _ulps(name, torch.from_numpy(bits.view(np.float32)))
        if err.numel():
            worst = max(worst, err.abs().max().item())
    assert worst <= 2.5, worst


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_dense_where_gates_live_and_unbiased(name):
    """Every float32 in [-10, 10] near 0.55 (tanh's change of form) and a dense normal draw: still within 2.5 ulps,
    and the mean signed error is a hundredth of an ulp at most (a bias would add up over a sequence's gradients)."""
    lo, hi = np.float32(0.5).view(np.uint32), np.float32(0.6).view(np.uint32)
    band = torch.from_numpy(np.arange(lo, hi, dtype=np.uint32).view(np.float32))
    assert _ulps(name, torch.cat([band, -band])).abs().max() <= 2.5
    torch.manual_seed(0)
    err = _ulps(name, torch.randn(2**22) * 3)
    assert err.abs().max() <= 2.5
    assert abs(err.mean().item()) <= 0.01, err.mean()


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_special_values(name):
    x = torch.tensor([math.nan, -math.nan, math.inf, -math.inf, 0.0, -0.0, 100.0, -100.0, 1e-30, -1e-30])
    y = torch.ops.rnnlab.activation(x, name)
    assert torch.isnan(y[:2]).all()
    ref = REFERENCE[name](x[2:])
    assert torch.allclose(y[2:], ref, rtol=2.5e-7, atol=2e-38)
    if name == "tanh":  # odd, sign of zero kept
        assert torch.equal(torch.signbit(y[4:6]), torch.tensor([False, True]))


def test_float64_is_the_c_library():
    x = torch.linspace(-20, 20, 10001, dtype=torch.float64)
    assert torch.allclose(torch.ops.rnnlab.activation(x, "tanh"), torch.tanh(x), rtol=1e-15, atol=1e-16)
    assert torch.allclose(torch.ops.rnnlab.activation(x, "sigmoid"), torch.sigmoid(x), rtol=1e-14, atol=1e-16)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="name: expected 'tanh' or 'sigmoid', got 'relu'"):
        torch.ops.rnnlab.activation(torch.zeros(3), "relu")
    with pytest.raises(TypeError, match="x: expected float32 or float64, got Int"):
        torch.ops.rnnlab.activation(torch.zeros(3, dtype=torch.int32), "tanh")


def test_the_cells_compute_the_same_activation_bit_for_bit():
    """The checks above hold for what the cells run: an RNN level with W_ih = I, W_hh = 0 and no bias has
    h_t = tanh(x_t) computed by the cell's own kernel (its clone, its code generation), and it equals
    rnnlab::activation's tanh bit for bit."""
    H = 64
    torch.manual_seed(0)
    xs = torch.cat([torch.randn(2**16) * 3, torch.linspace(-10, 10, 2**16)])
    x = xs.view(-1, 1, H)
    w_ih, w_hh, h0 = torch.eye(H).unsqueeze(0), torch.zeros(1, H, H), torch.zeros(1, 1, H)
    states = torch.ops.rnnlab.recurrent_level(x, w_ih, w_hh, h0, *(None,) * 13, cell="rnn_tanh", keep=False)[0]
    assert torch.equal(states[0, 1:].reshape(-1), torch.ops.rnnlab.activation(xs, "tanh"))
