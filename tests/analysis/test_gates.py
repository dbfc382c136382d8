"""gate_saturation against counts done in numpy."""

import numpy as np
import pytest
import torch

import rnnlab
from rnnlab.analysis import gate_saturation


def test_counts_match_numpy_per_unit():
    v = torch.rand(20, 3, 5)
    sat = gate_saturation({"f": v, "g": v * 2 - 1, "c": v})
    assert set(sat) == {"f"}  # g (tanh candidate) and c (cell state) are not gates
    a = v.numpy().reshape(-1, 5)
    np.testing.assert_allclose(sat["f"].left.numpy(), (a < 0.1).mean(0))
    np.testing.assert_allclose(sat["f"].right.numpy(), (a > 0.9).mean(0))


def test_layer_traces_nest_by_level():
    layer = rnnlab.GRU(2, 4, num_layers=2, bidirectional=True)
    _, _, traces = layer(torch.randn(6, 3, 2), return_gates=True)
    sat = gate_saturation(traces, low=0.2, high=0.7)
    assert set(sat) == {"l0", "l0_reverse", "l1", "l1_reverse"}
    assert set(sat["l1"]) == {"z", "r"}
    z = traces["l1"]["z"].detach().numpy().reshape(-1, 4)
    np.testing.assert_allclose(sat["l1"]["z"].left.numpy(), (z < 0.2).mean(0))
    np.testing.assert_allclose(sat["l1"]["z"].right.numpy(), (z > 0.7).mean(0))


def test_extremes_and_bad_arguments():
    sat = gate_saturation({"i": torch.tensor([[0.0, 1.0], [0.05, 0.95]])})
    assert sat["i"].left.tolist() == [1.0, 0.0] and sat["i"].right.tolist() == [0.0, 1.0]
    with pytest.raises(TypeError, match="traces"):
        gate_saturation([torch.rand(3)])
    with pytest.raises(ValueError, match="low, high"):
        gate_saturation({"f": torch.rand(3, 2)}, low=0.9, high=0.1)
    with pytest.raises(TypeError, match="low"):
        gate_saturation({"f": torch.rand(3, 2)}, low="0.1")
    with pytest.raises(TypeError, match=r"traces\['f'\]"):
        gate_saturation({"f": [0.5]})
