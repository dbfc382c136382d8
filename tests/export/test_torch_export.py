"""compile_model and export_program: same results as eager rnnlab, on each engine they are given."""

import pytest
import torch
from torch import nn

import rnnlab
from helpers import CELL_IDS, CELLS_AND_OPTIONS
from rnnlab.export import compile_model, export_program

CELLS, IDS = CELLS_AND_OPTIONS, CELL_IDS


class Tagger(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.embed = nn.Embedding(9, layer.input_size)
        self.rnn = layer
        self.head = nn.Sequential(nn.Linear(layer.num_directions * layer.hidden_size, 4), nn.ReLU(), nn.Linear(4, 2))

    def forward(self, tokens, hx=None):
        out, h_n = self.rnn(self.embed(tokens), hx)
        return self.head(out), h_n


def states(h):
    return tuple(h) if isinstance(h, tuple) else (h,)


def eager_reference(model, *args):
    """The model's output on the reference engine, the other engines left as they were."""
    saved = model.rnn.engine
    model.rnn.engine = "reference"
    try:
        with torch.no_grad():
            return model(*args)
    finally:
        model.rnn.engine = saved


@pytest.mark.parametrize("cls,opts", CELLS, ids=IDS)
def test_export_program_equals_eager(cls, opts):
    model = Tagger(cls(3, 4, num_layers=2, bidirectional=True, batch_first=True, **opts)).eval()
    tokens = torch.randint(0, 9, (2, 4))
    batch = torch.export.Dim("batch", max=1024)
    ep = export_program(model, (tokens,), dynamic_shapes={"tokens": {0: batch}})
    assert model.rnn.engine == "auto"  # restored after export
    for B in (2, 5):  # the batch is dynamic; the example's time length is fixed
        tokens = torch.randint(0, 9, (B, 4))
        y, h = ep.module()(tokens)
        y_ref, h_ref = eager_reference(model, tokens)
        torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=1e-6)
        for a, b in zip(states(h), states(h_ref)):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_export_program_with_initial_state():
    model = Tagger(rnnlab.LSTM(3, 4, batch_first=True)).double().eval()
    tokens = torch.randint(0, 9, (2, 3))
    hx = (torch.randn(1, 2, 4, dtype=torch.float64), torch.randn(1, 2, 4, dtype=torch.float64))
    ep = export_program(model, (tokens, hx))
    y, (h, c) = ep.module()(tokens, hx)
    y_ref, (h_ref, c_ref) = eager_reference(model, tokens, hx)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(c, c_ref, atol=1e-12, rtol=1e-12)


def test_export_program_other_traceable_engines():
    """torch's fused RNN operators (engine "torch") and minGRU's parallel scan export as they are;
    the scan even with a dynamic time axis."""
    lstm = rnnlab.LSTM(3, 4, num_layers=2, engine="torch").eval()
    x = torch.randn(4, 2, 3)
    ep = export_program(lstm, (x,), engine=None)
    lstm.engine = "reference"
    torch.testing.assert_close(ep.module()(x)[0], lstm(x)[0], atol=1e-6, rtol=1e-6)
    mingru = rnnlab.MinGRU(3, 4).eval()
    dims = {"x": {0: torch.export.Dim("time", max=512), 1: torch.export.Dim("batch", max=512)}}
    ep = export_program(mingru, (x,), engine=None, dynamic_shapes=dims)
    x = torch.randn(9, 5, 3)
    mingru.engine = "reference"
    torch.testing.assert_close(ep.module()(x)[0], mingru(x)[0], atol=1e-6, rtol=1e-6)


def test_export_program_refusals():
    model = Tagger(rnnlab.GRU(3, 4, batch_first=True))
    tokens = torch.randint(0, 9, (2, 3))
    with pytest.raises(ValueError, match="engine: expected one of"):
        export_program(model, (tokens,), engine="fast")
    with pytest.raises(ValueError, match="engine: expected one of .*, got 'scan'"):
        export_program(model, (tokens,), engine="scan")  # only the minimal layers have it
    with pytest.raises(TypeError, match="args: expected a tuple"):
        export_program(model, tokens)
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        export_program(lambda x: x, (tokens,))


def test_export_program_with_lengths_and_dynamic_batch():
    layer = rnnlab.GRU(3, 4, bidirectional=True)
    batch = torch.export.Dim("batch")
    ep = export_program(layer, (torch.randn(5, 2, 3),), {"lengths": torch.tensor([5, 2])},
                        dynamic_shapes={"x": {1: batch}, "lengths": {0: batch}})
    assert layer.engine == "auto"
    x, lengths = torch.randn(5, 3, 3), torch.tensor([1, 5, 3])
    out, h_n = ep.module()(x, lengths=lengths)
    layer.engine = "reference"
    out_ref, h_ref = layer(x, lengths=lengths)
    torch.testing.assert_close(out, out_ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(h_n, h_ref, atol=1e-6, rtol=1e-6)


def test_compile_model_fullgraph():
    """The whole layer call — argument checks and memory guard included — is one graph."""
    layer = rnnlab.LSTM(2, 3, num_layers=2)
    compiled = compile_model(layer, fullgraph=True, backend="aot_eager")
    x = torch.randn(4, 2, 2)
    out, (h, c) = compiled(x, lengths=torch.tensor([4, 2]))
    out_ref, (h_ref, c_ref) = layer(x, lengths=torch.tensor([4, 2]))
    torch.testing.assert_close(out, out_ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(c, c_ref, atol=1e-6, rtol=1e-6)


def test_compile_model_inductor():
    """The default backend (inductor) compiles the recurrence; values and gradients match eager."""
    layer = rnnlab.LSTM(2, 3, num_layers=2)
    model = Tagger(layer)
    compiled = compile_model(model, engine="reference")
    assert layer.engine == "reference"
    tokens = torch.randint(0, 9, (2, 3))
    y, _ = compiled(tokens)
    y_ref, _ = model(tokens)
    torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=1e-6)
    y.sum().backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    y_ref.sum().backward()
    for a, p in zip(got, model.parameters()):
        torch.testing.assert_close(a, p.grad, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("cls,opts", [CELLS[1], CELLS[3], CELLS[4]], ids=["rnn-relu", "gru-before", "gru-after"])
def test_compile_model_other_cells(cls, opts):
    model = Tagger(cls(2, 3, bidirectional=True, batch_first=True, **opts)).double()
    compiled = compile_model(model, backend="aot_eager")
    tokens = torch.randint(0, 9, (3, 4))
    y, h = compiled(tokens)
    y_ref, h_ref = model(tokens)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(h, h_ref, atol=1e-12, rtol=1e-12)


def test_compile_model_keeps_the_native_engine_in_one_graph():
    """The default engine compiles with fullgraph=True: each level is one native operator in the graph."""
    layer = rnnlab.GRU(2, 3)
    compiled = compile_model(layer, fullgraph=True, backend="aot_eager")
    assert layer.engine == "auto"
    x = torch.randn(4, 2, 2)
    out, h = compiled(x)
    layer.engine = "reference"
    out_ref, h_ref = layer(x)
    torch.testing.assert_close(out, out_ref, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("make", [lambda: rnnlab.LSTM(2, 3, engine="torch"), lambda: rnnlab.MinGRU(2, 3)],
                         ids=["lstm-torch-engine", "mingru-scan"])
def test_compile_model_keeps_other_traceable_engines(make):
    """Inference (torch 2.13 cannot compile the backward of its own mkldnn RNN operator, which the
    "torch" engine runs on CPU)."""
    layer = make()
    engine = layer.engine
    compiled = compile_model(layer, engine=None, backend="aot_eager")
    assert layer.engine == engine
    x = torch.randn(4, 2, 2)
    with torch.no_grad():
        out, _ = compiled(x)
    layer.engine = "reference"
    torch.testing.assert_close(out, layer(x)[0], atol=1e-6, rtol=1e-6)
