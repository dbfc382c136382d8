"""Inference as its own path: under no_grad / inference_mode a native layer's levels keep nothing for a
backward (the operator's keep=False) and give exactly the training path's outputs."""

from __future__ import annotations

import pytest
import torch

import rnnlab
from rnnlab.engine import ops

pytestmark = pytest.mark.skipif(not ops.available(), reason="the native operators are not built")


def _spy(monkeypatch):
    """The keep flag of every level call: ``recurrent_level``'s, and True for ``level_outputs`` (the eager
    training path, which always keeps)."""
    calls = []
    real, outputs = ops.recurrent_level, ops.level_outputs

    def spy(*args, **kwargs):
        calls.append(kwargs.get("keep", True))
        return real(*args, **kwargs)

    def spy_outputs(*args, **kwargs):
        calls.append(True)
        return outputs(*args, **kwargs)

    monkeypatch.setattr(ops, "recurrent_level", spy)
    monkeypatch.setattr(ops, "level_outputs", spy_outputs)
    return calls


@pytest.mark.parametrize("make", [lambda: rnnlab.LSTM(3, 5, 2, bidirectional=True), lambda: rnnlab.GRU(3, 5, 2),
                                  lambda: rnnlab.GRU(3, 5, reset="after"), lambda: rnnlab.RNN(3, 5, 2),
                                  lambda: rnnlab.LSTM(3, 5, 2, proj_size=2)])
@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_no_grad_runs_the_lean_path_with_the_same_results(make, context, monkeypatch):
    torch.manual_seed(0)
    layer = make().double().eval()
    layer.engine = "native"
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4])
    out, state = layer(x, lengths=lengths)  # autograd on: the keeping path
    calls = _spy(monkeypatch)
    with context():
        lean_out, lean_state = layer(x, lengths=lengths)
    assert calls and not any(calls)
    torch.testing.assert_close(lean_out, out, atol=0, rtol=0)
    for a, b in zip(lean_state if isinstance(lean_state, tuple) else (lean_state,),
                    state if isinstance(state, tuple) else (state,)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_traces_and_gradients_keep_everything(monkeypatch):
    layer = rnnlab.GRU(3, 4, engine="native")
    x = torch.randn(5, 2, 3)
    calls = _spy(monkeypatch)
    with torch.no_grad():
        layer(x, return_gates=True)  # traces need the gates
    out, _ = layer(x)  # parameters need gradients
    out.sum().backward()
    assert calls == [True, True]


def test_the_lean_path_traces_for_export_and_compile(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(1)
    layer = rnnlab.GRU(5, 8, 2, reset="after", engine="native").eval()
    x = torch.randn(4, 2, 5)
    with torch.no_grad():
        want = layer(x)[0]
        torch.onnx.export(layer, (x,), tmp_path / "lean.onnx", dynamo=True)
        compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(x)[0], want, atol=1e-6, rtol=1e-6)
    session = ort.InferenceSession(str(tmp_path / "lean.onnx"))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-5, rtol=1e-5)
