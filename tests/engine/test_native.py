"""The native engine against the reference engine: outputs and gradients, every layer option;
and its fallback to the reference engine where the compiled operators are missing."""

import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence

import rnnlab
from rnnlab.engine import fused, ops

CELLS = {
    "rnn-tanh": (rnnlab.RNN, dict(nonlinearity="tanh")),
    "rnn-relu": (rnnlab.RNN, dict(nonlinearity="relu")),
    "lstm": (rnnlab.LSTM, {}),
    "gru-before": (rnnlab.GRU, dict(reset="before")),
    "gru-after": (rnnlab.GRU, dict(reset="after")),
}
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


@pytest.fixture
def loops():
    """The compiled operators (the test skips where the package was installed without them)."""
    if not ops.available():
        pytest.skip(f"the native operators are not built: {ops._LIBRARY['error']}")
    return "cpp"


def _states(h):
    return h if isinstance(h, tuple) else (h,)


def _run(layer, engine, x, hx, lengths, trace, seed):
    """Output tensors and gradients of a loss touching every output, state and trace."""
    layer.engine = engine
    torch.manual_seed(seed)  # the same dropout masks for both engines
    res = layer(x, hx, lengths=lengths, return_gates=trace)
    out, h = res[0], res[1]
    if isinstance(out, torch.nn.utils.rnn.PackedSequence):
        out = out.data
    tensors = [out, *_states(h)]
    if trace:
        tensors += [v for tr in res[2].values() for v in tr.values()]
    gen = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in tensors)
    leaves = [p for p in layer.parameters()] + [x.data if isinstance(x, torch.nn.utils.rnn.PackedSequence) else x]
    if hx is not None:
        leaves += list(_states(hx))
    leaves = [t for t in leaves if t.requires_grad]
    grads = torch.autograd.grad(loss, leaves)
    return tensors, grads


def _assert_same(a, b, tol):
    assert len(a) == len(b)
    for p, q in zip(a, b):
        assert p.shape == q.shape
        torch.testing.assert_close(p, q, atol=tol, rtol=tol)


@st.composite
def configs(draw, layers=None):
    """A random layer call: ``layer`` drawn from ``layers`` ((class, options) pairs; default the plain CELLS)."""
    return dict(
        layer=draw(st.sampled_from(layers if layers is not None else [CELLS[k] for k in sorted(CELLS)])),
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
    cls, opts = cfg["layer"]
    torch.manual_seed(cfg["seed"])
    layer = cls(cfg["X"], cfg["H"], num_layers=cfg["num_layers"], bias=cfg["bias"], batch_first=cfg["batch_first"],
                dropout=cfg["dropout"], bidirectional=cfg["bidirectional"], **opts).to(cfg["dtype"])
    return (layer, *_inputs(layer, cfg))


def _inputs(layer, cfg):
    """x (padded, packed or unbatched, as cfg["input_kind"] says), hx or None, lengths or None."""
    T, B, X, H, dt = cfg["T"], cfg["B"], cfg["X"], cfg["H"], cfg["dtype"]
    kind = cfg["input_kind"]
    shape = (T, X) if kind == "unbatched" else ((B, T, X) if cfg["batch_first"] else (T, B, X))
    x = torch.randn(shape, dtype=dt, requires_grad=True)
    lengths = None
    if kind in ("lengths", "packed"):
        lengths = torch.randint(1, T + 1, (B,))
    if kind == "packed":
        x = pack_padded_sequence(x, lengths, batch_first=cfg["batch_first"], enforce_sorted=False)
        lengths = None
    hx = None
    if cfg["with_hx"]:
        L = layer.num_directions * cfg["num_layers"]
        hshape = (L, H) if kind == "unbatched" else (L, B, H)
        hx = tuple(torch.randn(hshape, dtype=dt, requires_grad=True) for _ in layer.cell_class.STATE)
        hx = hx if len(hx) == 2 else hx[0]
    return x, hx, lengths


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=configs())
def test_native_equals_reference(loops, cfg):
    layer, x, hx, lengths = _build(cfg)
    ref = _run(layer, "reference", x, hx, lengths, cfg["trace"], cfg["seed"])
    got = _run(layer, "native", x, hx, lengths, cfg["trace"], cfg["seed"])
    tol = TOL[cfg["dtype"]]
    _assert_same(ref[0], got[0], tol)
    _assert_same(ref[1], got[1], tol)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_gradcheck_lengths_bidirectional(loops, name):
    cls, opts = CELLS[name]
    layer = cls(2, 3, num_layers=2, bidirectional=True, engine="native", **opts).double()
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2, 1])

    def f(x, *params):
        out, h_n, tr = layer(x, lengths=lengths, return_gates=True)
        return (out, *_states(h_n), *tr["l1_reverse"].values())

    assert torch.autograd.gradcheck(f, (x, *layer.parameters()))


@pytest.mark.parametrize("name", sorted(CELLS))
def test_double_backward_falls_back_to_reference(name):
    cls, opts = CELLS[name]
    layer = cls(2, 3, bidirectional=True, **opts).double()
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 2])

    def grad_norm(engine):
        layer.engine = engine
        out, _ = layer(x, lengths=lengths)
        (g,) = torch.autograd.grad((out**2).sum(), x, create_graph=True)
        return torch.autograd.grad((g**2).sum(), [x, *layer.parameters()])

    for a, b in zip(grad_norm("reference"), grad_norm("native")):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_truncated_bptt_memory_stays_flat(loops):
    """T = 100 000 in chunks: the final state feeds the next chunk (detached), saved memory per chunk is flat."""
    layer = rnnlab.LSTM(3, 8, engine="native")
    opt = torch.optim.SGD(layer.parameters(), lr=1e-3)
    T, chunk = 100_000, 2_000 if loops == "cpp" else 20_000
    if loops == "python":  # the Python loop is slow: a shorter run proves the same point
        T = 60_000
    x = torch.randn(T, 2, 3)
    hx = None
    saved_per_chunk = []
    for start in range(0, T, chunk):
        saved = [0]

        def pack(t):
            saved[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out, (h, c) = layer(x[start : start + chunk], hx)
        loss = out.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        hx = (h.detach(), c.detach())
        saved_per_chunk.append(saved[0])
    assert len(saved_per_chunk) >= 3
    assert saved_per_chunk[0] > 0
    assert max(saved_per_chunk) == min(saved_per_chunk)  # no growth with the number of chunks
    assert torch.isfinite(hx[0]).all()


def test_chunked_run_equals_one_run(loops):
    """Truncated BPTT's forward: chunks chained through hx give exactly the one-call outputs."""
    layer = rnnlab.GRU(3, 5, num_layers=2, engine="native").double()
    x = torch.randn(40, 2, 3, dtype=torch.float64)
    out, h = layer(x)
    outs, hx = [], None
    for k in range(0, 40, 7):
        o, hx = layer(x[k : k + 7], hx)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs), out, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(hx, h, atol=1e-12, rtol=1e-12)


def test_operators_are_built_into_the_package_and_keep_denormals():
    """The operators load from the installed package itself (nothing is built or cached at run time)."""
    assert ops.available(), ops._LIBRARY["error"]
    assert Path(ops.library_path()).parent == Path(rnnlab.__file__).parent / "engine"
    # -ffast-math is a compile flag only: loading the library must not switch on flush-to-zero
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    assert (tiny * 1.0).item() != 0.0
    assert fused.NativeEngine().path(torch.zeros(1)) == "native-cpp"


def test_missing_operators_fall_back_to_the_reference_with_one_warning(monkeypatch):
    monkeypatch.setattr(ops, "_LIBRARY", {"path": None, "error": "no compiler here", "warned": False})
    layer = rnnlab.GRU(2, 3, engine="native").double()
    x = torch.randn(4, 1, 2, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, _ = layer(x)
        layer(x)
    msgs = [w for w in caught if "native engine" in str(w.message)]
    assert len(msgs) == 1 and "no compiler here" in str(msgs[0].message)
    assert fused.NativeEngine().path(x) == "reference"
    layer.engine = "reference"
    torch.testing.assert_close(out, layer(x)[0], atol=0, rtol=0)


def test_env_var_forces_the_reference(monkeypatch):
    monkeypatch.setenv("RNNLAB_NATIVE", "0")
    assert not ops.available()
    assert fused.NativeEngine().path(torch.zeros(1)) == "reference"


@pytest.mark.parametrize("name", sorted(CELLS))
def test_gradient_of_output_alone(loops, name):
    """Unused outputs (c_n, the gates without traces) reach backward as None: read as zero."""
    cls, opts = CELLS[name]
    layer = cls(3, 5, num_layers=2, bidirectional=True, **opts).double()
    x = torch.randn(7, 4, 3, dtype=torch.float64)
    lengths = torch.tensor([7, 3, 5, 1])
    grads = {}
    for engine in ("reference", "native"):
        layer.engine = engine
        out, _ = layer(x, lengths=lengths)
        grads[engine] = torch.autograd.grad((out**2).sum(), list(layer.parameters()))
    for a, b in zip(grads["reference"], grads["native"]):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", ["lstm", "gru-before", "gru-after"])
def test_directions_in_parallel_equal_one_after_the_other(name):
    """On two threads the directions of a bidirectional level run at once; the results do not change."""
    if not ops.available():
        pytest.skip("the directions run in parallel only in the compiled operators")
    cls, opts = CELLS[name]
    layer = cls(3, 6, num_layers=2, bidirectional=True, engine="native", **opts).double()
    x = torch.randn(9, 4, 3, dtype=torch.float64)
    lengths = torch.tensor([9, 4, 6, 2])
    old = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out, _ = layer(x, lengths=lengths)
            results.append([out, *torch.autograd.grad((out**2).sum(), list(layer.parameters()))])
    finally:
        torch.set_num_threads(old)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("opts", [{}, dict(peepholes=True, coupled=True), dict(layer_norm=True)], ids=str)
def test_lstm_rows_split_across_threads_equal_one_thread(opts):
    """On two threads a one-direction LSTM with B·H >= 1024 splits each step's pointwise passes by rows (ops.cpp's
    pointwise_threads); outputs and gradients match one thread and the float64 reference, lengths included (rows
    past their end sit in both halves)."""
    if not ops.available():
        pytest.skip("the pointwise passes split only in the compiled operators")
    torch.manual_seed(0)
    layer = rnnlab.LSTM(5, 64, engine="native", **opts).double()
    x = torch.randn(7, 17, 5, dtype=torch.float64)
    lengths = torch.tensor([7, 3, 5, 1, 7, 2, 6, 4, 7, 7, 1, 2, 3, 4, 5, 6, 7])
    old = torch.get_num_threads()
    results = []
    try:
        for threads, engine in ((1, "native"), (2, "native"), (2, "reference")):
            torch.set_num_threads(threads)
            layer.engine = engine
            out, _ = layer(x, lengths=lengths)
            results.append([out, *torch.autograd.grad((out**2).sum(), list(layer.parameters()))])
    finally:
        torch.set_num_threads(old)
    for one, two, ref in zip(*results):
        torch.testing.assert_close(two, one, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(two, ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("cls,opts", [(rnnlab.LSTM, {}), (rnnlab.GRU, {}), (rnnlab.GRU, dict(reset="after")),
                                      (rnnlab.RNN, {})], ids=str)
@pytest.mark.parametrize("pack,dtype", [("0", torch.float64), ("1", torch.float64), ("0", torch.float32)])
def test_one_row_against_a_large_w_hh_reads_it_row_by_row(cls, opts, pack, dtype, monkeypatch):
    """B = 1 with W_hh of 2^18 numbers or more (ops.cpp's dot_rows): the forward reads W_hh row by row and makes no
    W_hhᵀ copy (packing, when asked, is skipped there; float32 runs small_gemm.h's small_gemv); training and inference
    match the float64 reference. (test_split.py holds the split route's parts, which read their rows in place.)"""
    if not ops.available():
        pytest.skip("the row-by-row product is the compiled operators'")
    monkeypatch.setenv("RNNLAB_PACK", pack)
    monkeypatch.setenv("RNNLAB_SPLIT", "0")
    torch.manual_seed(0)
    H = 512 if cls is rnnlab.RNN else 256  # W_hh: 512·512, 768·256 or 1024·256 numbers
    layer = cls(3, H, engine="native", **opts).to(dtype)
    x = torch.randn(4, 1, 3, dtype=dtype, requires_grad=True)
    results = []
    for engine in ("native", "reference"):
        layer.engine = engine
        if engine == "reference":
            layer.double()
            x = x.detach().double().requires_grad_()
        with torch.no_grad():
            inference = layer(x)[0]
        out, _ = layer(x)
        results.append([inference, out, *torch.autograd.grad((out**2).sum(), [x, *layer.parameters()])])
    tol = dict(atol=1e-10, rtol=1e-10) if dtype == torch.float64 else dict(atol=2e-6, rtol=2e-5)
    for got, ref in zip(*results):
        torch.testing.assert_close(got.double(), ref, **tol)


@pytest.mark.parametrize("cls,opts,H", [(rnnlab.GRU, {}, 301), (rnnlab.LSTM, dict(peepholes=True), 256),
                                        (rnnlab.GRU, dict(reset="after", layer_norm=True), 301)], ids=str)
@pytest.mark.parametrize("threads", [1, 2])
def test_row_by_row_product_on_the_team_matches_the_reference(cls, opts, H, threads, monkeypatch):
    """A whole loop's float32 row-by-row product at batch 1 (Loop::dot_threads: its rows halved between OpenMP's
    threads, in groups of four; an odd row count leaves an uneven last share), in layers that do not split (variants,
    or RNNLAB_SPLIT=0), against the float64 reference."""
    if not ops.available():
        pytest.skip("the row-by-row product is the compiled operators'")
    monkeypatch.setenv("RNNLAB_SPLIT", "0")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(3)
        layer = cls(5, H, engine="native", **opts)
        ref = cls(5, H, engine="reference", **opts).double()
        ref.load_state_dict(layer.state_dict())
        x = torch.randn(7, 1, 5)
        with torch.inference_mode():
            got = layer(x)[0]
        with torch.no_grad():
            want = ref(x.double())[0]
        torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=2e-6)
    finally:
        torch.set_num_threads(old)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", sorted(CELLS))
def test_native_on_cuda_runs_cudnn_or_the_reference(name):
    """On CUDA tensors the native engine runs cuDNN where the maths is the same, else the reference engine."""
    cls, opts = CELLS[name]
    layer = cls(3, 5, num_layers=2, bidirectional=True, engine="native", **opts).double().cuda()
    x = torch.randn(6, 3, 3, dtype=torch.float64, device="cuda")
    expected = "reference" if name == "gru-before" else "torch-cudnn"
    assert fused.NativeEngine().path(x, layer) == expected
    out, _ = layer(x)
    layer.engine = "reference"
    torch.testing.assert_close(out, layer(x)[0], atol=1e-10, rtol=1e-10)
