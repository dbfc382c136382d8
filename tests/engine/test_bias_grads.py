"""The biases' gradients, Σ ∂a over all T·B rows: ops.cpp's column_sums runs them as ATen's sum below 2^20 numbers
and as a GEMV against a column of ones from there (one level's loop, and the level wavefront's backward). At shapes
past that size, both give the float64 reference engine's gradients; the small shapes of the other tests cover the
sum."""

from __future__ import annotations

import pytest
import torch

import rnnlab
from rnnlab.engine import ops, wavefront

pytestmark = pytest.mark.skipif(not ops.available(), reason="the native operators are not built")


def _bias_grads(layer, x):
    out, _ = layer(x)
    loss = (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum()
    names = [n for n, _ in layer.named_parameters() if n.startswith("bias")]
    params = dict(layer.named_parameters())
    return dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names])))


GEMV_FROM = 2**20  # ops.cpp's column_sums: the numbers from which ∂b is a GEMV


def _check(make, x):
    torch.manual_seed(0)
    layer = make()
    layer.engine = "native"
    T, B, _ = x.shape
    assert T * B * layer.weight_ih_l0.shape[0] >= GEMV_FROM  # ∂b's rows × gates: past the sum's range
    got = _bias_grads(layer, x)
    torch.manual_seed(0)
    ref = make().double()
    ref.engine = "reference"
    want = _bias_grads(ref, x.double())
    assert got.keys() == want.keys() and got
    for name in want:
        torch.testing.assert_close(got[name].double(), want[name], atol=1e-4, rtol=1e-4, msg=name)


# (T, B, X, H): T·B rows × G·H gates at or past 2^20 numbers
@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: rnnlab.LSTM(8, 128), (64, 32, 8, 128)),  # 2048 × 512 = 2^20
        (lambda: rnnlab.GRU(8, 128, reset="after"), (256, 32, 8, 128)),  # ∂b 8192 × 384, ∂b_hn 8192 × 128 = 2^20
        (lambda: rnnlab.GRU(8, 128, reset="before"), (128, 32, 8, 128)),
        (lambda: rnnlab.RNN(8, 256), (128, 32, 8, 256)),
    ],
    ids=["lstm", "gru-after", "gru-before", "rnn"],
)
def test_large_bias_gradients_are_the_references(make, shape):
    T, B, X, _ = shape
    torch.manual_seed(1)
    _check(make, torch.randn(T, B, X) * 0.5)


def test_large_bias_gradients_through_the_wavefront(monkeypatch):
    """A 2-level stack on the level wavefront (RNNLAB_WAVEFRONT=1 forces it in training): each level's ∂b over
    2048 × 512 numbers."""
    monkeypatch.setenv("RNNLAB_WAVEFRONT", "1")
    torch.manual_seed(2)
    before = wavefront.CALLS["stack"]
    _check(lambda: rnnlab.LSTM(8, 128, num_layers=2), torch.randn(64, 32, 8) * 0.5)
    assert wavefront.CALLS["stack"] == before + 1  # the wavefront ran (the reference engine never calls it)
