"""The memory guard refuses what cannot fit, before allocating anything, and names the fix."""

import pytest
import torch

import rnnlab
from rnnlab.layers import memory


def test_huge_sizes_refused_at_construction():
    with pytest.raises(ValueError, match="hidden_size: these sizes need .* parameters"):
        rnnlab.LSTM(10, 200_000)
    with pytest.raises(ValueError, match="hidden_size"):
        rnnlab.GRUCell(10, 200_000)


def test_activations_that_cannot_fit_are_refused_with_chunk_size():
    layer = rnnlab.LSTM(8, 1024, num_layers=2, bidirectional=True)
    x = torch.zeros(1, 1, 8).expand(400_000, 64, 8)  # a view: no memory behind it
    with pytest.raises(ValueError, match=r"x: this call needs about .* GiB .* chunks of at most (\d+) steps") as e:
        layer(x)
    chunk = int(str(e.value).split("chunks of at most ")[1].split()[0])
    per_step = memory.bytes_per_step(layer, 64, 4, training=True)
    assert 0 < chunk * per_step <= memory.available_bytes(torch.device("cpu"))


def test_estimate_matches_the_engine_layout():
    layer = rnnlab.GRU(4, 16, num_layers=3, bidirectional=True)
    # per level and direction: gates (G·H) + states (S·H) + output (H) per batch row, float32
    assert memory.bytes_per_step(layer, 5, 4, training=True) == 6 * 5 * 16 * (3 + 1 + 1) * 4
    assert memory.bytes_per_step(layer, 5, 4, training=False) == 2 * 2 * 5 * 16 * 4


def test_inference_needs_less_and_small_calls_pass():
    layer = rnnlab.RNN(2, 3)
    out, h = layer(torch.randn(1000, 2, 2))
    assert out.shape == (1000, 2, 3)


def test_variants_are_sized_for_what_they_keep():
    """Peepholes keep nothing more; layer norm keeps x W_ihᵀ, the normalised GEMM outputs and their gradients
    (3G units) and, on the LSTM, LN(C_t)'s two; zoneout its keep masks (S) and the LSTM's C_t before zoneout;
    a layer on the reference engine three times the native engine's."""
    units = lambda layer: memory.bytes_per_step(layer, 5, 4, True) / (5 * 16 * 4)  # noqa: E731
    assert units(rnnlab.LSTM(4, 16)) == 4 + 2 + 1
    assert units(rnnlab.LSTM(4, 16, peepholes=True)) == 4 + 2 + 1
    assert units(rnnlab.LSTM(4, 16, layer_norm=True)) == 4 + 2 + 1 + 12 + 2
    assert units(rnnlab.GRU(4, 16, layer_norm=True)) == 3 + 1 + 1 + 9
    assert units(rnnlab.LSTM(4, 16, zoneout=0.1)) == 4 + 2 + 1 + 3
    assert units(rnnlab.GRU(4, 16, zoneout=0.1)) == 3 + 1 + 1 + 1
    assert units(rnnlab.GRU(4, 16, zoneout=0.1).eval()) == 3 + 1 + 1  # zoneout is off at evaluation
    assert units(rnnlab.LSTM(4, 16, engine="reference")) == 3 * (4 + 2 + 1)


def test_small_calls_do_not_read_the_memory_figures(monkeypatch):
    layer = rnnlab.LSTM(3, 4)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 0)  # nothing free: only big calls may notice
    layer(torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="x: this call needs"):
        layer(torch.zeros(1, 1, 3).expand(100_000, 1_000, 3))
