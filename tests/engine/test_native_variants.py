"""The native engine's variants — the LSTM's peepholes and coupled (CIFG), the LSTM's and GRU's recurrent
dropout in training — against the reference engine: outputs, states, traces and gradients, compiled loops and the pure-PyTorch fallback."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnlab
from rnnlab.engine import fused, native

from .test_native import TOL, _assert_same, _inputs, _run, _states, loops  # noqa: F401 (loops: a fixture)

LSTM_VARIANTS = [dict(peepholes=True), dict(coupled=True), dict(peepholes=True, coupled=True), dict(recurrent_dropout=0.3),
                 dict(peepholes=True, recurrent_dropout=0.5), dict(peepholes=True, coupled=True, recurrent_dropout=0.2)]
NATIVE = [(rnnlab.LSTM, o) for o in LSTM_VARIANTS] + [
    (rnnlab.GRU, dict(reset="before", recurrent_dropout=0.3)), (rnnlab.GRU, dict(reset="after", recurrent_dropout=0.4))]
IDS = [f"{c.__name__}-{o}" for c, o in NATIVE]


@st.composite
def configs(draw):
    return dict(
        variant=draw(st.sampled_from(NATIVE)),
        num_layers=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bias=draw(st.booleans()),
        input_kind=draw(st.sampled_from(["plain", "lengths", "packed", "unbatched"])),
        with_hx=draw(st.booleans()),
        trace=draw(st.booleans()),
        dropout=draw(st.sampled_from([0.0, 0.0, 0.4])),
        dtype=draw(st.sampled_from([torch.float64, torch.float32])),
        T=draw(st.integers(1, 6)),
        B=draw(st.integers(1, 4)),
        X=draw(st.integers(1, 5)),
        H=draw(st.integers(1, 6)),
        seed=draw(st.integers(0, 2**16)),
    )


def _build(cfg):
    torch.manual_seed(cfg["seed"])
    cls, opts = cfg["variant"]
    layer = cls(cfg["X"], cfg["H"], num_layers=cfg["num_layers"], bias=cfg["bias"], batch_first=cfg["batch_first"],
                dropout=cfg["dropout"], bidirectional=cfg["bidirectional"], init="torch",  # peepholes ≠ 0
                **opts).to(cfg["dtype"])
    return (layer, *_inputs(layer, cfg))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=configs())
def test_native_variants_equal_reference(loops, cfg):
    layer, x, hx, lengths = _build(cfg)
    ref = _run(layer, "reference", x, hx, lengths, cfg["trace"], cfg["seed"])  # same seed: same dropout masks
    got = _run(layer, "native", x, hx, lengths, cfg["trace"], cfg["seed"])
    tol = TOL[cfg["dtype"]]
    _assert_same(ref[0], got[0], tol)
    _assert_same(ref[1], got[1], tol)


@pytest.mark.parametrize("cls,opts", NATIVE, ids=IDS)
def test_gradcheck_lengths_bidirectional(loops, cls, opts):
    torch.manual_seed(0)
    layer = cls(2, 3, num_layers=2, bidirectional=True, engine="native", init="torch", **opts).double()
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2, 1])

    def f(x, *params):
        torch.manual_seed(3)  # the same recurrent dropout masks at every evaluation
        out, h_n, tr = layer(x, lengths=lengths, return_gates=True)
        return (out, *_states(h_n), *tr["l1_reverse"].values())

    assert torch.autograd.gradcheck(f, (x, *layer.parameters()))


@pytest.mark.parametrize("cls,opts", [(rnnlab.LSTM, dict(peepholes=True, coupled=True)), (rnnlab.LSTM, dict(recurrent_dropout=0.3)),
                                      (rnnlab.GRU, dict(recurrent_dropout=0.3))], ids=str)
def test_double_backward_with_variants(cls, opts):
    torch.manual_seed(0)
    layer = cls(2, 3, bidirectional=True, init="torch", **opts).double()
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    grads = []
    for engine in ("reference", "native"):
        layer.engine = engine
        torch.manual_seed(4)
        out = layer(x)[0]
        (g,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
        grads.append(torch.autograd.grad(g.pow(2).sum(), [x, *layer.parameters()]))
    _assert_same(grads[0], grads[1], 1e-10)


@pytest.mark.parametrize("cls,opts", NATIVE, ids=IDS)
def test_auto_and_native_run_these_variants_natively(cls, opts):
    layer = cls(3, 4, **opts)
    x = torch.randn(5, 2, 3)
    assert layer.select_engine(x).name == "native"
    assert cls(3, 4, engine="native", **opts).select_engine(x).name == "native"
    assert fused.unsupported_variants(layer) == {}


@pytest.mark.parametrize("cls,opts", [(rnnlab.LSTM, dict(peepholes=True, layer_norm=True)), (rnnlab.LSTM, dict(zoneout=0.1)),
                                      (rnnlab.GRU, dict(recurrent_dropout=0.2, layer_norm=True)), (rnnlab.GRU, dict(zoneout=0.2))])
def test_other_variants_still_run_on_the_reference_engine(cls, opts):
    layer = cls(3, 4, **opts)
    x = torch.randn(5, 2, 3)
    assert layer.select_engine(x).name == "reference"
    with pytest.raises(ValueError, match=r"engine: 'native' cannot compute"):
        cls(3, 4, engine="native", **opts)(x)


@pytest.mark.parametrize("cls,opts", [(rnnlab.LSTM, dict(peepholes=True)), (rnnlab.GRU, dict(reset="after"))], ids=str)
def test_recurrent_dropout_masks_are_the_reference_engines_draws(cls, opts):
    """A seeded training run gives the reference engine's result: the masks are drawn by
    ``step_arguments`` level by level, direction by direction, then the inter-level dropout."""
    torch.manual_seed(0)
    layer = cls(3, 5, num_layers=3, bidirectional=True, dropout=0.3, recurrent_dropout=0.4, init="torch", **opts).double()
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    outs = []
    for engine in ("reference", "native"):
        layer.engine = engine
        torch.manual_seed(11)
        outs.append(layer(x)[0])
        outs.append(torch.rand(3, dtype=torch.float64))  # the RNG is left in the same state too
    torch.testing.assert_close(outs[0], outs[2], atol=1e-12, rtol=0)
    assert torch.equal(outs[1], outs[3])


def test_plain_lstm_runs_the_plain_loops(monkeypatch):
    """No variant in force (or recurrent dropout at evaluation): the plain loops, not the variant ones."""
    calls = []
    real = fused._lstm_variant
    monkeypatch.setattr(fused, "_lstm_variant", lambda *a: calls.append(real(*a)) or calls[-1])
    rnnlab.LSTM(3, 4)(torch.randn(5, 2, 3))
    rnnlab.LSTM(3, 4, recurrent_dropout=0.3).eval()(torch.randn(5, 2, 3))
    assert calls and not any(calls)


def test_plain_gru_runs_the_plain_loops(monkeypatch):
    """The GRU's masked loops only in training with recurrent dropout."""
    from rnnlab.engine import loops as py_loops

    called = []
    monkeypatch.setattr(py_loops, "gru_forward_loop", lambda *a: called.append(a))
    with native.use_compiled(False):
        rnnlab.GRU(3, 4)(torch.randn(5, 2, 3))
        rnnlab.GRU(3, 4, recurrent_dropout=0.3).eval()(torch.randn(5, 2, 3))
    assert not called
