"""ONNX export: the file, run by onnxruntime's own RNN/LSTM/GRU kernels, equals rnnlab's reference engine."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnlab
from helpers import CELL_IDS, CELLS_AND_OPTIONS
from rnnlab.export import to_onnx

CELLS, IDS = CELLS_AND_OPTIONS, CELL_IDS
ATOL = 1e-5


def as_tuple(h):
    return tuple(h) if isinstance(h, tuple) else (h,)


def run_onnx(path, feed):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {k: v.numpy() for k, v in feed.items()})


def check_layer(layer, tmp_path, T, B, with_hx, with_lengths, seed=0):
    """Export ``layer`` (bare), run it in onnxruntime on fresh inputs, compare with rnnlab's reference."""
    path = tmp_path / "layer.onnx"
    to_onnx(layer, path, initial_state=with_hx, lengths=with_lengths)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    g = torch.Generator().manual_seed(seed)
    D, L, H = layer.num_directions, layer.num_layers, layer.hidden_size
    shape = (B, T, layer.input_size) if layer.batch_first else (T, B, layer.input_size)
    x = torch.randn(*shape, generator=g)
    feed = {"x": x}
    hx = None
    if with_hx:
        parts = tuple(torch.randn(D * L, B, H, generator=g) for _ in layer.cell_class.STATE)
        feed.update(zip(("h0", "c0"), parts))
        hx = parts if len(parts) > 1 else parts[0]
    lengths = None
    if with_lengths:
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        feed["lengths"] = lengths
    got = run_onnx(path, feed)
    layer.engine = "reference"
    with torch.no_grad():
        out, h_n = layer(x, hx, lengths=lengths)
    want = (out, *as_tuple(h_n))
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b.numpy(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cls,opts", CELLS, ids=IDS)
def test_every_cell_stacked_with_lengths_and_hx(cls, opts, bidirectional, tmp_path):
    layer = cls(3, 4, num_layers=2, bidirectional=bidirectional, **opts).eval()
    check_layer(layer, tmp_path, T=6, B=4, with_hx=True, with_lengths=True)


@settings(max_examples=30, deadline=None)
@given(
    cell=st.sampled_from(range(len(CELLS))),
    num_layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    bias=st.booleans(),
    batch_first=st.booleans(),
    with_hx=st.booleans(),
    with_lengths=st.booleans(),
    X=st.integers(1, 4),
    H=st.integers(1, 5),
    T=st.integers(1, 7),
    B=st.integers(1, 4),
    init=st.sampled_from(["default", "torch"]),
    seed=st.integers(0, 2**16),
)
def test_random_configurations(tmp_path_factory, cell, num_layers, bidirectional, bias, batch_first, with_hx,
                               with_lengths, X, H, T, B, init, seed):
    cls, opts = CELLS[cell]
    torch.manual_seed(seed)
    layer = cls(X, H, num_layers=num_layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional,
                init=init, **opts).eval()
    check_layer(layer, tmp_path_factory.mktemp("onnx"), T, B, with_hx, with_lengths, seed)


@pytest.mark.parametrize("cls,opts", CELLS, ids=IDS)
def test_graph_uses_onnx_recurrent_operators(cls, opts, tmp_path):
    layer = cls(3, 4, num_layers=3, bidirectional=True, **opts)
    proto = to_onnx(layer, tmp_path / "m.onnx")
    op = {rnnlab.RNN: "RNN", rnnlab.LSTM: "LSTM", rnnlab.GRU: "GRU"}[cls]
    nodes = [n for n in proto.graph.node if n.op_type == op]
    assert len(nodes) == 3  # one node per level, chained
    assert not any(n.op_type in ("Loop", "Scan", "MatMul") for n in proto.graph.node)
    for n in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert attrs["hidden_size"] == 4
        assert attrs["direction"] == b"bidirectional"
        if cls is rnnlab.GRU:
            assert attrs["linear_before_reset"] == (1 if opts["reset"] == "after" else 0)
        if cls is rnnlab.RNN:
            want = opts["nonlinearity"].capitalize().encode()
            assert attrs["activations"] == [want, want]
    # batch and time are dynamic
    x_dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert x_dims == ["time", "batch", 3]


def test_gru_z_convention_is_mapped(tmp_path):
    """A GRU whose update gate is saturated open (z = 1) outputs the candidate in rnnlab's convention;
    the exported file must too (ONNX's own z would keep h_{t-1} = 0 instead)."""
    layer = rnnlab.GRU(2, 3, reset="after")
    with torch.no_grad():
        layer.bias_l0[:3] = 50.0  # z rows: z ≈ 1
    x = torch.randn(4, 1, 2)
    path = tmp_path / "g.onnx"
    to_onnx(layer, path)
    out = run_onnx(path, {"x": x})[0]
    with torch.no_grad():
        want = layer(x)[0]
    assert np.abs(out[0]).max() > 1e-2  # not the zero initial state
    np.testing.assert_allclose(out, want.numpy(), atol=ATOL, rtol=0)


class Tagger(nn.Module):
    """Embedding -> rnnlab layer (batch-first, variable lengths) -> Linear/ReLU/Linear per step."""

    def __init__(self, layer):
        super().__init__()
        self.embed = nn.Embedding(11, layer.input_size)
        self.rnn = layer
        D = layer.num_directions
        self.head = nn.Sequential(nn.Linear(D * layer.hidden_size, 5), nn.ReLU(), nn.Linear(5, 3))

    def forward(self, tokens, lengths):
        out, h_n = self.rnn(self.embed(tokens), lengths=lengths)
        return self.head(out), as_tuple(h_n)[0]


class Regressor(nn.Module):
    """Time-major input with an initial state; tanh head on the last level's final hidden state."""

    def __init__(self, layer):
        super().__init__()
        self.rnn = layer
        self.out = nn.Linear(layer.hidden_size, 2)

    def forward(self, x, *hx):
        out, h_n = self.rnn(x, hx if len(hx) > 1 else hx[0])
        return torch.tanh(self.out(as_tuple(h_n)[0][-1])), out


@pytest.mark.parametrize("cls,opts", CELLS, ids=IDS)
def test_model_with_embedding_and_head(cls, opts, tmp_path):
    model = Tagger(cls(4, 5, num_layers=2, bidirectional=True, batch_first=True, **opts))
    path = tmp_path / "tagger.onnx"
    tokens, lengths = torch.randint(0, 11, (3, 6)), torch.tensor([6, 2, 4])
    proto = to_onnx(model, path, (tokens, lengths), input_names=["tokens", "lengths"], output_names=["y", "h_n"],
                    dynamic_axes={"tokens": {0: "batch", 1: "time"}, "lengths": {0: "batch"},
                                  "y": {0: "batch", 1: "time"}, "h_n": {1: "batch"}})
    onnx.checker.check_model(proto, full_check=True)
    assert sum(n.op_type == type(model.rnn).__name__ for n in proto.graph.node) == 2
    assert "forward" not in model.rnn.__dict__  # the layer's own forward is back
    model.rnn.engine = "reference"
    for B, T in ((3, 6), (5, 9), (1, 1)):  # other batch sizes and lengths than the example's
        tokens = torch.randint(0, 11, (B, T))
        lengths = torch.randint(1, T + 1, (B,))
        y, h_n = run_onnx(path, {"tokens": tokens, "lengths": lengths})
        with torch.no_grad():
            y_ref, h_ref = model(tokens, lengths)
        np.testing.assert_allclose(y, y_ref.numpy(), atol=ATOL, rtol=0)
        np.testing.assert_allclose(h_n, h_ref.numpy(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("cls,opts", [CELLS[1], CELLS[2], CELLS[3]], ids=["rnn-relu", "lstm", "gru-before"])
def test_model_with_initial_state(cls, opts, tmp_path):
    layer = cls(3, 4, num_layers=2, **opts)
    model = Regressor(layer)
    n_state = len(layer.cell_class.STATE)
    names = ["h0", "c0"][:n_state]
    hx = tuple(torch.randn(2, 2, 4) for _ in range(n_state))
    x = torch.randn(5, 2, 3)
    path = tmp_path / "reg.onnx"
    axes = {"x": {0: "time", 1: "batch"}, "y": {0: "batch"}, "out": {0: "time", 1: "batch"}}
    axes.update({n: {1: "batch"} for n in names})
    to_onnx(model, path, (x, *hx), input_names=["x", *names], output_names=["y", "out"], dynamic_axes=axes)
    layer.engine = "reference"
    x = torch.randn(7, 3, 3)
    hx = tuple(torch.randn(2, 3, 4) for _ in range(n_state))
    y, out = run_onnx(path, {"x": x, **dict(zip(names, hx))})
    with torch.no_grad():
        y_ref, out_ref = model(x, *hx)
    np.testing.assert_allclose(y, y_ref.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(out, out_ref.numpy(), atol=ATOL, rtol=0)


def test_bare_layer_through_example_inputs(tmp_path):
    """A bare layer given example inputs goes through torch.onnx, and gives the same file semantics."""
    layer = rnnlab.LSTM(3, 4, bidirectional=True).eval()
    x = torch.randn(5, 2, 3)
    path = tmp_path / "l.onnx"
    to_onnx(layer, path, (x,), input_names=["x"], output_names=["out", "h_n", "c_n"],
            dynamic_axes={"x": {0: "time", 1: "batch"}})
    x = torch.randn(8, 3, 3)
    got = run_onnx(path, {"x": x})
    with torch.no_grad():
        out, (h, c) = layer(x)
    for a, b in zip(got, (out, h, c)):
        np.testing.assert_allclose(a, b.numpy(), atol=ATOL, rtol=0)


def test_float64_file_is_valid(tmp_path):
    proto = to_onnx(rnnlab.GRU(2, 3).double(), tmp_path / "d.onnx")
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE


class Packed(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = rnnlab.GRU(2, 3)

    def forward(self, x):
        return self.rnn(pack_padded_sequence(x, [2, 1]))[1]


class Gates(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = rnnlab.GRU(2, 3)

    def forward(self, x):
        return self.rnn(x, return_gates=True)[0]


@pytest.mark.filterwarnings("ignore:pack_padded_sequence", "ignore::torch.jit.TracerWarning")
def test_bad_arguments(tmp_path):
    layer = rnnlab.RNN(2, 3)
    p = tmp_path / "bad.onnx"
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        to_onnx(object(), p)
    with pytest.raises(ValueError, match="opset: expected an int in"):
        to_onnx(layer, p, opset=9)
    with pytest.raises(TypeError, match="lengths: expected a bool"):
        to_onnx(layer, p, lengths=1)
    with pytest.raises(ValueError, match="input_names: only for a model"):
        to_onnx(layer, p, input_names=["a"])
    with pytest.raises(ValueError, match="example_inputs: a Sequential needs"):
        to_onnx(nn.Sequential(nn.Linear(2, 2)), p)
    with pytest.raises(ValueError, match="initial_state, lengths: only for a bare layer"):
        to_onnx(Gates(), p, (torch.randn(2, 1, 2),), lengths=True)
    with pytest.raises(TypeError, match="x: ONNX export takes padded input"):
        to_onnx(Packed(), p, (torch.randn(2, 2, 2),))
    with pytest.raises(ValueError, match="return_gates: ONNX's recurrent operators"):
        to_onnx(Gates(), p, (torch.randn(2, 1, 2),))
    # a failed export leaves the model's layers as they were
    model = Gates()
    with pytest.raises(ValueError):
        to_onnx(model, p, (torch.randn(2, 1, 2),))
    assert "forward" not in model.rnn.__dict__
    assert model(torch.randn(2, 1, 2)).shape == (2, 1, 3)


def test_layers_without_onnx_operator_are_refused(tmp_path):
    with pytest.raises(TypeError, match="model: MinGRU has no ONNX operator"):
        to_onnx(rnnlab.MinGRU(2, 3), tmp_path / "m.onnx")
    model = Regressor(rnnlab.MinLSTM(2, 3))
    with pytest.raises(TypeError, match="model: MinLSTM has no ONNX operator"):
        to_onnx(model, tmp_path / "m.onnx", (torch.randn(3, 1, 2), torch.zeros(1, 1, 3)))
    assert "forward" not in model.rnn.__dict__


@pytest.mark.parametrize("head,cell", [("every", "lstm"), ("last", "gru")])
def test_sequence_model_from_rnnlab_models(head, cell, tmp_path):
    from rnnlab.models import ModelConfig, SequenceModel
    from rnnlab.tasks.base import ModelSpec

    config = ModelConfig(cell=cell, hidden=5, layers=2, bidirectional=True, embedding=4, dropout=0.2)
    model = SequenceModel(ModelSpec("symbols", 7, 3, head), config).eval()
    tokens = torch.randint(0, 7, (2, 5))
    names = ["y", "h_n", "c_n"][: 3 if cell == "lstm" else 2]
    axes = {"tokens": {0: "batch", 1: "time"}, "y": {0: "batch"}, **{n: {1: "batch"} for n in names[1:]}}
    if head == "every":
        axes["y"][1] = "time"
    path = tmp_path / "seq.onnx"
    to_onnx(model, path, (tokens,), input_names=["tokens"], output_names=names, dynamic_axes=axes)
    model.rnn.engine = "reference"
    tokens = torch.randint(0, 7, (3, 8))
    got = run_onnx(path, {"tokens": tokens})
    with torch.no_grad():
        y, state = model(tokens)
    for a, b in zip(got, (y, *as_tuple(state))):
        np.testing.assert_allclose(a, b.numpy(), atol=ATOL, rtol=0)
