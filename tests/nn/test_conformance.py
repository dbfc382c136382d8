"""Conformance: every rnnlab.nn module against its torch.nn namesake, on random configurations.

A torch.nn module and its rnnlab.nn twin holding the same state_dict (loaded with strict=True, both
ways) give equal outputs, final states and gradients (input, hx and every parameter): float32 to 1e-5,
float64 to 1e-10. LSTMs with proj_size > 0 are drawn too (rnnlab's engines compute the projection). The same bad inputs raise the same exception types. Cells run in torch's idiom over
a whole sequence.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnlab.nn

LAYERS = {"rnn_tanh": (torch.nn.RNN, rnnlab.nn.RNN, {"nonlinearity": "tanh"}),
          "rnn_relu": (torch.nn.RNN, rnnlab.nn.RNN, {"nonlinearity": "relu"}),
          "lstm": (torch.nn.LSTM, rnnlab.nn.LSTM, {}),
          "gru": (torch.nn.GRU, rnnlab.nn.GRU, {})}
CELLS = {"rnn_tanh": (torch.nn.RNNCell, rnnlab.nn.RNNCell, {"nonlinearity": "tanh"}),
         "rnn_relu": (torch.nn.RNNCell, rnnlab.nn.RNNCell, {"nonlinearity": "relu"}),
         "lstm": (torch.nn.LSTMCell, rnnlab.nn.LSTMCell, {}),
         "gru": (torch.nn.GRUCell, rnnlab.nn.GRUCell, {})}
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def twins(kind, table, *args, engine="auto", **kwargs):
    """A torch.nn module and its rnnlab.nn twin with the same state_dict, loaded strictly both ways."""
    ref_cls, cls, extra = table[kind]
    ref = ref_cls(*args, **extra, **kwargs)
    twin = cls(*args, **extra, **kwargs)
    twin.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(twin.state_dict(), strict=True)  # and back: the same names and shapes
    twin.engine = engine
    return ref, twin


def flatten(result):
    """Every tensor of a forward's result, in order (PackedSequence data, state tuples flattened)."""
    if isinstance(result, PackedSequence):
        return [result.data]
    if isinstance(result, torch.Tensor):
        return [result]
    return [t for part in result for t in flatten(part)]


def assert_twins_agree(ref, twin, run, inputs, tol):
    """run(module) on both; outputs, then the gradients of a random projection of them w.r.t. ``inputs``
    and every parameter, equal within tol."""
    outs_ref, outs = flatten(run(ref)), flatten(run(twin))
    assert len(outs_ref) == len(outs)
    for a, b in zip(outs_ref, outs):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(b, a, atol=tol, rtol=tol)
    weights = [torch.randn_like(a) for a in outs_ref]
    names = [n for n, _ in ref.named_parameters()]
    assert names == [n for n, _ in twin.named_parameters()]
    grads_ref = torch.autograd.grad(sum((w * a).sum() for w, a in zip(weights, outs_ref)), inputs + list(ref.parameters()))
    grads = torch.autograd.grad(sum((w * b).sum() for w, b in zip(weights, outs)), inputs + list(twin.parameters()))
    for label, a, b in zip([f"input {i}" for i in range(len(inputs))] + names, grads_ref, grads):
        torch.testing.assert_close(b, a, atol=tol, rtol=tol, msg=lambda m: f"gradient of {label}: {m}")


@st.composite
def layer_cases(draw):
    return dict(kind=draw(st.sampled_from(sorted(LAYERS))), layers=draw(st.integers(1, 2)),
                bidirectional=draw(st.booleans()), batch_first=draw(st.booleans()), bias=draw(st.booleans()),
                form=draw(st.sampled_from(["padded", "packed", "unbatched"])), hx=draw(st.booleans()),
                dtype=draw(st.sampled_from([torch.float32, torch.float64])), training=draw(st.booleans()),
                engine=draw(st.sampled_from(["auto", "native", "reference"])),
                T=draw(st.integers(1, 6)), B=draw(st.integers(1, 4)), X=draw(st.integers(1, 5)), H=draw(st.integers(1, 6)),
                proj=draw(st.sampled_from([0, 0, 1, 2])), seed=draw(st.integers(0, 2**16)))


@settings(max_examples=60, deadline=None)
@given(layer_cases())
def test_layer_twins_agree(case):
    torch.manual_seed(case["seed"])
    dt, T, B, X, H = case["dtype"], case["T"], case["B"], case["X"], case["H"]
    D = 2 if case["bidirectional"] else 1
    proj = {"proj_size": case["proj"]} if case["kind"] == "lstm" and case["proj"] < H else {}
    ref, twin = twins(case["kind"], LAYERS, X, H, num_layers=case["layers"], bias=case["bias"],
                      batch_first=case["batch_first"], bidirectional=case["bidirectional"], dropout=0.0, dtype=dt,
                      engine=case["engine"], **proj)
    ref.train(case["training"]), twin.train(case["training"])
    unbatched = case["form"] == "unbatched"
    shape = (T, X) if unbatched else (B, T, X) if case["batch_first"] else (T, B, X)
    x = torch.randn(*shape, dtype=dt, requires_grad=True)
    inputs = [x]
    hx = None
    if case["hx"]:
        sizes = [proj.get("proj_size") or H, H][:2 if case["kind"] == "lstm" else 1]  # h (H_out), C (H)
        parts = [torch.randn(*((D * case["layers"], n) if unbatched else (D * case["layers"], B, n)), dtype=dt,
                             requires_grad=True) for n in sizes]
        inputs += parts
        hx = tuple(parts) if case["kind"] == "lstm" else parts[0]
    if case["form"] == "packed":
        lengths = torch.randint(1, T + 1, (B,))
        lengths[torch.randint(0, B, ())] = T
        pack = lambda: pack_padded_sequence(x, lengths, batch_first=case["batch_first"], enforce_sorted=False)  # noqa: E731
        assert_twins_agree(ref, twin, lambda m: m(pack(), hx), inputs, TOL[dt])
    else:
        assert_twins_agree(ref, twin, lambda m: m(x, hx), inputs, TOL[dt])


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(sorted(CELLS)), dtype=st.sampled_from([torch.float32, torch.float64]),
       batched=st.booleans(), hx=st.booleans(), bias=st.booleans(), T=st.integers(1, 5), B=st.integers(1, 3),
       X=st.integers(1, 4), H=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_cells_in_torch_idiom_over_a_sequence(kind, dtype, batched, hx, bias, T, B, X, H, seed):
    """``h = cell(x_t, h)`` / ``h, c = cell(x_t, (h, c))`` step by step over T steps, as torch.nn's cells are used."""
    torch.manual_seed(seed)
    ref, twin = twins(kind, CELLS, X, H, bias=bias, dtype=dtype)
    xs = torch.randn(T, B, X, dtype=dtype, requires_grad=True) if batched else torch.randn(T, X, dtype=dtype, requires_grad=True)
    state_shape = (B, H) if batched else (H,)
    lstm = kind == "lstm"
    h0 = [torch.randn(*state_shape, dtype=dtype, requires_grad=True) for _ in range(2 if lstm else 1)] if hx else []

    def run(cell):
        state = (tuple(h0) if lstm else h0[0]) if hx else None
        outs = []
        for t in range(T):
            state = cell(xs[t], state)  # h, c = cell(x_t, (h, c))
            outs.append(state[0] if lstm else state)
        return torch.stack(outs), state

    assert_twins_agree(ref, twin, run, [xs] + h0, TOL[dtype])


def _raises_alike(ref, twin, *args):
    """Both modules refuse the call with the same exception type (or both accept it)."""
    kinds = []
    for m in (ref, twin):
        try:
            m(*args)
            kinds.append(None)
        except Exception as e:  # noqa: BLE001 - the type is what is compared
            kinds.append(type(e))
    assert kinds[0] is not None, "the case is meant to be bad input for torch.nn"
    assert kinds[1] is kinds[0], f"torch.nn raised {kinds[0].__name__}, rnnlab.nn raised {kinds[1] and kinds[1].__name__}"


X_, H_ = 3, 4
BAD_LAYER_CALLS = {
    "input 4-D": lambda lstm: (torch.randn(2, 2, 2, X_),),
    "input 1-D": lambda lstm: (torch.randn(X_),),
    "input feature size": lambda lstm: (torch.randn(5, 2, X_ + 1),),
    "input dtype": lambda lstm: (torch.randn(5, 2, X_, dtype=torch.float64),),
    "hx 2-D for batched input": lambda lstm: (torch.randn(5, 2, X_), (torch.zeros(1, H_),) * 2 if lstm else torch.zeros(1, H_)),
    "hx 3-D for unbatched input": lambda lstm: (torch.randn(5, X_), (torch.zeros(1, 1, H_),) * 2 if lstm else torch.zeros(1, 1, H_)),
    "hx batch": lambda lstm: (torch.randn(5, 2, X_), (torch.zeros(1, 3, H_),) * 2 if lstm else torch.zeros(1, 3, H_)),
    "hx hidden size": lambda lstm: (torch.randn(5, 2, X_), (torch.zeros(1, 2, H_ + 1),) * 2 if lstm else torch.zeros(1, 2, H_ + 1)),
    "hx levels": lambda lstm: (torch.randn(5, 2, X_), (torch.zeros(2, 2, H_),) * 2 if lstm else torch.zeros(2, 2, H_)),
    "hx dtype": lambda lstm: (torch.randn(5, 2, X_), (torch.zeros(1, 2, H_, dtype=torch.float64),) * 2 if lstm
                              else torch.zeros(1, 2, H_, dtype=torch.float64)),
}


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("case", sorted(BAD_LAYER_CALLS))
def test_layers_refuse_bad_input_as_torch_does(kind, case):
    ref, twin = twins(kind, LAYERS, X_, H_)
    _raises_alike(ref, twin, *BAD_LAYER_CALLS[case](kind == "lstm"))


BAD_CELL_CALLS = {
    "input 3-D": lambda lstm: (torch.randn(2, 2, X_),),
    "input feature size": lambda lstm: (torch.randn(2, X_ + 1),),
    "input dtype": lambda lstm: (torch.randn(2, X_, dtype=torch.float64),),
    "hx 3-D": lambda lstm: (torch.randn(2, X_), (torch.zeros(1, 2, H_),) * 2 if lstm else torch.zeros(1, 2, H_)),
    "hx batch": lambda lstm: (torch.randn(2, X_), (torch.zeros(3, H_),) * 2 if lstm else torch.zeros(3, H_)),
    "hx hidden size": lambda lstm: (torch.randn(2, X_), (torch.zeros(2, H_ + 1),) * 2 if lstm else torch.zeros(2, H_ + 1)),
    "batched hx for unbatched input": lambda lstm: (torch.randn(X_), (torch.zeros(2, H_),) * 2 if lstm else torch.zeros(2, H_)),
    "hx dtype": lambda lstm: (torch.randn(2, X_), (torch.zeros(2, H_, dtype=torch.float64),) * 2 if lstm
                              else torch.zeros(2, H_, dtype=torch.float64)),
}


@pytest.mark.parametrize("kind", sorted(CELLS))
@pytest.mark.parametrize("case", sorted(BAD_CELL_CALLS))
def test_cells_refuse_bad_input_as_torch_does(kind, case):
    ref, twin = twins(kind, CELLS, X_, H_)
    _raises_alike(ref, twin, *BAD_CELL_CALLS[case](kind == "lstm"))
