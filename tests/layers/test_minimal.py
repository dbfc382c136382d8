"""minGRU / minLSTM: the parallel log-space scan and the native engine's compiled loop equal the sequential
equations, step for step."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnlab
from rnnlab.analysis import closed_form_parameters, count_parameters
from rnnlab.cells.minimal import g, log_g
from rnnlab.engine import ops

LAYERS = [rnnlab.MinGRU, rnnlab.MinLSTM]


def twin(layer, engine):
    other = type(layer)(layer.input_size, layer.hidden_size, layer.num_layers, layer.bias,
                        layer.batch_first, 0.0, layer.bidirectional, engine=engine).to(layer.weight_ih_l0.dtype)
    other.load_state_dict(layer.state_dict())
    return other


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(LAYERS), st.sampled_from(["scan", "native"]), st.integers(1, 8),
       st.integers(1, 3), st.integers(1, 3), st.booleans(), st.booleans(), st.booleans(), st.booleans(),
       st.integers(0, 999))
def test_scan_and_native_equal_sequential(cls, engine, T, B, L, bi, with_lengths, with_hx, bias, seed):
    torch.manual_seed(seed)
    scan = cls(3, 4, num_layers=L, bidirectional=bi, bias=bias, engine=engine).double()
    seq = twin(scan, "reference")
    _assert_equal_runs(scan, seq, T, B, L, bi, with_lengths, with_hx)


def _assert_equal_runs(scan, seq, T, B, L, bi, with_lengths, with_hx):
    x = torch.randn(T, B, 3, dtype=torch.float64, requires_grad=True)
    hx = torch.randn(L * (2 if bi else 1), B, 4, dtype=torch.float64, requires_grad=True) if with_hx else None
    lengths = torch.randint(1, T + 1, (B,)) if with_lengths else None
    o1, h1, t1 = scan(x, hx, lengths=lengths, return_gates=True)
    o2, h2, t2 = seq(x, hx, lengths=lengths, return_gates=True)
    torch.testing.assert_close(o1, o2, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(h1, h2, atol=1e-10, rtol=1e-10)
    for key in t1:
        for name in t1[key]:
            torch.testing.assert_close(t1[key][name], t2[key][name], atol=1e-10, rtol=1e-10)
    leaves = [x] + ([hx] if with_hx else []) + list(scan.parameters())
    w = torch.randn_like(o1)
    g1 = torch.autograd.grad((o1 * w).sum() + h1.sum(), leaves)
    leaves2 = [x] + ([hx] if with_hx else []) + list(seq.parameters())
    g2 = torch.autograd.grad((o2 * w).sum() + h2.sum(), leaves2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("engine", ["scan", "native"])
@pytest.mark.parametrize("cls", LAYERS)
def test_gradcheck(cls, engine):
    layer = cls(2, 3, bidirectional=True, engine=engine).double()
    x = torch.randn(5, 2, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 3])
    assert torch.autograd.gradcheck(lambda x, h0, *p: layer(x, h0, lengths=lengths)[0], (x, h0, *layer.parameters()))
    # second derivatives: the scan's only without lengths (torch's logcumsumexp double backward is NaN where an
    # incoming gradient is exactly zero, as at padded steps)
    lengths = None if engine == "scan" else lengths
    assert torch.autograd.gradgradcheck(lambda x, h0, *p: layer(x, h0, lengths=lengths)[0], (x, h0, *layer.parameters()))


@pytest.mark.parametrize("cls", LAYERS)
def test_auto_runs_the_native_loop_on_cpu_and_the_scan_while_tracing(cls, monkeypatch):
    layer = cls(3, 4)
    x = torch.randn(5, 2, 3)
    assert type(layer.select_engine(x)).__name__ == "LinearEngine"
    assert type(cls(3, 4, engine="scan").select_engine(x)).__name__ == "ScanEngine"
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    assert type(layer.select_engine(x)).__name__ == "ScanEngine"


@pytest.mark.parametrize("engine,tol", [("scan", 1e-4), ("native", 1e-5)])
@pytest.mark.parametrize("cls", LAYERS)
def test_long_sequences_in_float32(cls, engine, tol):
    """The scan's float32 error grows with T (exp of cumulative sums); the loop's is the reference's own rounding."""
    layer = cls(4, 8, engine=engine)
    x = torch.randn(3000, 2, 4)
    a, _ = layer(x)
    b, _ = twin(layer, "reference")(x)
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


def test_cells_follow_the_paper():
    x, h = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    cell = rnnlab.MinLSTMCell(3, 4).double()
    W, b = cell.weight_ih.detach(), cell.bias.detach()
    f = torch.sigmoid(x @ W[:4].T + b[:4])
    i = torch.sigmoid(x @ W[4:8].T + b[4:8])
    a = x @ W[8:].T + b[8:]
    h_tilde = torch.where(a >= 0, a + 0.5, torch.sigmoid(a))
    expected = f / (f + i) * h + i / (f + i) * h_tilde
    torch.testing.assert_close(cell(x, h)[0], expected)
    a = torch.linspace(-30, 30, 1001, dtype=torch.float64)
    assert torch.all(g(a) > 0)
    torch.testing.assert_close(log_g(a), torch.log(g(a)))


@pytest.mark.parametrize("cls,name,G", [(rnnlab.MinGRU, "mingru", 2), (rnnlab.MinLSTM, "minlstm", 3)])
def test_parameters_and_interop(cls, name, G):
    layer = cls(5, 7, num_layers=2, bidirectional=True)
    assert count_parameters(layer) == closed_form_parameters(name, 5, 7, 2, True)
    assert count_parameters(cls(5, 7)) == G * (7 * 5 + 7)
    assert layer.weight_hh_l0 is None
    with pytest.raises(ValueError, match="torch.nn has no"):
        layer.to_torch()
    with pytest.raises(ValueError, match="engine: expected one of 'auto', 'scan', 'native', 'reference'"):
        cls(5, 7, engine="torch")
