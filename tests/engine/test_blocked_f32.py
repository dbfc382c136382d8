"""brgemm.h's float32 per-step products on W_hh blocked once per call (RNNLAB_BRGEMM_F32=1) give BLAS's results
(RNNLAB_BRGEMM_F32=0) and float64's, forward and backward, on every route a loop takes: one loop, split by row, split
by unit, both directions, a stack, sequences of different lengths, widths that are not a whole number of blocks."""

from __future__ import annotations

import pytest
import torch

import rnnlab
from rnnlab.engine import ops

pytestmark = pytest.mark.skipif(not ops.available(), reason="the native operators are not built")

MAKERS = {
    "lstm": lambda X, H, **kw: rnnlab.LSTM(X, H, **kw),
    "gru-before": lambda X, H, **kw: rnnlab.GRU(X, H, **kw),
    "gru-after": lambda X, H, **kw: rnnlab.GRU(X, H, reset="after", **kw),
    "rnn": lambda X, H, **kw: rnnlab.RNN(X, H, **kw),
}


def _results(layer, x, lengths=None):
    out, state = layer(x, lengths=lengths)
    parts = state if isinstance(state, tuple) else (state,)
    loss = out.square().sum() + sum(p.square().sum() for p in parts)
    return [out.detach(), *(p.detach() for p in parts), *torch.autograd.grad(loss, [x, *layer.parameters()])]


def _three(layer, x, monkeypatch, lengths=None):
    """(blocked, BLAS, float64) results of the same layer and input, and how many blocked products ran."""
    monkeypatch.setenv("RNNLAB_BRGEMM_F32", "1")
    before = torch.ops.rnnlab.brgemm_f32_products()
    blocked = _results(layer, x, lengths)
    ran = torch.ops.rnnlab.brgemm_f32_products() - before
    monkeypatch.setenv("RNNLAB_BRGEMM_F32", "0")
    plain = _results(layer, x, lengths)
    wide = _results(layer.double(), x.detach().double().requires_grad_(), lengths)
    layer.float()
    return blocked, plain, wide, ran


@pytest.mark.parametrize("cell", list(MAKERS))
@pytest.mark.parametrize("route", ["one", "rows", "units"])
@pytest.mark.parametrize("H", [64, 70, 200])
def test_blocked_products_match_blas_and_float64(cell, route, H, monkeypatch):
    monkeypatch.setenv("RNNLAB_SPLIT", "1" if route == "units" else "0")
    monkeypatch.setenv("RNNLAB_ROWS", "1" if route == "rows" else "0")
    monkeypatch.setenv("RNNLAB_SMALL", "0")
    torch.manual_seed(0)
    layer = MAKERS[cell](12, H, engine="native")
    x = torch.randn(7, 10, 12, requires_grad=True)
    blocked, plain, wide, ran = _three(layer, x, monkeypatch)
    assert ran > 0
    for a, b, c in zip(blocked, plain, wide):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(a.double(), c, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("cell", list(MAKERS))
def test_blocked_products_in_two_directions_two_levels_and_lengths(cell, monkeypatch):
    monkeypatch.setenv("RNNLAB_SMALL", "0")
    torch.manual_seed(1)
    layer = MAKERS[cell](5, 40, engine="native", num_layers=2, bidirectional=True)
    x = torch.randn(9, 6, 5, requires_grad=True)
    lengths = torch.tensor([9, 2, 5, 9, 1, 7])
    blocked, plain, wide, ran = _three(layer, x, monkeypatch, lengths)
    assert ran > 0
    for a, b, c in zip(blocked, plain, wide):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(a.double(), c, atol=2e-5, rtol=2e-5)


def test_off_runs_no_blocked_products(monkeypatch):
    """RNNLAB_BRGEMM_F32=0 and RNNLAB_PACK=1 (MKL's packed form wherever it can run) run none."""
    torch.manual_seed(0)
    layer = rnnlab.LSTM(8, 64, engine="native")
    x = torch.randn(5, 16, 8)
    for name, value in (("RNNLAB_BRGEMM_F32", "0"), ("RNNLAB_PACK", "1")):
        monkeypatch.delenv("RNNLAB_BRGEMM_F32", raising=False)
        monkeypatch.setenv(name, value)
        before = torch.ops.rnnlab.brgemm_f32_products()
        layer(x)[0].sum().backward()
        assert torch.ops.rnnlab.brgemm_f32_products() == before, name
        monkeypatch.delenv(name)


def test_the_route_is_named(monkeypatch):
    """rnnlab::f32_products names the route the float32 products take now (the bench prints it)."""
    monkeypatch.setenv("RNNLAB_BRGEMM_F32", "1")
    assert torch.ops.rnnlab.f32_products().startswith("brgemm")
    monkeypatch.setenv("RNNLAB_BRGEMM_F32", "0")
    assert torch.ops.rnnlab.f32_products().startswith("BLAS")
