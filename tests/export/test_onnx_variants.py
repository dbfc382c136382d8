"""ONNX export of cell variants: peepholes and the coupled gate run in onnxruntime's own LSTM kernel
(inputs P, attribute input_forget) and equal the reference engine; layer norm has no ONNX operator
and is refused; recurrent dropout and zoneout are off at inference, so those layers export."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import rnnlab
from rnnlab.export import to_onnx


def randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return module


def run_onnx(path, feed):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {k: v.numpy() for k, v in feed.items()})


@pytest.mark.parametrize("opts", [dict(peepholes=True), dict(coupled=True), dict(coupled=True, peepholes=True)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_peepholes_and_coupled_gate_run_in_onnx_lstm(opts, bidirectional, tmp_path):
    layer = randomise(rnnlab.LSTM(2, 3, num_layers=2, bidirectional=bidirectional, **opts))
    to_onnx(layer, tmp_path / "m.onnx", initial_state=True, lengths=True)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    nodes = [n for n in proto.graph.node if n.op_type == "LSTM"]
    assert len(nodes) == 2
    for n in nodes:
        attrs = {a.name: a for a in n.attribute}
        assert (len(n.input) == 8 and n.input[7] != "") == bool(opts.get("peepholes"))  # P, the 8th input
        assert ("input_forget" in attrs and attrs["input_forget"].i == 1) == bool(opts.get("coupled"))
    D = 2 if bidirectional else 1
    x, h0, c0 = torch.randn(6, 3, 2), torch.randn(2 * D, 3, 3), torch.randn(2 * D, 3, 3)
    lengths = torch.tensor([6, 2, 4])
    got = run_onnx(tmp_path / "m.onnx", {"x": x, "h0": h0, "c0": c0, "lengths": lengths})
    layer.engine = "reference"
    with torch.no_grad():
        out, (h_n, c_n) = layer(x, (h0, c0), lengths=lengths)
    for a, b in zip(got, (out, h_n, c_n)):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-5, rtol=0)


def test_peephole_lstm_inside_a_model(tmp_path):
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = randomise(rnnlab.LSTM(2, 3, peepholes=True, coupled=True))
            self.head = nn.Linear(3, 1)

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    model = Model()
    x = torch.randn(5, 2, 2)
    to_onnx(model, tmp_path / "m.onnx", (x,))
    (got,) = run_onnx(tmp_path / "m.onnx", {next(i.name for i in onnx.load(str(tmp_path / "m.onnx")).graph.input): x})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("layer", [rnnlab.LSTM(2, 3, layer_norm=True, peepholes=True),
                                   rnnlab.GRU(2, 3, reset="after", layer_norm=True)])
def test_layer_norm_is_refused(layer, tmp_path):
    with pytest.raises(ValueError, match=r"model: \w+ with layer_norm=True has no ONNX operator"):
        to_onnx(layer, tmp_path / "m.onnx")
    model = nn.Sequential(nn.Linear(2, 2))
    model.rnn = layer
    with pytest.raises(ValueError, match="with layer_norm=True"):
        to_onnx(model, tmp_path / "m.onnx", (torch.randn(4, 1, 2),))


def test_regularised_layer_exports_its_inference_function(tmp_path):
    layer = rnnlab.GRU(2, 3, reset="after", zoneout=0.3, recurrent_dropout=0.2)
    to_onnx(layer, tmp_path / "m.onnx")
    assert layer.training  # restored
    x = torch.randn(5, 2, 2)
    got = run_onnx(tmp_path / "m.onnx", {"x": x})
    with torch.no_grad():
        out, h_n = layer.eval()(x)
    np.testing.assert_allclose(got[0], out.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(got[1], h_n.numpy(), atol=1e-5, rtol=0)
