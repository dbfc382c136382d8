"""learn_initial_state=True: h_0 (and C_0) are parameters, one row per level and direction, broadcast over
the batch, used when hx is not given — on every engine, with gradients, state_dict and streaming."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnlab
from rnnlab.stream import Streamer

CASES = [(rnnlab.LSTM, {}), (rnnlab.GRU, {}), (rnnlab.GRU, {"reset": "after"}), (rnnlab.RNN, {"nonlinearity": "relu"})]


def learned(cls, options, **kwargs):
    """A float64 layer with learn_initial_state and random initial-state parameters (not the zeros they start at)."""
    layer = cls(3, 4, num_layers=2, bidirectional=True, learn_initial_state=True, **options, **kwargs).double()
    with torch.no_grad():
        for part in layer.cell_class.STATE:
            getattr(layer, "initial_" + part).normal_()
    return layer


def explicit_hx(layer, batch):
    """The initial state built by hand (repeat, not expand) from the parameters, as hx."""
    parts = tuple(getattr(layer, "initial_" + p).unsqueeze(1).repeat(1, batch, 1) for p in layer.cell_class.STATE)
    return parts if len(parts) == 2 else parts[0]


@pytest.mark.parametrize("cls, options", CASES)
def test_parameters_start_at_zero_and_round_trip_through_state_dict(cls, options):
    layer = cls(3, 4, num_layers=2, bidirectional=True, learn_initial_state=True, **options)
    names = ["initial_" + p for p in layer.cell_class.STATE]
    for name in names:
        assert getattr(layer, name).shape == (4, 4) and getattr(layer, name).abs().sum() == 0  # (D·L, H)
    plain = cls(3, 4, num_layers=2, bidirectional=True, **options)
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if k not in names})
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(layer(x)[0], plain(x)[0])  # zeros: the plain layer's function
    trained = learned(cls, options).float()
    again = cls(3, 4, num_layers=2, bidirectional=True, learn_initial_state=True, **options)
    again.load_state_dict(trained.state_dict(), strict=True)
    torch.testing.assert_close(again(x)[0], trained(x)[0], atol=0, rtol=0)
    with pytest.raises(RuntimeError, match="initial_h"):
        plain.load_state_dict(trained.state_dict(), strict=True)
    assert "learn_initial_state=True" in repr(layer)


@pytest.mark.parametrize("cls, options", CASES)
@pytest.mark.parametrize("engine", ["native", "reference", "torch"])
def test_used_when_hx_is_none_with_gradients_as_an_explicit_hx(cls, options, engine):
    if engine == "torch" and cls is rnnlab.GRU and options.get("reset", "before") == "before":
        pytest.skip("torch's kernels do not compute the seed's GRU")
    layer = learned(cls, options, engine=engine)
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    names = ["initial_" + p for p in layer.cell_class.STATE]
    params = [getattr(layer, n) for n in names]
    out, h_n = layer(x)
    grads = torch.autograd.grad(out.pow(2).sum(), params)
    hx = explicit_hx(layer, 3)
    out_ref, h_ref = layer(x, hx)
    torch.testing.assert_close(out, out_ref, atol=1e-12, rtol=1e-12)
    grads_ref = torch.autograd.grad(out_ref.pow(2).sum(), params)  # through repeat: summed over the batch
    for g, r in zip(grads, grads_ref):
        assert g.abs().sum() > 0
        torch.testing.assert_close(g, r, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("cls, options", CASES)
def test_gradients_match_finite_differences(cls, options):
    layer = learned(cls, options, engine="reference")
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    names = ["initial_" + p for p in layer.cell_class.STATE]

    def loss(*initial):
        return torch.func.functional_call(layer, dict(zip(names, initial)), (x,))[0].sin().sum()

    assert torch.autograd.gradcheck(loss, tuple(getattr(layer, n).detach().clone().requires_grad_() for n in names))


def test_a_given_hx_overrides_it_and_every_input_form_uses_it():
    layer = learned(rnnlab.LSTM, {})
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    zeros = tuple(torch.zeros(4, 3, 4, dtype=torch.float64) for _ in range(2))
    plain = rnnlab.LSTM(3, 4, num_layers=2, bidirectional=True).double()
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("initial_")})
    torch.testing.assert_close(layer(x, zeros)[0], plain(x)[0])
    hx = explicit_hx(layer, 3)
    unbatched = layer(x[:, 0])[0]
    torch.testing.assert_close(unbatched, layer(x, hx)[0][:, 0])
    lengths = torch.tensor([5, 2, 4])
    packed = layer(pack_padded_sequence(x, lengths, enforce_sorted=False))[0]
    padded = layer(x, hx, lengths=lengths)[0]
    torch.testing.assert_close(torch.nn.utils.rnn.pad_packed_sequence(packed)[0], padded)


def test_streaming_starts_and_restarts_from_it():
    layer = rnnlab.GRU(3, 4, num_layers=2, learn_initial_state=True).double().eval()
    with torch.no_grad():
        layer.initial_h.normal_()
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        full = layer(x)[0]
        fresh = layer(x[4:, 1:])[0]  # sequence 1 restarted at t = 4
    stream = Streamer(layer)
    steps = [stream.step(x[t]) for t in range(4)]
    torch.testing.assert_close(torch.stack(steps), full[:4])
    stream.reset([1])
    rest = stream.feed(x[4:])
    torch.testing.assert_close(rest[:, 0], full[4:, 0])
    torch.testing.assert_close(rest[:, 1], fresh[:, 0])
    stream.reset()
    torch.testing.assert_close(stream.feed(x), full)


def test_refusals():
    layer = rnnlab.LSTM(3, 4, learn_initial_state=True)
    with pytest.raises(TypeError, match="learn_initial_state"):
        rnnlab.LSTM(3, 4, learn_initial_state=1)
    with pytest.raises(ValueError, match="learn_initial_state"):
        layer.to_torch()
    pytest.importorskip("onnx")
    from rnnlab.export import to_onnx
    with pytest.raises(ValueError, match="learn_initial_state"):
        to_onnx(layer, "never-written.onnx")


def test_a_model_exported_to_onnx_keeps_its_learned_initial_state(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from rnnlab.export import to_onnx

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnnlab.LSTM(3, 4, learn_initial_state=True)

        def forward(self, x):
            return self.rnn(x)[0]

    model = Model().eval()
    with torch.no_grad():
        model.rnn.initial_h.normal_(), model.rnn.initial_c.normal_()
    path = str(tmp_path / "model.onnx")
    to_onnx(model, path, (torch.randn(5, 2, 3),), input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "time", 1: "batch"}, "y": {0: "time", 1: "batch"}})
    x = torch.randn(7, 4, 3)  # another length and batch: the state is broadcast inside the file
    y = ort.InferenceSession(path).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(y), model(x), atol=1e-5, rtol=1e-5)
