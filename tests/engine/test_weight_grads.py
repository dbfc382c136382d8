"""The weights' gradients over all T·B rows, ∂W = ∂aᵀ · v, computed as given or with the GEMM's roles swapped,
(vᵀ · ∂a)ᵀ (ops.cpp's swap_weight_grad; RNNLAB_WGRAD=1 forces the swap, 0 forbids it): both forms, and the default
rule, give the reference engine's float64 gradients, for every cell and the layer options that change ∂W's GEMMs."""

from __future__ import annotations

import pytest
import torch

import rnnlab
from rnnlab.engine import ops

pytestmark = pytest.mark.skipif(not ops.available(), reason="the native operators are not built")

LAYERS = {
    "lstm": lambda: rnnlab.LSTM(5, 12),
    "lstm-bidirectional-2": lambda: rnnlab.LSTM(5, 12, num_layers=2, bidirectional=True),
    "lstm-proj": lambda: rnnlab.LSTM(5, 12, proj_size=4),
    "gru-before": lambda: rnnlab.GRU(5, 12, reset="before"),
    "gru-after": lambda: rnnlab.GRU(5, 12, reset="after"),
    "gru-after-no-bias": lambda: rnnlab.GRU(5, 12, reset="after", bias=False),
    "rnn": lambda: rnnlab.RNN(5, 12),
}


def _grads(layer, x, lengths):
    out, state = layer(x, lengths=lengths)
    parts = state if isinstance(state, tuple) else (state,)
    loss = (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum() + sum(p.square().sum() for p in parts)
    return torch.autograd.grad(loss, [x, *layer.parameters()])


def _reference(make, x, lengths):
    torch.manual_seed(0)
    ref = make().double()
    ref.engine = "reference"
    return _grads(ref, x.detach().double().requires_grad_(), lengths)


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("swap", ["0", "1"])
def test_both_forms_give_the_reference_gradients(name, swap, monkeypatch):
    monkeypatch.setenv("RNNLAB_WGRAD", swap)
    torch.manual_seed(1)
    x = torch.randn(7, 3, 5, requires_grad=True)
    lengths = torch.tensor([7, 2, 5])
    torch.manual_seed(0)
    layer = LAYERS[name]()
    layer.engine = "native"
    got = _grads(layer, x, lengths)
    want = _reference(LAYERS[name], x, lengths)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.double(), w, atol=2e-5, rtol=1e-4)


def test_both_forms_in_float64_agree_to_rounding(monkeypatch):
    """float64 runs the same rule (only the bf16 mode keeps its own GEMMs): swapped and as given agree to float64's
    rounding."""
    torch.manual_seed(2)
    x = torch.randn(6, 4, 5, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(0)
    layer = rnnlab.LSTM(5, 12).double()
    layer.engine = "native"
    got = {}
    for swap in ("0", "1"):
        monkeypatch.setenv("RNNLAB_WGRAD", swap)
        got[swap] = _grads(layer, x, None)
    for a, b in zip(got["1"], got["0"]):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_the_default_rule_at_a_shape_it_swaps(monkeypatch):
    """Unset, the rule swaps where ∂W is wide and short over at least 2048 rows (here the LSTM's ∂W_ih, 4·16 × 8, and
    ∂W_hh, 4·16 × 16, over 64 × 32 rows), and the gradients are the reference's and the unswapped form's."""
    monkeypatch.delenv("RNNLAB_WGRAD", raising=False)
    rule = torch.ops.rnnlab.swaps_weight_grad
    assert rule(64 * 32, 4 * 16, 8) and rule(64 * 32, 4 * 16, 16)  # this test's ∂W_ih and ∂W_hh
    assert not rule(2047, 4 * 16, 8) and not rule(2048, 63, 16) and not rule(10**6, 256, 256)  # few rows; G·H < 4K
    monkeypatch.setenv("RNNLAB_WGRAD", "0")
    assert not rule(64 * 32, 4 * 16, 8)
    monkeypatch.setenv("RNNLAB_WGRAD", "1")
    assert rule(2, 3, 4)
    monkeypatch.delenv("RNNLAB_WGRAD")
    torch.manual_seed(3)
    x = torch.randn(64, 32, 8, requires_grad=True)
    torch.manual_seed(0)
    layer = rnnlab.LSTM(8, 16)
    layer.engine = "native"
    default = _grads(layer, x, None)
    monkeypatch.setenv("RNNLAB_WGRAD", "0")
    given = _grads(layer, x, None)
    torch.manual_seed(0)
    want = _reference(lambda: rnnlab.LSTM(8, 16), x, None)
    for d, g, w in zip(default, given, want):
        torch.testing.assert_close(d, g, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(d.double(), w, atol=1e-4, rtol=1e-4)
