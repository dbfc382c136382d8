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


def test_variants_are_sized_for_the_reference_engine_they_run_on():
    plain, normed = rnnlab.LSTM(4, 16), rnnlab.LSTM(4, 16, layer_norm=True)
    peep = rnnlab.LSTM(4, 16, peepholes=True)  # the native engine computes peepholes
    assert memory.bytes_per_step(peep, 5, 4, True) == memory.bytes_per_step(plain, 5, 4, True)
    reference = rnnlab.LSTM(4, 16, engine="reference")
    assert memory.bytes_per_step(normed, 5, 4, True) == memory.bytes_per_step(reference, 5, 4, True)
    assert memory.bytes_per_step(normed, 5, 4, True) > memory.bytes_per_step(plain, 5, 4, True)


def test_small_calls_do_not_read_the_memory_figures(monkeypatch):
    layer = rnnlab.LSTM(3, 4)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 0)  # nothing free: only big calls may notice
    layer(torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="x: this call needs"):
        layer(torch.zeros(1, 1, 3).expand(100_000, 1_000, 3))
