"""RNNLAB_PACK=1: the recurrent weight packed once per call (MKL's cblas_sgemm_pack) gives the unpacked loops'
results, forward and backward, for every cell (float32; float64 is never packed)."""

from __future__ import annotations

import pytest
import torch

import rnnlab
from rnnlab.engine import ops

pytestmark = pytest.mark.skipif(not ops.available(), reason="the native operators are not built")


@pytest.mark.parametrize("make", [lambda: rnnlab.LSTM(6, 16, bidirectional=True), lambda: rnnlab.GRU(6, 16),
                                  lambda: rnnlab.GRU(6, 16, reset="after"), lambda: rnnlab.RNN(6, 16),
                                  lambda: rnnlab.LSTM(6, 16, proj_size=5)])
def test_packed_weights_give_the_same_results(make, monkeypatch):
    torch.manual_seed(0)
    layer = make()
    layer.engine = "native"
    x = torch.randn(9, 4, 6)
    lengths = torch.tensor([9, 3, 7, 1])

    def run():
        out, state = layer(x, lengths=lengths)
        parts = state if isinstance(state, tuple) else (state,)
        loss = out.square().sum() + sum(p.sum() for p in parts)
        return [out.detach(), *(p.detach() for p in parts), *torch.autograd.grad(loss, list(layer.parameters()))]

    monkeypatch.setenv("RNNLAB_PACK", "0")
    plain = run()
    monkeypatch.setenv("RNNLAB_PACK", "1")
    packed = run()
    for a, b in zip(packed, plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
