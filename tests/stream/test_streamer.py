"""Streaming: any split of a sequence into steps and chunks gives exactly the full-sequence outputs."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import rnnlab
from helpers import CELL_IDS, CELLS_AND_OPTIONS
from rnnlab.stream import Streamer

CELLS, IDS = CELLS_AND_OPTIONS, CELL_IDS
TOL = dict(atol=1e-12, rtol=1e-12)


def as_tuple(h):
    return tuple(h) if isinstance(h, tuple) else (h,)


def stream(s, x, sizes, batch_first=False):
    """Feed x (time axis 0, or 1 with batch_first) in pieces: a size of 1 is a step(), more a feed()."""
    t_axis = 1 if batch_first else 0
    outs, t = [], 0
    for n in sizes:
        piece = x.narrow(t_axis, t, n)
        if n == 1:
            outs.append(s.step(piece.select(t_axis, 0)).unsqueeze(t_axis))
        else:
            outs.append(s.feed(piece))
        t += n
    return torch.cat(outs, t_axis)


def split(T, draw_sizes):
    sizes, left = [], T
    for n in draw_sizes:
        if left == 0:
            break
        n = min(n, left)
        sizes.append(n)
        left -= n
    if left:
        sizes.append(left)
    return sizes


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "equations"])
@pytest.mark.parametrize("cls,opts", CELLS, ids=IDS)
def test_steps_equal_full_sequence(cls, opts, fused):
    layer = cls(3, 4, num_layers=3, engine="reference", **opts).double()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    out, h_n = layer(x)
    s = Streamer(layer, fused=fused)
    got = torch.stack([s.step(x[t]) for t in range(6)])
    torch.testing.assert_close(got, out, **TOL)
    for a, b in zip(as_tuple(s.state), as_tuple(h_n)):
        torch.testing.assert_close(a, b, **TOL)


@settings(max_examples=25, deadline=None)
@given(
    cell=st.sampled_from(range(len(CELLS))),
    num_layers=st.integers(1, 3),
    bias=st.booleans(),
    batch_first=st.booleans(),
    fused=st.booleans(),
    with_hx=st.booleans(),
    T=st.integers(1, 8),
    B=st.integers(1, 3),
    sizes=st.lists(st.integers(1, 4), max_size=8),
    seed=st.integers(0, 2**16),
)
def test_any_split_into_steps_and_chunks(cell, num_layers, bias, batch_first, fused, with_hx, T, B, sizes, seed):
    cls, opts = CELLS[cell]
    torch.manual_seed(seed)
    layer = cls(2, 3, num_layers=num_layers, bias=bias, batch_first=batch_first, engine="reference", **opts).double()
    x = torch.randn(*((B, T, 2) if batch_first else (T, B, 2)), dtype=torch.float64)
    hx = tuple(torch.randn(num_layers, B, 3, dtype=torch.float64) for _ in layer.cell_class.STATE) if with_hx else None
    hx = hx if hx is None or len(hx) > 1 else hx[0]
    out, h_n = layer(x, hx)
    s = Streamer(layer, fused=fused)
    s.state = hx
    got = stream(s, x, split(T, sizes), batch_first)
    torch.testing.assert_close(got, out, **TOL)
    for a, b in zip(as_tuple(s.state), as_tuple(h_n)):
        torch.testing.assert_close(a, b, **TOL)


class Tagger(nn.Module):
    """The attribute layout Streamer reads: input_map -> rnn (batch-first) -> head, per step."""

    def __init__(self, layer):
        super().__init__()
        self.input_map = nn.Embedding(7, layer.input_size)
        self.rnn = layer
        self.head = nn.Sequential(nn.Linear(layer.hidden_size, 5), nn.Tanh(), nn.Linear(5, 2))

    def forward(self, tokens):
        return self.head(self.rnn(self.input_map(tokens))[0])


@pytest.mark.parametrize("cls,opts", CELLS, ids=IDS)
def test_model_with_embedding_and_head(cls, opts):
    model = Tagger(cls(3, 4, num_layers=2, batch_first=True, **opts)).double()
    tokens = torch.randint(0, 7, (3, 7))
    want = model(tokens)
    s = Streamer(model)
    got = stream(s, tokens, [1, 3, 1, 2], batch_first=True)
    torch.testing.assert_close(got, want, **TOL)


def test_sequence_model_from_rnnlab_models():
    from rnnlab.models import ModelConfig, SequenceModel
    from rnnlab.tasks.base import ModelSpec

    model = SequenceModel(ModelSpec("symbols", 5, 3, "every"), ModelConfig(cell="gru", hidden=4, layers=2, embedding=3))
    model = model.double().eval()
    tokens = torch.randint(0, 5, (2, 6))
    want, state = model(tokens)
    s = Streamer(model)
    got = stream(s, tokens, [2, 1, 1, 2], batch_first=True)
    torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(s.state, state, **TOL)


def test_explicit_before_and_after():
    layer = rnnlab.LSTM(3, 4).double()
    pre, post = nn.Linear(2, 3).double(), nn.Linear(4, 1).double()
    x = torch.randn(5, 2, 2, dtype=torch.float64)
    want = post(layer(pre(x))[0])
    s = Streamer(layer, before=pre, after=post)
    torch.testing.assert_close(stream(s, x, [1, 1, 3]), want, **TOL)


@pytest.mark.parametrize("cls,opts", CELLS, ids=IDS)
def test_reset_some_sequences(cls, opts):
    layer = cls(2, 3, num_layers=2, **opts).double()
    x = torch.randn(6, 3, 2, dtype=torch.float64)
    s = Streamer(layer)
    outs = [s.step(x[t]) for t in range(2)]
    s.reset([1])
    outs += [s.step(x[t]) for t in range(2, 6)]
    got = torch.stack(outs)
    whole, _ = layer(x)
    fresh, fresh_state = layer(x[2:, 1:2])  # sequence 1 restarted at t = 2
    torch.testing.assert_close(got[:, [0, 2]], whole[:, [0, 2]], **TOL)
    torch.testing.assert_close(got[2:, 1:2], fresh, **TOL)
    for a, b in zip(as_tuple(s.state), as_tuple(fresh_state)):
        torch.testing.assert_close(a[:, 1:2], b, **TOL)
    s.reset(torch.tensor([0, 2]))
    assert all(torch.all(p[:, [0, 2]] == 0) for p in as_tuple(s.state))
    s.reset()
    assert s.state is None and s.batch_size is None
    s.step(x[0, :2])  # a new batch size after a full reset


@pytest.mark.parametrize("blocks", [False, True])
def test_weights_changed_in_place_are_used(blocks, monkeypatch):
    """(W_hh acts on h0 = 0 at the first step, so the layer's call with the new weights is the reference;
    ``blocks``: a float32 level stepping on column blocks, rnnlab::cell_step's batch-1 layout)"""
    if blocks:
        monkeypatch.setattr("rnnlab.stream.streamer.BLOCKS_FROM", 16)
    dtype = torch.float32 if blocks else torch.float64
    layer = rnnlab.GRU(2, 3, reset="after").to(dtype)
    x = torch.randn(2, 1, 2, dtype=dtype)
    s = Streamer(layer)
    s.step(x[0])
    with torch.no_grad():
        layer.weight_hh_l0.mul_(0.5)
    got = s.step(x[1])
    want, _ = layer(x)
    torch.testing.assert_close(got, want[1], **(TOL if not blocks else dict(rtol=1e-5, atol=1e-6)))


def test_state_is_an_ordinary_tensor():
    """The state leaves inference mode: it can start an autograd computation."""
    layer = rnnlab.LSTM(2, 3)
    s = Streamer(layer)
    s.feed(torch.randn(3, 2, 2))
    out, _ = layer(torch.randn(2, 2, 2), s.state)
    out.sum().backward()
    assert layer.weight_hh_l0.grad is not None


def test_bad_input():
    layer = rnnlab.RNN(2, 3, num_layers=2, dropout=0.5)
    with pytest.raises(ValueError, match="bidirectional layer's reverse direction"):
        Streamer(rnnlab.GRU(2, 3, bidirectional=True))
    with pytest.raises(TypeError, match="model: expected an rnnlab layer, or a model"):
        Streamer(nn.Linear(2, 3))
    with pytest.raises(TypeError, match="fused: expected a bool"):
        Streamer(layer, fused=1)
    with pytest.raises(TypeError, match="after: expected a module or callable"):
        Streamer(layer, after=3)
    s = Streamer(layer)
    with pytest.raises(ValueError, match="training mode with dropout"):
        s.step(torch.randn(4, 2))
    layer.eval()
    with pytest.raises(ValueError, match=r"x_t: expected shape \(B, 2\)"):
        s.step(torch.randn(4, 3))
    with pytest.raises(TypeError, match="x_t: expected dtype torch.float32"):
        s.step(torch.randn(4, 2, dtype=torch.float64))
    s.step(torch.randn(4, 2))
    with pytest.raises(ValueError, match="x_t: expected batch 4 .* call reset"):
        s.step(torch.randn(5, 2))
    with pytest.raises(ValueError, match="chunk: expected batch 4"):
        s.feed(torch.randn(3, 5, 2))
    with pytest.raises(ValueError, match="chunk: expected a 3-D tensor"):
        s.feed(torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"batch_indices: expected indices in \[0, 4\)"):
        s.reset([4])
    with pytest.raises(TypeError, match="batch_indices: expected None, an int"):
        s.reset([0.5])
    with pytest.raises(ValueError, match="state: expected shape"):
        s.state = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"state: hx: expected shape \(2, 4, 3\)"):
        s.state = torch.zeros(2, 4, 5)


@pytest.mark.parametrize("cls", [rnnlab.MinGRU, rnnlab.MinLSTM], ids=["mingru", "minlstm"])
def test_minimal_layers_step_through_their_equations(cls):
    """minGRU/minLSTM: full sequences run by the parallel scan, steps by the cells' equations."""
    layer = cls(3, 4, num_layers=2).double()
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    out, h_n = layer(x)
    s = Streamer(layer)
    got = stream(s, x, [1, 1, 3, 1, 1])
    torch.testing.assert_close(got, out, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(s.state, h_n, atol=1e-10, rtol=1e-10)
