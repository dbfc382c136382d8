"""rnnlab.nn's modules keep torch.nn's contract (constructor, parameters, initialisation, isinstance,
projection) and really run rnnlab's engine underneath."""

from __future__ import annotations

import inspect

import pytest
import torch

import rnnlab.nn

PAIRS = [(rnnlab.nn.RNN, torch.nn.RNN), (rnnlab.nn.LSTM, torch.nn.LSTM), (rnnlab.nn.GRU, torch.nn.GRU),
         (rnnlab.nn.RNNCell, torch.nn.RNNCell), (rnnlab.nn.LSTMCell, torch.nn.LSTMCell), (rnnlab.nn.GRUCell, torch.nn.GRUCell)]
LAYER_PAIRS = PAIRS[:3]


@pytest.mark.parametrize("cls, ref_cls", PAIRS)
def test_constructor_parameters_and_initialisation_are_torchs(cls, ref_cls):
    assert issubclass(cls, ref_cls)
    assert inspect.signature(cls.__init__) == inspect.signature(ref_cls.__init__)
    assert inspect.signature(cls.forward).parameters.keys() == inspect.signature(ref_cls.forward).parameters.keys()
    kwargs = {"num_layers": 2, "bidirectional": True} if cls in dict(LAYER_PAIRS) else {}
    torch.manual_seed(3)
    ref = ref_cls(5, 6, **kwargs)
    torch.manual_seed(3)
    module = cls(5, 6, **kwargs)
    assert isinstance(module, ref_cls)
    ref_params, params = dict(ref.named_parameters()), dict(module.named_parameters())
    assert list(params) == list(ref_params)
    for name, p in params.items():  # torch's U(-1/sqrt(H), 1/sqrt(H)), drawn in torch's order
        assert torch.equal(p, ref_params[name]), name


@pytest.mark.parametrize("cls, ref_cls", LAYER_PAIRS)
def test_the_layers_run_rnnlabs_engine_not_torchs(cls, ref_cls, monkeypatch):
    module = cls(3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    expected = module(x)[0]

    def refuse(*args, **kwargs):
        raise AssertionError("torch.nn's forward ran")

    monkeypatch.setattr(ref_cls, "forward", refuse)
    for engine in ("auto", "native", "reference"):
        module.engine = engine
        torch.testing.assert_close(module(x)[0], expected, atol=1e-6, rtol=1e-6)
    module.engine = "torch"  # torch's own kernel: torch.nn's forward, unchanged
    with pytest.raises(AssertionError, match="torch.nn's forward ran"):
        module(x)
    module.engine = "fast"
    with pytest.raises(ValueError, match="engine"):
        module(x)


@pytest.mark.parametrize("cls, ref_cls", PAIRS[3:])
def test_the_cells_run_rnnlabs_engine_not_torchs(cls, ref_cls, monkeypatch):
    cell = cls(3, 4)
    x = torch.randn(2, 3)
    expected = cell(x)
    monkeypatch.setattr(ref_cls, "forward", lambda *a, **k: (_ for _ in ()).throw(AssertionError("torch ran")))
    cell.engine = "native"
    torch.testing.assert_close(cell(x), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("engine", ["native", "reference", "auto"])
def test_projection_runs_on_rnnlabs_engine_with_torchs_parameters(engine, monkeypatch):
    ref = torch.nn.LSTM(5, 8, num_layers=2, proj_size=3, bidirectional=True).double()
    module = rnnlab.nn.LSTM(5, 8, num_layers=2, proj_size=3, bidirectional=True).double()
    module.load_state_dict(ref.state_dict(), strict=True)
    module.engine = engine
    assert tuple(module.weight_hr_l0.shape) == (3, 8) and tuple(module.weight_hh_l1.shape) == (32, 3)
    x = torch.randn(4, 2, 5, dtype=torch.float64, requires_grad=True)
    out_ref, (h_ref, c_ref) = ref(x)
    expected = torch.autograd.grad((out_ref.sum(), h_ref.sum(), c_ref.sum()), [x, *ref.parameters()])
    monkeypatch.setattr(torch.nn.LSTM, "forward", lambda *a, **k: (_ for _ in ()).throw(AssertionError("torch ran")))
    out, (h, c) = module(x)
    assert out.shape == (4, 2, 6) and h.shape == (4, 2, 3) and c.shape == (4, 2, 8)
    for a, b in ((out, out_ref), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    got = torch.autograd.grad((out.sum(), h.sum(), c.sum()), [x, *module.parameters()])
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_flatten_parameters_dtype_and_device_moves_keep_working():
    module = rnnlab.nn.GRU(3, 4, batch_first=True)
    module.flatten_parameters()
    module = module.double()
    ref = torch.nn.GRU(3, 4, batch_first=True).double()
    ref.load_state_dict(module.state_dict())
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(module(x)[0], ref(x)[0], atol=1e-12, rtol=1e-12)
