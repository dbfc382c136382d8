"""The default engine under torch's tracing tools (issue: engine v2). For RNN, LSTM and both GRU forms,
stacked, bidirectional and with lengths, training and inference:

* ``torch.compile(model, fullgraph=True)`` runs with no graph break and equals eager (values and gradients);
* ``torch.export.export`` works with a dynamic batch and time axis and holds one operator per level (no
  time loop unrolled);
* ``torch.onnx.export(model, args, dynamo=True)`` writes ONNX's own RNN/LSTM/GRU nodes, equal in
  onnxruntime to 1e-5.
"""

import numpy as np
import pytest
import torch
from torch import nn

import rnnlab
from rnnlab.engine import ops

pytestmark = pytest.mark.skipif(not ops.available(), reason="the native operators are not built")

CELLS = {"rnn": (rnnlab.RNN, {}), "lstm": (rnnlab.LSTM, {}), "gru-before": (rnnlab.GRU, dict(reset="before")),
         "gru-after": (rnnlab.GRU, dict(reset="after"))}
ONNX_OP = {"rnn": "RNN", "lstm": "LSTM", "gru-before": "GRU", "gru-after": "GRU"}


class Model(nn.Module):
    """An rnnlab layer between a linear input map and a head, called with lengths."""

    def __init__(self, cls, opts):
        super().__init__()
        self.inp = nn.Linear(3, 4)
        self.rnn = cls(4, 5, num_layers=2, bidirectional=True, init="torch", **opts)
        self.head = nn.Linear(10, 2)

    def forward(self, x, lengths):
        out, h = self.rnn(torch.tanh(self.inp(x)), lengths=lengths)
        h = h[0] if isinstance(h, tuple) else h
        return self.head(out), h


def _inputs(T, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    return torch.randn(T, B, 3, generator=g), lengths


@pytest.mark.parametrize("name", sorted(CELLS))
def test_compile_fullgraph_training_equals_eager(name):
    torch.manual_seed(0)
    model = Model(*CELLS[name])
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x, lengths = _inputs(6, 3)
    grads = []
    for m in (compiled, model):
        xg = x.clone().requires_grad_()
        y, h = m(xg, lengths)
        (y.square().sum() + h.sum()).backward()
        grads.append([y.detach(), h.detach(), xg.grad, *(p.grad.clone() for p in model.parameters())])
        model.zero_grad()
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_compile_fullgraph_inductor_inference():
    torch.manual_seed(0)
    model = Model(*CELLS["lstm"]).eval()
    compiled = torch.compile(model, fullgraph=True)
    x, lengths = _inputs(6, 3)
    with torch.no_grad():
        for a, b in zip(compiled(x, lengths), model(x, lengths)):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_export_dynamic_batch_and_time_one_operator_per_level(name):
    torch.manual_seed(0)
    model = Model(*CELLS[name]).eval()
    T, B = torch.export.Dim("T", min=2, max=4096), torch.export.Dim("B", min=2, max=4096)
    ep = torch.export.export(model, _inputs(6, 3), dynamic_shapes=({0: T, 1: B}, {0: B}))
    nodes = [n for n in ep.graph.nodes if n.op == "call_function" and "rnnlab" in str(n.target)]
    assert len(nodes) == model.rnn.num_layers  # one node per level, both directions inside it
    for T_, B_ in ((6, 3), (11, 5), (2, 2)):
        x, lengths = _inputs(T_, B_, seed=T_)
        with torch.no_grad():
            for a, b in zip(ep.module()(x, lengths), model(x, lengths)):
                torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_onnx_dynamo_export_writes_recurrent_nodes(name, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model = Model(*CELLS[name]).eval()
    T, B = torch.export.Dim("T", min=2, max=4096), torch.export.Dim("B", min=2, max=4096)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, _inputs(6, 3), str(path), dynamo=True, dynamic_shapes=({0: T, 1: B}, {0: B}),
                      verbose=False)
    proto = onnx.load(str(path))
    kinds = [n.op_type for n in proto.graph.node]
    assert kinds.count(ONNX_OP[name]) == model.rnn.num_layers
    assert not {"Loop", "Scan"} & set(kinds)
    session = ort.InferenceSession(str(path))
    for T_, B_ in ((6, 3), (13, 4)):
        x, lengths = _inputs(T_, B_, seed=T_)
        feeds = dict(zip([i.name for i in session.get_inputs()], (x.numpy(), lengths.numpy())))
        got = session.run(None, feeds)
        with torch.no_grad():
            want = model(x, lengths)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b.numpy(), atol=1e-5, rtol=0)


def test_onnx_dynamo_export_refuses_layer_norm(tmp_path):
    pytest.importorskip("onnxscript")
    model = Model(rnnlab.LSTM, dict(layer_norm=True)).eval()
    with pytest.raises(Exception, match="layer_norm=True has no ONNX operator"):
        torch.onnx.export(model, _inputs(5, 2), str(tmp_path / "m.onnx"), dynamo=True, verbose=False)
