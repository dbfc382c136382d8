"""rnnlab.LSTM with ``proj_size``: h_t = W_hr (o_t * tanh(C_t)) on every engine, against torch.nn.LSTM (the
independent reference), the reference engine (float64, the cells' equations) and finite differences."""

from __future__ import annotations

import pytest
import torch

import rnnlab
from rnnlab.cells.lstm import SPEC
from rnnlab.engine import ops
from rnnlab.stream import Streamer

ENGINES = ["native", "torch", "reference", "auto"]


def _grads(out, state, inputs):
    h, c = state
    loss = out.sin().sum() + (h * h).sum() + c.cos().sum()
    return torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, False), (2, True)])
@pytest.mark.parametrize("lengths", [False, True])
def test_equals_torch_nn_lstm_with_projection(engine, num_layers, bidirectional, lengths):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(5, 8, num_layers, proj_size=3, bidirectional=bidirectional).double()
    layer = rnnlab.LSTM.from_torch(ref, engine=engine)
    assert layer.proj_size == 3 and tuple(layer.weight_hr_l0.shape) == (3, 8)
    x = torch.randn(7, 4, 5, dtype=torch.float64, requires_grad=True)
    D = 2 if bidirectional else 1
    h0 = torch.randn(D * num_layers, 4, 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(D * num_layers, 4, 8, dtype=torch.float64, requires_grad=True)
    if lengths:
        n = torch.tensor([7, 3, 5, 1])
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, n, enforce_sorted=False)
        out_ref, state_ref = ref(packed, (h0, c0))
        out_ref = torch.nn.utils.rnn.pad_packed_sequence(out_ref, total_length=7)[0]
        out, state = layer(x, (h0, c0), lengths=n)
    else:
        out_ref, state_ref = ref(x, (h0, c0))
        out, state = layer(x, (h0, c0))
    assert out.shape == (7, 4, D * 3) and state[0].shape == (D * num_layers, 4, 3) and state[1].shape[-1] == 8
    for a, b in zip((out, *state), (out_ref, *state_ref)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    got = _grads(out, state, [x, h0, c0, *layer.parameters()])
    want = _grads(out_ref, state_ref, [x, h0, c0, *ref.parameters()])
    # parameters: rnnlab's (w_ih, w_hh, b, w_hr) per level and direction against torch's; compare through to_torch
    for a, b in zip(got[:3], want[:3]):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-11)
    torch_grads = dict(zip([n for n, _ in ref.named_parameters()], want[3:]))
    ours = dict(zip([n for n, _ in layer.named_parameters()], got[3:]))
    for name in ours:
        if name.startswith("weight_hr"):
            torch.testing.assert_close(ours[name], torch_grads[name], atol=1e-11, rtol=1e-11)


@pytest.mark.skipif(not ops.available(), reason="the native operators are not built")
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_native_equals_reference_and_round_trips_to_torch(dtype, tol):
    torch.manual_seed(1)
    ref = rnnlab.LSTM(6, 10, 2, bidirectional=True, proj_size=4, engine="reference").to(dtype)
    nat = rnnlab.LSTM(6, 10, 2, bidirectional=True, proj_size=4, engine="native").to(dtype)
    nat.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(9, 3, 6, dtype=dtype)
    n = torch.tensor([9, 4, 6])
    res = [m(x, lengths=n) for m in (ref, nat)]
    for a, b in zip((res[0][0], *res[0][1]), (res[1][0], *res[1][1])):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)
    grads = [_grads(o, s, list(m.parameters())) for m, (o, s) in zip((ref, nat), res)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=10 * tol, rtol=10 * tol)
    back = nat.to_torch()
    assert back.proj_size == 4
    torch.testing.assert_close(back(x)[0], nat(x)[0], atol=tol, rtol=tol)


@pytest.mark.skipif(not ops.available(), reason="the native operators are not built")
def test_native_projection_passes_gradcheck_and_gradgradcheck():
    torch.manual_seed(2)
    layer = rnnlab.LSTM(3, 4, 1, bidirectional=True, proj_size=2, engine="native").double()
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    w_hr = layer.weight_hr_l0

    def f(x, w):
        with torch.nn.utils.stateless._reparametrize_module(layer, {"weight_hr_l0": w}):
            out, (h, c) = layer(x, lengths=torch.tensor([4, 2]))
        return out, h, c

    assert torch.autograd.gradcheck(f, (x, w_hr))
    assert torch.autograd.gradgradcheck(f, (x, w_hr))


def test_parameter_count_closed_form_and_torchs():
    for layers, bid, bias in ((1, False, True), (3, True, True), (2, False, False)):
        layer = rnnlab.LSTM(7, 12, layers, bias=bias, bidirectional=bid, proj_size=5)
        twin = torch.nn.LSTM(7, 12, layers, bias=bias, bidirectional=bid, proj_size=5)
        count = sum(p.numel() for p in layer.parameters())
        torch_count = sum(p.numel() for p in twin.parameters()) - (2 if bid else 1) * layers * 48 * bias  # one bias
        assert count == SPEC.layer_parameters(7, 12, layers, bid, bias, {}, proj_size=5) == torch_count
        # G·(H(X + P) + H) + P·H per level and direction, the levels above the first seeing D·P
        D = 2 if bid else 1
        closed = sum(D * (4 * (12 * ((7 if k == 0 else D * 5) + 5) + (12 if bias else 0)) + 5 * 12) for k in range(layers))
        assert count == closed


def test_learned_initial_state_and_streaming_with_projection():
    torch.manual_seed(3)
    layer = rnnlab.LSTM(4, 6, 2, proj_size=2, learn_initial_state=True)
    assert layer.initial_h.shape == (2, 2) and layer.initial_c.shape == (2, 6)
    with torch.no_grad():
        layer.initial_h.normal_()
        layer.initial_c.normal_()
    layer.eval()
    x = torch.randn(5, 3, 4)
    out, (h, c) = layer(x)
    for fused in (True, False):
        s = Streamer(layer, fused=fused)
        steps = torch.stack([s.step(x[t]) for t in range(5)])
        torch.testing.assert_close(steps, out, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(s.state[0], h, atol=1e-6, rtol=1e-6)


def test_projection_errors_name_the_argument():
    with pytest.raises(TypeError, match="proj_size"):  # only the LSTM takes the argument
        rnnlab.GRU(3, 4, proj_size=2)
    with pytest.raises(ValueError, match="proj_size: expected a value smaller than hidden_size = 4, got 4"):
        rnnlab.LSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError, match="proj_size: expected an int >= 0"):
        rnnlab.LSTM(3, 4, proj_size=-1)
    with pytest.raises(ValueError, match="proj_size: expected 0 with"):
        rnnlab.LSTM(3, 4, proj_size=2, peepholes=True)
    layer = rnnlab.LSTM(3, 4, proj_size=2)
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match=r"hx\[0\] \(h_0\): expected shape \(1, 2, 2\), got \(1, 2, 4\)"):
        layer(x, (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
    with pytest.raises(ValueError, match=r"hx\[1\] \(c_0\): expected shape \(1, 2, 4\), got \(1, 2, 2\)"):
        layer(x, (torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)))
    assert "proj_size=2" in repr(layer)


def test_onnx_export_refuses_the_projection(tmp_path):
    pytest.importorskip("onnxscript")
    from rnnlab.export import to_onnx

    with pytest.raises(ValueError, match="proj_size=2 has no ONNX operator"):
        to_onnx(rnnlab.LSTM(3, 4, proj_size=2).eval(), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_unroll_refuses_the_projection():
    from rnnlab.viz import unroll

    with pytest.raises(ValueError, match="proj_size=2"):
        unroll(rnnlab.LSTM(3, 4, proj_size=2), torch.randn(3, 1, 3))


@pytest.mark.skipif(not ops.available(), reason="the native operators are not built")
def test_projection_traces_under_compile_and_export():
    torch.manual_seed(4)
    layer = rnnlab.LSTM(3, 6, 2, proj_size=2, bidirectional=True)
    x = torch.randn(5, 2, 3)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    grads = []
    for m in (compiled, layer):
        out, (h, c) = m(x)
        (out.square().sum() + h.sum() + c.sum()).backward()
        grads.append([out.detach(), *(p.grad.clone() for p in layer.parameters())])
        layer.zero_grad()
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    program = torch.export.export(layer.eval(), (x,))
    levels = [n for n in program.graph.nodes if "recurrent_level" in str(n.target)]
    assert len(levels) == 2
    torch.testing.assert_close(program.module()(x)[0], layer(x)[0], atol=1e-6, rtol=1e-6)
