"""The torch engine (torch's fused kernels on converted weights) and "auto"'s choice, against the
reference engine."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence

import rnnlab
from rnnlab.engine import choose, get_engine

TORCH_CELLS = {
    "rnn-tanh": (rnnlab.RNN, dict(nonlinearity="tanh")),
    "rnn-relu": (rnnlab.RNN, dict(nonlinearity="relu")),
    "lstm": (rnnlab.LSTM, {}),
    "gru-after": (rnnlab.GRU, dict(reset="after")),
}
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def _states(h):
    return h if isinstance(h, tuple) else (h,)


def _outputs_and_grads(layer, engine, x, hx, lengths):
    layer.engine = engine
    out, h = layer(x, hx, lengths=lengths)
    if isinstance(out, torch.nn.utils.rnn.PackedSequence):
        out = out.data
    tensors = [out, *_states(h)]
    gen = torch.Generator().manual_seed(2)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in tensors)
    xs = x.data if isinstance(x, torch.nn.utils.rnn.PackedSequence) else x
    leaves = [*layer.parameters(), xs] + ([] if hx is None else list(_states(hx)))
    return tensors, torch.autograd.grad(loss, leaves)


@settings(max_examples=30, deadline=None)
@given(
    cell=st.sampled_from(sorted(TORCH_CELLS)),
    num_layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    batch_first=st.booleans(),
    bias=st.booleans(),
    kind=st.sampled_from(["plain", "lengths", "packed", "unbatched"]),
    with_hx=st.booleans(),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    T=st.integers(1, 6),
    B=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_torch_engine_equals_reference(cell, num_layers, bidirectional, batch_first, bias, kind, with_hx, dtype, T, B, seed):
    cls, opts = TORCH_CELLS[cell]
    torch.manual_seed(seed)
    X, H = 3, 4
    # dropout is drawn by torch's kernel in training: compare in eval mode, where it is the identity
    layer = cls(X, H, num_layers=num_layers, bias=bias, batch_first=batch_first, dropout=0.3,
                bidirectional=bidirectional, **opts).to(dtype).eval()
    shape = (T, X) if kind == "unbatched" else ((B, T, X) if batch_first else (T, B, X))
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    lengths = torch.randint(1, T + 1, (B,)) if kind in ("lengths", "packed") else None
    if kind == "packed":
        x = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
        lengths = None
    hx = None
    if with_hx:
        L = layer.num_directions * num_layers
        hshape = (L, H) if kind == "unbatched" else (L, B, H)
        parts = tuple(torch.randn(hshape, dtype=dtype, requires_grad=True) for _ in cls.cell_class.STATE)
        hx = parts if len(parts) == 2 else parts[0]
    ref = _outputs_and_grads(layer, "reference", x, hx, lengths)
    got = _outputs_and_grads(layer, "torch", x, hx, lengths)
    tol = TOL[dtype]
    for a, b in zip([*ref[0], *ref[1]], [*got[0], *got[1]]):
        torch.testing.assert_close(b, a, atol=tol, rtol=tol)


def test_torch_engine_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match=r"engine: 'torch' cannot compute GRU reset='before'"):
        rnnlab.GRU(2, 3, engine="torch")(torch.randn(4, 1, 2))
    with pytest.raises(ValueError, match=r"engine: 'torch' cannot compute return_gates=True"):
        rnnlab.LSTM(2, 3, engine="torch")(torch.randn(4, 1, 2), return_gates=True)


def test_auto_picks_an_exact_engine(monkeypatch):
    x = torch.randn(5, 64, 8)
    lstm, gru_before = rnnlab.LSTM(8, 64), rnnlab.GRU(8, 64)
    assert choose(gru_before, x, False).name == "native"  # no torch kernel for the seed's GRU
    assert choose(lstm, x, True).name == "native"  # traces
    old = torch.get_num_threads()
    try:  # measured (BENCHMARKS.md): the native loops win float32 LSTM inference at every size, W_hh in L2 or not
        torch.set_num_threads(2)
        big = torch.randn(5, 256, 8)
        H = next(h for h in (256, 512, 1024, 2048) if 4 * h * h * 4 // 2 >= torch.ops.rnnlab.l2_bytes())
        wide_h = rnnlab.LSTM(8, H)
        with torch.no_grad():
            assert choose(lstm, x, False).name == "native"  # B·H = 64·64 = 4096: the split native loop
            assert choose(lstm, big, False).name == "native"  # B·H = 16384, W_hh 64 KB
            assert choose(wide_h, x[:, :8], False).name == "native"  # W_hh 4H·H·4 bytes, half of it >= the L2
            assert get_engine("auto", wide_h, x[:, :8]).path(wide_h, x[:, :8]) == "native-cpp"
            assert choose(wide_h, x[:, :4], False).name == "native"  # B = 4: the split native loop
            assert choose(wide_h, x[:, :8].double(), False).name == "native"  # oneDNN's RNNs are float32
            wide_bi = rnnlab.LSTM(8, H, bidirectional=True)  # a direction per core: each reads all of its W_hh
            assert choose(wide_bi, x[:, :8], False).name == "torch"
            assert choose(wide_bi, x[:, :2], False).name == "torch"
            assert choose(wide_bi, x[:, :1], False).name == "native"  # batch 1: level
            assert choose(wide_bi, torch.randn(5, 128, 8), False).name == "native"  # from 128 rows: native
            assert choose(rnnlab.LSTM(8, 64, bidirectional=True), x[:, :8], False).name == "native"  # W_hh in L2
            assert choose(lstm, x[:, :8], False).name == "native"  # B·H = 512
        assert choose(lstm, x, False).name == "native"  # training: the native loops at every size (split by row)
        assert choose(lstm, big, False).name == "native"
        assert choose(rnnlab.LSTM(8, 64, num_layers=2), x, False).name == "native"
        assert choose(rnnlab.LSTM(8, 64, bidirectional=True), x, False).name == "native"
        wide = torch.randn(5, 128, 8)
        assert choose(lstm, wide, False).name == "native"  # training at B·H = 8192: the parameters need gradients
        with torch.autocast("cpu", dtype=torch.bfloat16):
            # bf16 training: the native loops at every size (their per-step products on packed W_hh)
            assert choose(lstm, wide, False).name == "native"
            assert choose(rnnlab.LSTM(8, 64, bidirectional=True), x, False).name == "native"
            monkeypatch.setenv("RNNLAB_ROWS", "0")
            assert choose(lstm, wide, False).name == "native"
            with torch.no_grad():  # bf16 inference: oneDNN's kernel from B·H = 4096, unless the level splits by row
                assert choose(lstm, wide, False).name == "torch"
                assert choose(lstm, x, False).name == "torch"
                assert choose(rnnlab.LSTM(8, 64, bidirectional=True), x, False).name == "torch"
                assert choose(lstm, x[:, :8], False).name == "native"  # B·H = 512
            monkeypatch.delenv("RNNLAB_ROWS")
            with torch.no_grad():
                assert choose(lstm, wide, False).name == "native"  # split by row (W_hh here is 64 KB)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # B·H >= 4096, W_hh past half the L2: no split by row
            wide_h.requires_grad_(False)
            assert choose(wide_h, x[:, :8], False).name == "torch"  # no gradient asked for: inference
            assert choose(wide_h, x[:, :8].clone().requires_grad_(), False).name == "native"
            wide_h.requires_grad_(True)
            assert choose(wide_h, x[:, :8], False).name == "native"  # training
        torch.set_num_threads(1)
        with torch.no_grad():
            assert choose(lstm, x, False).name == "native"
    finally:
        torch.set_num_threads(old)
    # whatever auto picks, it computes the reference's function
    for layer in (lstm, gru_before, rnnlab.GRU(8, 64, reset="after"), rnnlab.RNN(8, 64)):
        outs = {}
        for engine in ("auto", "reference"):
            layer.engine = engine
            outs[engine] = layer(x[:, :4])[0]
        torch.testing.assert_close(outs["auto"], outs["reference"], atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cell", sorted(TORCH_CELLS) + ["gru-before"])
def test_cuda_auto_equals_reference(cell):
    cls, opts = TORCH_CELLS.get(cell, (rnnlab.GRU, dict(reset="before")))
    layer = cls(5, 7, num_layers=2, bidirectional=True, **opts).double().cuda()
    x = torch.randn(6, 3, 5, dtype=torch.float64, device="cuda", requires_grad=True)
    lengths = torch.tensor([6, 2, 4])
    expected = "torch-cudnn" if cell != "gru-before" else "reference"
    assert get_engine("auto", layer, x).path(layer, x) == expected
    grads = {}
    for engine in ("auto", "reference"):
        layer.engine = engine
        out, h = layer(x, lengths=lengths)
        loss = (out**2).sum() + sum((s**3).sum() for s in _states(h))
        grads[engine] = [out, *torch.autograd.grad(loss, [x, *layer.parameters()])]
    for a, b in zip(grads["auto"], grads["reference"]):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("make", [lambda: rnnlab.LSTM(5, 6, num_layers=2, bidirectional=True),
                                  lambda: rnnlab.GRU(5, 6, reset="after"), lambda: rnnlab.RNN(5, 6)])
def test_torch_engine_reuses_its_conversion_only_while_the_parameters_are_unchanged(make):
    """Under no_grad the torch engine converts the weights to torch's layout once and reuses them; every change to a
    parameter (in place, through .data, an optimiser step, load_state_dict, a replaced parameter) is seen."""
    torch.manual_seed(0)
    layer = make()
    layer.engine = "torch"
    x = torch.randn(4, 3, 5)

    def both():  # (the no_grad call, which may reuse the conversion; the autograd call, which never does)
        with torch.no_grad():
            cached = layer(x)[0]
        return cached, layer(x)[0].detach()

    def check():
        cached, fresh = both()
        assert torch.equal(cached, fresh)
        return cached

    from rnnlab.engine.torch_kernel import _CONVERTED

    first = check()
    kept = _CONVERTED[layer][1]
    assert torch.equal(check(), first) and _CONVERTED[layer][1] is kept  # the conversion reused, not made again
    with torch.no_grad():
        layer.weight_hh_l0.mul_(0.5)
    second = check()
    assert not torch.equal(second, first) and _CONVERTED[layer][1] is not kept
    layer.weight_ih_l0.data = layer.weight_ih_l0.data * 2
    third = check()
    assert not torch.equal(third, second)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(x)[0].square().sum().backward()
    opt.step()
    fourth = check()
    assert not torch.equal(fourth, third)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    with torch.no_grad():
        for p in layer.parameters():
            p.zero_()
    check()
    layer.load_state_dict(state)
    assert torch.equal(check(), fourth)
    layer.weight_hh_l0 = torch.nn.Parameter(torch.zeros_like(layer.weight_hh_l0))
    assert not torch.equal(check(), fourth)
    with torch.inference_mode():  # made under inference_mode, then used under no_grad and by autograd
        inf = layer(x)[0]
    assert torch.equal(inf, check())


def test_torch_engine_converts_a_parametrized_layer_on_every_call():
    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.k = 1.0

        def forward(self, w):
            return w * self.k

    torch.manual_seed(0)
    layer = rnnlab.LSTM(5, 6, engine="torch")
    scale = Scale()
    torch.nn.utils.parametrize.register_parametrization(layer, "weight_hh_l0", scale)
    x = torch.randn(4, 3, 5)
    with torch.no_grad():
        first = layer(x)[0]
        scale.k = 0.5  # changes the weight without touching any parameter
        second = layer(x)[0]
        layer.engine = "reference"
        torch.testing.assert_close(second, layer(x)[0], atol=1e-5, rtol=1e-5)
    assert not torch.equal(first, second)


def test_every_engine_takes_path_x_then_layer():
    """``path(x, layer)`` on every engine (the auto engine also keeps its ``path(layer, x)``); a call without an
    input tensor is refused by name."""
    layer, x = rnnlab.LSTM(5, 7), torch.randn(4, 2, 5)
    for name in ("auto", "native", "torch", "reference"):
        engine = get_engine(name, layer, x)
        assert engine.path(x, layer) in ("native-cpp", "torch-onednn", "reference")
    auto = get_engine("auto", layer, x)
    assert auto.path(x, layer) == auto.path(layer, x)
    with pytest.raises(TypeError, match="path: expected a layer and an input tensor x"):
        auto.path(layer)
