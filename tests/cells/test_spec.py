"""Each cell's ``SPEC``: registered, consistent with the cell, and the only thing the tiers read
(a cell or layer under another class name behaves the same)."""

import itertools

import pytest
import torch

import rnnlab
from rnnlab.analysis import closed_form_parameters, count_parameters
from rnnlab.cells.spec import KERNELS, SPECS
from rnnlab.cells.torch_layout import weights_from_torch, weights_to_torch

CELL_CLASSES = {"rnn": rnnlab.RNNCell, "lstm": rnnlab.LSTMCell, "gru": rnnlab.GRUCell,
                "mingru": rnnlab.MinGRUCell, "minlstm": rnnlab.MinLSTMCell}
LAYERS = {"rnn": rnnlab.RNN, "lstm": rnnlab.LSTM, "gru": rnnlab.GRU, "mingru": rnnlab.MinGRU, "minlstm": rnnlab.MinLSTM}

# every cell with its options, and the native kernel that computes it (written out here, not derived)
KERNEL_OF = [
    ("rnn", {"nonlinearity": "tanh"}, "rnn_tanh"),
    ("rnn", {"nonlinearity": "relu"}, "rnn_relu"),
    ("lstm", {}, "lstm"),
    ("lstm", {"coupled": True, "peepholes": True}, "lstm"),
    ("gru", {"reset": "before"}, "gru_before"),
    ("gru", {"reset": "after", "layer_norm": True}, "gru_after"),
    ("mingru", {}, "linear"),
    ("minlstm", {}, "linear"),
]

# the structural variants each layer takes, for the parameter counts
STRUCTURAL = {"rnn": [{}], "mingru": [{}], "minlstm": [{}],
              "lstm": [dict(zip(("layer_norm", "peepholes", "coupled"), on)) for on in itertools.product((False, True), repeat=3)],
              "gru": [{"layer_norm": False}, {"layer_norm": True}]}


def test_registry_in_the_seeds_order_and_each_class_carries_its_spec():
    assert tuple(SPECS) == ("rnn", "lstm", "gru", "mingru", "minlstm")
    for name, cls in CELL_CLASSES.items():
        spec = cls.SPEC
        assert SPECS[name] is spec and spec.name == name and LAYERS[name].cell_class is cls
        assert (cls.GATES, cls.STATE, cls.TRACES, cls.RECURRENT) == (spec.gates, spec.state, spec.traces, spec.recurrent)
        assert LAYERS[name](2, 3).mode == name


@pytest.mark.parametrize("name,options,kernel", KERNEL_OF)
def test_kernel_names(name, options, kernel):
    assert kernel in KERNELS and SPECS[name].kernel(options) == kernel


@pytest.mark.parametrize("name", list(SPECS))
def test_each_listed_kernel_is_what_its_options_select(name):
    """``kernels`` (read by the native engine's double backward and ONNX translation) inverts ``kernel``."""
    spec = SPECS[name]
    assert spec.kernels, name
    for kernel, options in spec.kernels.items():
        assert spec.kernel(options) == kernel
    assert set().union(*(SPECS[n].kernels for n in SPECS)) == set(KERNELS)


def test_native_variants():
    assert set(SPECS["lstm"].native_variants) == {"layer_norm", "peepholes", "coupled", "recurrent_dropout", "zoneout"}
    assert set(SPECS["gru"].native_variants) == {"layer_norm", "recurrent_dropout", "zoneout"}
    assert all(not SPECS[c].native_variants for c in ("rnn", "mingru", "minlstm"))
    assert SPECS["gru"].not_native({"peepholes": True, "zoneout": 0.1}) == {"peepholes": True}


@pytest.mark.parametrize("name", list(SPECS))
def test_closed_form_counts_what_the_layer_allocates(name):
    """SPEC.parameters (the closed form) against the parameters a layer and a cell really hold."""
    extra = {"nonlinearity": "tanh"} if name == "rnn" else {}
    resets = ("before", "after") if name == "gru" else ("before",)
    for structural, reset, bias, bidirectional, layers in itertools.product(
            STRUCTURAL[name], resets, (True, False), (False, True), (1, 3)):
        on = {k: v for k, v in structural.items() if v}
        options = {**extra, **({"reset": reset} if name == "gru" else {}), **on}
        layer = LAYERS[name](5, 7, num_layers=layers, bias=bias, bidirectional=bidirectional, **options)
        want = count_parameters(layer)
        assert SPECS[name].layer_parameters(5, 7, layers, bidirectional, bias, layer.options) == want
        assert closed_form_parameters(name, 5, 7, layers, bidirectional, bias, reset, **on) == want
        cell = CELL_CLASSES[name](5, 7, bias=bias, **options)
        assert SPECS[name].parameters(5, 7, bias, cell.options()) == count_parameters(cell)


@pytest.mark.parametrize("name", [n for n in SPECS if SPECS[n].torch is not None])
def test_torch_layout_is_a_permutation_and_round_trips(name):
    spec = SPECS[name]
    assert sorted(spec.torch.gates) == sorted(spec.gates)
    cell = CELL_CLASSES[name](3, 4, **({"reset": "after"} if name == "gru" else {})).double()
    w = cell.weights()
    back = weights_from_torch(spec, *weights_to_torch(spec, w))
    for a, b in zip(w, back):
        assert (a is None) == (b is None) and (a is None or torch.equal(a, b))


@pytest.mark.parametrize("name", [n for n in SPECS if SPECS[n].onnx is not None])
def test_onnx_layout_is_a_permutation(name):
    spec = SPECS[name]
    assert sorted(spec.onnx.gates) == sorted(spec.gates)
    assert set(spec.onnx.peepholes) <= set(spec.gates) and set(spec.onnx.negated) <= set(spec.gates)


def test_memory_units_count_gates_states_and_output():
    for spec in SPECS.values():
        assert spec.memory.per_step == len(spec.gates) + len(spec.state) + 1


def test_no_tier_reads_the_class_name():
    """A cell and a layer renamed by subclassing convert, stream and count exactly as the originals."""

    class Recurrent(rnnlab.GRU):
        pass

    class Step(rnnlab.LSTMCell):
        pass

    layer = Recurrent(3, 4, reset="after").double()
    assert layer.mode == "gru"
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, h = layer(x)
    torch.testing.assert_close(layer.to_torch()(x)[0], out)
    assert count_parameters(Recurrent.from_torch(layer.to_torch())) == count_parameters(layer)
    stream = rnnlab.stream.Streamer(layer.eval())
    torch.testing.assert_close(torch.stack([stream.step(x[t]) for t in range(5)]), out)
    cell = Step(3, 4).double()
    h1, _ = cell(x[0])
    torch.testing.assert_close(cell.to_torch()(x[0])[0], h1)
