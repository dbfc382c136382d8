"""unroll's numbers against independent references: the layers' own gate traces (return_gates, on
their engines), analysis.hidden_gradient_norms, a hand-written BPTT for the tanh RNN, and autograd on a
hand-written LSTM loop for the cell-state line."""

import math

import numpy as np
import pytest
import torch

import rnnlab
from rnnlab.analysis import hidden_gradient_norms
from rnnlab.models import ModelConfig, SequenceModel
from rnnlab.tasks import Batch, get_task
from rnnlab.viz import unroll

LAYERS = [
    ("rnn", lambda: rnnlab.RNN(3, 5, num_layers=2, bidirectional=True)),
    ("rnn", lambda: rnnlab.RNN(3, 5, nonlinearity="relu")),
    ("lstm", lambda: rnnlab.LSTM(3, 5, num_layers=2, bidirectional=True)),
    ("gru", lambda: rnnlab.GRU(3, 5, num_layers=2)),
    ("gru", lambda: rnnlab.GRU(3, 5, reset="after", bidirectional=True, batch_first=True)),
]
SIGMOID = ("f", "i", "o", "z", "r")


def _traces(layer, x, sample, lengths=None):
    _, _, gates = layer(x, lengths=lengths, return_gates=True)  # traces are (T, B, H) whatever the layout
    return {key: {n: v[:, sample].detach().numpy() for n, v in tr.items()} for key, tr in gates.items()}


@pytest.mark.parametrize("cell,make", LAYERS)
def test_values_equal_the_layers_gate_traces(cell, make):
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(2, 9, 3) if layer.batch_first else torch.randn(9, 2, 3)
    u = unroll(layer, x, sample=1)
    ref = _traces(layer, x, 1)
    assert u.cell == cell and len(u.tracks) == layer.num_layers * layer.num_directions and u.T == u.length == 9
    for tr in u.tracks:
        key = f"l{tr.level}" + ("_reverse" if tr.direction else "")
        for name in (() if cell == "rnn" else layer.gates):
            np.testing.assert_allclose(tr.values[name], ref[key][name], atol=1e-6)
        if cell == "lstm":
            np.testing.assert_allclose(tr.values["c"], ref[key]["c"], atol=1e-6)
        if cell == "rnn":
            np.testing.assert_allclose(tr.values["h"], ref[key]["h"], atol=1e-6)
        # pre-activations: the gate is σ or tanh of them (relu for the relu RNN)
        for g, a in tr.pre.items():
            f = {"relu": lambda v: np.maximum(v, 0)}.get(u.options.get("nonlinearity"), np.tanh)
            act = (1 / (1 + np.exp(-a))) if g in SIGMOID else f(a)
            np.testing.assert_allclose(act, tr.values[g], atol=1e-12)
            w = layer.weights(tr.level, tr.direction)
            H = layer.hidden_size
            np.testing.assert_allclose(tr.bias[g], w.bias[layer.gates.index(g) * H:(layer.gates.index(g) + 1) * H].detach().numpy())


def test_lstm_hidden_state_is_o_times_tanh_c_and_gru_update_holds():
    torch.manual_seed(1)
    x = torch.randn(7, 1, 3)
    u = unroll(rnnlab.LSTM(3, 4), x)
    tr = u.tracks[0]
    np.testing.assert_allclose(tr.values["h"], tr.values["o"] * np.tanh(tr.values["c"]), atol=1e-12)
    out, _ = rnnlab.LSTM(3, 4)(x)  # another layer: h differs
    g = unroll(rnnlab.GRU(3, 4), x).tracks[0]
    prev = np.vstack([np.zeros(4), g.values["h"][:-1]])
    np.testing.assert_allclose(g.values["h"], (1 - g.values["z"]) * prev + g.values["z"] * g.values["n"], atol=1e-12)


@pytest.mark.parametrize("cell,make", LAYERS)
def test_gradient_norms_equal_hidden_gradient_norms(cell, make):
    torch.manual_seed(2)
    layer = make()
    x = torch.randn(2, 8, 3) if layer.batch_first else torch.randn(8, 2, 3)
    w = torch.randn(layer.num_directions * 5, dtype=torch.float64)
    loss = lambda out: (out * w).sum()  # every step's output enters the loss
    u = unroll(layer, x, loss, sample=0)
    one = x[:1] if layer.batch_first else x[:, :1]
    ref_layer = make().double()
    ref_layer.load_state_dict(layer.state_dict())
    for tr in u.tracks:
        for state in ("h", "c") if cell == "lstm" else ("h",):
            ref = hidden_gradient_norms(ref_layer, one.double(), loss, level=tr.level, direction=tr.direction, state=state)
            np.testing.assert_allclose(tr.grads[state], ref.numpy(), rtol=1e-9, atol=1e-14)
        g = tr.grads["h"]
        order = range(1, 8) if tr.direction == 0 else range(0, 7)
        for t in order:
            prev = t - 1 if tr.direction == 0 else t + 1
            assert tr.grads["factor"][t] == pytest.approx(g[prev] / g[t], rel=1e-12)
    assert u.loss == pytest.approx(float(loss(ref_layer(one.double())[0]).detach()), rel=1e-9)


def test_rnn_flows_equal_a_hand_written_bptt():
    """tanh RNN, L = Σ_t c_t·h_t: δ_t = c_t + W_hhᵀ((1 − h_{t+1}²) ⊙ δ_{t+1}); the arrows carry its parts."""
    torch.manual_seed(3)
    T, X, H = 12, 3, 6
    layer = rnnlab.RNN(X, H)
    x = torch.randn(T, X)
    c = torch.randn(T, H, dtype=torch.float64)
    u = unroll(layer, x, lambda out: (out[:, 0] * c).sum())
    tr = u.tracks[0]
    w_ih, w_hh = layer.weight_ih_l0.detach().double().numpy(), layer.weight_hh_l0.detach().double().numpy()
    h, c = tr.values["h"], c.numpy()
    delta = np.zeros((T, H))
    back = np.zeros(H)  # what step t+1 sends back to h_t
    flows_h = np.zeros(T)
    for t in reversed(range(T)):
        delta[t] = c[t] + back
        da = (1 - h[t] ** 2) * delta[t]  # ∂L/∂(pre-activation at t)
        back = w_hh.T @ da
        flows_h[t] = np.linalg.norm(back)  # the recurrent arrow into step t carries ∂L/∂h_{t-1}
        assert tr.grads["flow_in"][t] == pytest.approx(np.linalg.norm(w_ih.T @ da), rel=1e-9)
    np.testing.assert_allclose(tr.grads["h"], np.linalg.norm(delta, axis=1), rtol=1e-9)
    np.testing.assert_allclose(tr.grads["flow_h"], flows_h, rtol=1e-9)
    np.testing.assert_allclose(tr.grads["flow_out"], np.linalg.norm(c, axis=1), rtol=1e-12)


def test_lstm_cell_state_line_carries_f_times_dc():
    """The C line into step t carries ∂L/∂C_{t-1} through C_t = f_t * C_{t-1} + ...: f_t ⊙ ∂L/∂C_t."""
    torch.manual_seed(4)
    T, X, H = 10, 2, 4
    layer = rnnlab.LSTM(X, H)
    x = torch.randn(T, X).double().requires_grad_()  # float32 values; requires grad so that every C_t is in the graph
    u = unroll(layer, x.detach().float(), lambda out: out[-1].pow(2).sum())
    W = {n: p.detach().double() for n, p in layer.named_parameters()}
    h, C, cs, fs = torch.zeros(H, dtype=torch.float64), torch.zeros(H, dtype=torch.float64), [], []
    for t in range(T):  # the seed's equations, written out
        a = W["weight_ih_l0"] @ x[t] + W["weight_hh_l0"] @ h + W["bias_l0"]
        f, i, g, o = torch.sigmoid(a[:H]), torch.sigmoid(a[H:2 * H]), torch.tanh(a[2 * H:3 * H]), torch.sigmoid(a[3 * H:])
        C = f * C + i * g
        C.retain_grad()
        h = o * torch.tanh(C)
        cs.append(C)
        fs.append(f.detach())
    h.pow(2).sum().backward()
    tr = u.tracks[0]
    for t in range(1, T):
        assert tr.grads["flow_c"][t] == pytest.approx(float((fs[t] * cs[t].grad).norm()), rel=1e-9)
        assert tr.grads["c"][t] == pytest.approx(float(cs[t].grad.norm()), rel=1e-9)
    np.testing.assert_allclose(tr.values["c"], torch.stack(cs).detach().numpy(), atol=1e-6)


def test_lengths_draw_padding_and_match_the_padded_batch():
    torch.manual_seed(5)
    layer = rnnlab.LSTM(3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(10, 3, 3)
    lengths = torch.tensor([10, 6, 3])
    u = unroll(layer, x, lambda out: out.pow(2).sum(), lengths=lengths, sample=1)
    assert u.T == 10 and u.length == 6
    ref = _traces(layer, x, 1, lengths)
    for tr in u.tracks:
        key = f"l{tr.level}" + ("_reverse" if tr.direction else "")
        for name in ("f", "i", "g", "o", "c"):
            np.testing.assert_allclose(tr.values[name][:6], ref[key][name][:6], atol=1e-6)
            assert np.isnan(tr.values[name][6:]).all()
        assert np.isnan(tr.grads["h"][6:]).all() and (tr.grads["h"][:6] >= 0).all()


def test_a_sequence_model_with_its_task_loss():
    torch.manual_seed(6)
    task = get_task("adding", seq_len=15)
    batch = task.eval_batches(4, 4)[0]
    model = SequenceModel(task.spec, ModelConfig(cell="gru", hidden=6, embedding=5)).eval()
    loss = lambda y: task.loss(y, Batch(batch.x[2:3].double(), batch.y[2:3].double()))
    u = unroll(model, batch.x, loss, sample=2)
    with torch.no_grad():
        y, _ = model(batch.x)
        _, _, gates = model.rnn(model.input_map(batch.x), return_gates=True)
    assert u.y[-1, 0] == pytest.approx(float(y[2, 0]), abs=1e-6) and np.isnan(u.y[:-1]).all()  # a "last" head
    np.testing.assert_allclose(u.tracks[0].values["z"], gates["l0"]["z"][:, 2].numpy(), atol=1e-6)
    np.testing.assert_allclose(u.x, batch.x[2].numpy(), atol=1e-7)
    assert u.loss == pytest.approx(float(task.loss(y[2:3], Batch(batch.x[2:3], batch.y[2:3]))), rel=1e-5)
    assert u.embedded and not u.symbols


def test_symbol_inputs_and_unit_choice():
    torch.manual_seed(7)
    task = get_task("copy", seq_len=5)
    batch = task.eval_batches(2, 2)[0]
    model = SequenceModel(task.spec, ModelConfig(cell="lstm", hidden=20, embedding=4))
    u = unroll(model, batch.x, sample=0)
    assert u.symbols and u.x.shape == (batch.x.shape[1], 1) and (u.x[:, 0] == batch.x[0].numpy()).all()
    assert len(u.units) == 8 and u.units == sorted(u.units)  # the 8 units whose h varies most
    spread = np.nanstd(u.tracks[0].values["h"], axis=0)
    assert min(spread[u.units]) >= max(np.delete(spread, u.units))
    assert unroll(model, batch.x, units=[3, 0]).units == [3, 0]


def test_bad_arguments_name_themselves():
    layer = rnnlab.GRU(3, 4)
    x = torch.randn(5, 2, 3)
    with pytest.raises(TypeError, match="model_or_layer"):
        unroll(torch.nn.GRU(3, 4), x)
    with pytest.raises(ValueError, match="model_or_layer.*layer_norm"):
        unroll(rnnlab.LSTM(3, 4, layer_norm=True), x)
    with pytest.raises(TypeError, match="model_or_layer.*MinGRU"):
        unroll(rnnlab.MinGRU(3, 4), x)
    with pytest.raises(ValueError, match="model_or_layer.*learn_initial_state"):
        unroll(rnnlab.GRU(3, 4, learn_initial_state=True), x)
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        unroll(layer, [[1.0]])
    with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
        unroll(layer, torch.ones(5, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"x: expected \(T, B, 3\)"):
        unroll(layer, torch.randn(5, 2, 4))
    with pytest.raises(ValueError, match=r"sample: expected an index in \[-2, 1\].*got 2"):
        unroll(layer, x, sample=2)
    with pytest.raises(TypeError, match="sample"):
        unroll(layer, x, sample=1.0)
    with pytest.raises(ValueError, match=r"lengths: expected each length in \[1, 5\].*got 9"):
        unroll(layer, x, lengths=torch.tensor([9, 2]))
    with pytest.raises(ValueError, match="lengths: expected 2 integer lengths"):
        unroll(layer, x, lengths=torch.tensor([5]))
    with pytest.raises(TypeError, match="loss"):
        unroll(layer, x, loss=3.0)
    with pytest.raises(ValueError, match="loss: expected it to return a scalar"):
        unroll(layer, x, loss=lambda out: out)
    with pytest.raises(ValueError, match=r"units: expected distinct ints in \[0, 3\]"):
        unroll(layer, x, units=[0, 4])
    with pytest.raises(TypeError, match="units"):
        unroll(layer, x, units=2)


def test_per_step_factor_separates_rnn_from_lstm_along_c():
    """The learner's picture: at T = 60 the tanh RNN's ‖∂L/∂h_1‖ is far below its ‖∂L/∂h_T‖, while the
    LSTM's cell state keeps ‖∂L/∂C_t‖ within a few orders of magnitude (forget bias 1)."""
    torch.manual_seed(8)
    x = torch.randn(60, 1, 1)
    loss = lambda out: out[-1].sum()
    rnn = unroll(rnnlab.RNN(1, 16, init="torch"), x, loss).tracks[0].grads
    lstm = unroll(rnnlab.LSTM(1, 16), x, loss).tracks[0].grads
    assert rnn["h"][0] / rnn["h"][-1] < 1e-6
    assert lstm["c"][0] / lstm["c"][-1] > 1e-4
    assert math.isnan(rnn["factor"][0]) and np.nanmax(rnn["factor"]) < 1
