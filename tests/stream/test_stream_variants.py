"""Streaming cell variants: structural ones step through their equations and equal the full-sequence
call; regularisers are off, as at evaluation, and training mode is refused."""

import pytest
import torch

import rnnlab
from rnnlab.stream import Streamer

VARIANTS = [
    (rnnlab.LSTM, dict(layer_norm=True)),
    (rnnlab.LSTM, dict(peepholes=True, coupled=True)),
    (rnnlab.GRU, dict(layer_norm=True)),
    (rnnlab.GRU, dict(layer_norm=True, reset="after", zoneout=0.2)),
]


def randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return module


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("cls,opts", VARIANTS)
def test_steps_and_chunks_equal_the_full_sequence(cls, opts, fused):
    layer = randomise(cls(3, 4, num_layers=2, **opts).double()).eval()
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    want, h_n = layer(x)
    s = Streamer(layer, fused=fused)
    outs = [s.step(x[t]).unsqueeze(0) for t in range(3)] + [s.feed(x[3:5])] + [s.step(x[t]).unsqueeze(0) for t in (5, 6)]
    torch.testing.assert_close(torch.cat(outs), want, atol=1e-12, rtol=1e-12)
    for a, b in zip(s.state if isinstance(s.state, tuple) else (s.state,), h_n if isinstance(h_n, tuple) else (h_n,)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_training_mode_with_regularisers_is_refused():
    s = Streamer(rnnlab.LSTM(3, 4, recurrent_dropout=0.3))
    with pytest.raises(ValueError, match=r"model: in training mode with recurrent_dropout=0.3; .*model.eval\(\)"):
        s.step(torch.randn(2, 3))
