"""ONNX export of cell variants: structural ones have no ONNX operator and are refused; recurrent
dropout and zoneout are off at inference, so those layers export as the plain cell."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import rnnlab
from rnnlab.export import to_onnx


@pytest.mark.parametrize("layer,named", [
    (rnnlab.LSTM(2, 3, layer_norm=True), "layer_norm=True"),
    (rnnlab.LSTM(2, 3, peepholes=True), "peepholes=True"),
    (rnnlab.LSTM(2, 3, coupled=True, zoneout=0.1), "coupled=True"),
    (rnnlab.GRU(2, 3, reset="after", layer_norm=True), "layer_norm=True"),
])
def test_structural_variants_are_refused(layer, named, tmp_path):
    with pytest.raises(ValueError, match=rf"model: \w+ with {named}.* has no ONNX operator"):
        to_onnx(layer, tmp_path / "m.onnx")
    model = nn.Sequential(nn.Linear(2, 2))
    model.rnn = layer
    with pytest.raises(ValueError, match=rf"with {named}"):
        to_onnx(model, tmp_path / "m.onnx", (torch.randn(4, 1, 2),))


def test_regularised_layer_exports_its_inference_function(tmp_path):
    layer = rnnlab.GRU(2, 3, reset="after", zoneout=0.3, recurrent_dropout=0.2)
    to_onnx(layer, tmp_path / "m.onnx")
    assert layer.training  # restored
    x = torch.randn(5, 2, 2)
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})
    with torch.no_grad():
        out, h_n = layer.eval()(x)
    np.testing.assert_allclose(got[0], out.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(got[1], h_n.numpy(), atol=1e-5, rtol=0)
