"""The wavefront (``rnnlab::recurrent_stack``, engine/wavefront.py) against the per-level operator: outputs, final
states, traces and every gradient of 2- and 3-level stacks, every cell, both dtypes, with lengths (packed) and
inter-layer dropout (the same masks), chunks of 1 step up to the whole sequence; its opcheck; its rule."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnlab
from rnnlab.engine import ops, wavefront

pytestmark = pytest.mark.skipif(not ops.available(), reason="the native operators are not built")

CELLS = {
    "rnn_tanh": (rnnlab.RNN, dict(nonlinearity="tanh")),
    "rnn_relu": (rnnlab.RNN, dict(nonlinearity="relu")),
    "lstm": (rnnlab.LSTM, {}),
    "gru_before": (rnnlab.GRU, dict(reset="before")),
    "gru_after": (rnnlab.GRU, dict(reset="after")),
}
G = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru_before": 3, "gru_after": 3}
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-5)}


@pytest.fixture
def path(monkeypatch):
    """``path(wave, chunk)``: route the next calls through the wavefront (True) or the per-level operator."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # the rule's thread count, whatever the machine's

    def choose(wave: bool, chunk: int = 0):
        monkeypatch.setenv("RNNLAB_WAVEFRONT", "1")  # training calls too
        monkeypatch.setattr(wavefront, "MIN_STEPS", 1 if wave else 10**9)
        monkeypatch.setattr(wavefront, "CHUNK", chunk)

    return choose


def _run(layer, x, hx, lengths, trace, packed):
    """Every output (out, final states, traces) and the gradients of a loss touching them all."""
    torch.manual_seed(7)  # the same inter-layer dropout masks on both paths
    inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if packed else x
    res = layer(inp, hx, lengths=None if packed or lengths is None else lengths, return_gates=trace)
    out, h = res[0], res[1]
    if isinstance(out, torch.nn.utils.rnn.PackedSequence):
        out = out.data
    tensors = [out, *(h if isinstance(h, tuple) else (h,))]
    if trace:
        tensors += [v for tr in res[2].values() for v in tr.values()]
    gen = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in tensors)
    leaves = [*layer.parameters(), x, *(hx if isinstance(hx, tuple) else (hx,) if hx is not None else ())]
    return tensors, torch.autograd.grad(loss, [t for t in leaves if t.requires_grad])


def _compare(layer, x, hx, lengths, trace, packed, path, chunk):
    path(True, chunk)
    before = wavefront.CALLS["stack"]
    wave = _run(layer, x, hx, lengths, trace, packed)
    assert wavefront.CALLS["stack"] == before + 1  # the wavefront ran
    path(False)
    level = _run(layer, x, hx, lengths, trace, packed)
    assert wavefront.CALLS["stack"] == before + 1  # and then the per-level path
    tol = TOL[x.dtype]
    for a, b in zip(wave[0] + list(wave[1]), level[0] + list(level[1])):
        torch.testing.assert_close(a, b, **tol)
    assert len(wave[1]) == len(level[1])


def _layer(cell, dtype, L, dropout=0.0, X=5, H=6):
    cls, options = CELLS[cell]
    torch.manual_seed(0)
    return cls(X, H, num_layers=L, dropout=dropout, **options).to(dtype)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("L", [2, 3])
@pytest.mark.parametrize("chunk", [1, 3, 0])
def test_same_as_per_level(cell, dtype, L, chunk, path):
    layer = _layer(cell, dtype, L)
    x = torch.randn(11, 4, 5, dtype=dtype, requires_grad=True)
    _compare(layer, x, None, None, False, False, path, chunk)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("packed", [False, True])
def test_same_with_lengths_dropout_states_and_traces(cell, dtype, packed, path):
    """Variable lengths (given, or packed), inter-layer dropout in training, given initial states, traces."""
    layer = _layer(cell, dtype, 3, dropout=0.4).train()
    T, B, H = 10, 5, 6
    x = torch.randn(T, B, 5, dtype=dtype, requires_grad=True)
    lengths = torch.tensor([10, 3, 7, 1, 9])
    h0 = (torch.randn(3, B, H, dtype=dtype) * 0.5).requires_grad_()
    hx = (h0, (torch.randn(3, B, H, dtype=dtype) * 0.5).requires_grad_()) if cell == "lstm" else h0
    for chunk in (1, 4):
        _compare(layer, x, hx, lengths, True, packed, path, chunk)


@pytest.mark.parametrize("cell", ["lstm", "gru_after"])
def test_same_without_bias_in_eval(cell, path):
    cls, options = CELLS[cell]
    torch.manual_seed(0)
    layer = cls(3, 4, num_layers=2, bias=False, dropout=0.5, **options).double().eval()  # eval: no dropout
    x = torch.randn(9, 2, 3, dtype=torch.float64, requires_grad=True)
    _compare(layer, x, None, torch.tensor([9, 4]), False, False, path, 2)


def test_dropout_masks_are_f_dropouts():
    """The masks drawn up front are F.dropout's, level by level, from the same generator state."""
    layer = _layer("lstm", torch.float32, 3, dropout=0.3).train()
    like = torch.zeros(6, 2, 5)
    torch.manual_seed(3)
    masks = wavefront.dropout_masks(layer, 6, like)
    torch.manual_seed(3)
    ones = torch.ones(6, 2, layer.hidden_size)
    expected = [torch.nn.functional.dropout(ones, 0.3, training=True) for _ in range(2)]
    assert torch.equal(masks, torch.stack(expected))
    assert wavefront.dropout_masks(layer.eval(), 6, like) is None


def test_rule(path):
    path(True)
    x = torch.randn(12, 2, 5)
    assert wavefront.applies(_layer("lstm", torch.float32, 2), x, "lstm")
    assert not wavefront.applies(_layer("lstm", torch.float32, 1), x, "lstm")  # one level
    assert not wavefront.applies(rnnlab.LSTM(5, 6, num_layers=2, bidirectional=True), x, "lstm")
    assert not wavefront.applies(rnnlab.LSTM(5, 6, num_layers=2, layer_norm=True), x, "lstm")  # a variant
    assert not wavefront.applies(rnnlab.LSTM(5, 6, num_layers=2, zoneout=0.1).train(), x, "lstm")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not wavefront.applies(_layer("lstm", torch.float32, 2), x, "lstm")
    torch.get_num_threads = lambda: 1  # undone by the fixture's monkeypatch
    assert not wavefront.applies(_layer("lstm", torch.float32, 2), x, "lstm")


def test_default_rule_threads_and_steps(monkeypatch):
    """Unpatched: the wavefront needs two torch threads and MIN_STEPS steps."""
    layer = _layer("gru_before", torch.float32, 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setenv("RNNLAB_WAVEFRONT", "1")
    assert wavefront.applies(layer, torch.randn(wavefront.MIN_STEPS, 2, 5), "gru_before")
    assert not wavefront.applies(layer, torch.randn(wavefront.MIN_STEPS - 1, 2, 5), "gru_before")


def stack_args(cell, dtype, lengths, drop, L=2, T=5, B=3, H=3, X=2, bias=True):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: (torch.rand(*s, dtype=dtype, generator=g) - 0.5).requires_grad_()  # noqa: E731
    GX = G[cell] * H
    mask = (torch.arange(T).unsqueeze(1) < torch.tensor([T, 2, 4][:B]).unsqueeze(0)).to(dtype) if lengths else None
    keep = ((torch.rand(L - 1, T, B, H, generator=g) < 0.7).to(dtype) / 0.7) if drop else None
    args = (torch.rand(T, B, X, dtype=dtype, generator=g).requires_grad_(), [r(GX, X if k == 0 else H) for k in range(L)],
            [r(GX, H) for _ in range(L)], r(L, B, H), r(L, B, H) if cell == "lstm" else None,
            [r(GX) for _ in range(L)] if bias else [], [r(H) for _ in range(L)] if cell == "gru_after" and bias else [],
            mask, keep)
    return args


CASES = [(cell, dtype, lengths, drop) for cell in G for dtype in (torch.float32, torch.float64)
         for lengths in (False, True) for drop in (False, True) if dtype == torch.float64 or not (lengths or drop)]


@pytest.mark.parametrize("cell,dtype,lengths,drop", CASES, ids=str)
def test_opcheck_recurrent_stack(cell, dtype, lengths, drop):
    args = stack_args(cell, dtype, lengths, drop)
    torch.library.opcheck(torch.ops.rnnlab.recurrent_stack.default, args, {"cell": cell, "chunk": 2})


@pytest.mark.parametrize("cell", ["lstm", "gru_after", "rnn_tanh"])
def test_opcheck_three_levels_no_bias(cell):
    args = stack_args(cell, torch.float64, True, True, L=3, bias=False)
    torch.library.opcheck(torch.ops.rnnlab.recurrent_stack.default, args, {"cell": cell, "chunk": 1})


@pytest.mark.parametrize("cell", ["lstm", "gru_before"])
def test_gradcheck_and_double_backward(cell):
    args = stack_args(cell, torch.float64, True, True, T=4, B=2, H=2)

    def f(*flat):
        x, w_ih0, w_ih1, w_hh0, w_hh1, h0, *rest = flat
        c0 = rest.pop(0) if cell == "lstm" else None
        b = rest
        out = torch.ops.rnnlab.recurrent_stack(x, [w_ih0, w_ih1], [w_hh0, w_hh1], h0, c0, b, [], args[7], args[8],
                                               cell=cell, chunk=1)
        return out[0], out[2]

    x, w_ih, w_hh, h0, c0, b = args[0], args[1], args[2], args[3], args[4], args[5]
    flat = (x, *w_ih, *w_hh, h0, *((c0,) if c0 is not None else ()), *b)
    assert torch.autograd.gradcheck(f, flat)
    assert torch.autograd.gradgradcheck(f, flat)


def test_backward_operator_shapes_match_its_fake():
    from torch._subclasses.fake_tensor import FakeTensorMode

    args = tuple([t.detach() for t in a] if isinstance(a, list) else a.detach() if a is not None else None
                 for a in stack_args("lstm", torch.float64, True, True, L=3))
    out = torch.ops.rnnlab.recurrent_stack(*args, cell="lstm", chunk=2)
    grads = (torch.ones_like(out[0]), torch.ones_like(out[1]), None)
    real = torch.ops.rnnlab.recurrent_stack_backward(*args, *out, *grads, cell="lstm", chunk=2)
    with FakeTensorMode() as mode:
        conv = lambda t: [mode.from_tensor(u) for u in t] if isinstance(t, list) else (  # noqa: E731
            mode.from_tensor(t) if isinstance(t, torch.Tensor) else t)
        fake = torch.ops.rnnlab.recurrent_stack_backward(*(conv(a) for a in (*args, *out, *grads)), cell="lstm",
                                                         chunk=2)
    shapes = lambda ts: [[u.shape for u in t] if isinstance(t, (list, tuple)) else t.shape for t in ts]  # noqa: E731
    assert shapes(real) == shapes(fake)


def test_bad_arguments_are_refused():
    args = list(stack_args("lstm", torch.float64, False, True, L=2))
    args[8] = args[8][:, :2]  # drop: wrong T
    with pytest.raises(ValueError, match="drop"):
        torch.ops.rnnlab.recurrent_stack(*args, cell="lstm")
    args = list(stack_args("gru_before", torch.float64, False, False, L=2))
    args[1] = [args[1][0], args[1][0]]  # level 1's W_ih sized for x, not for level 0's output
    with pytest.raises(ValueError, match="w_ih"):
        torch.ops.rnnlab.recurrent_stack(*args, cell="gru_before")


def test_torch_compile_fullgraph_runs_the_stack(path):
    path(True, 2)
    layer = _layer("lstm", torch.float32, 2)
    x = torch.randn(9, 3, 5, requires_grad=True)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        from functorch.compile import make_boxed_func
        from torch._dynamo.backends.common import aot_autograd

        keep = lambda g, _: make_boxed_func(g.forward)  # noqa: E731
        return aot_autograd(fw_compiler=keep, bw_compiler=keep)(gm, example_inputs)

    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, backend=backend)
    out, (h, c) = compiled(x)
    assert any("recurrent_stack" in g for g in graphs)
    grads = torch.autograd.grad((out.sum() + h.sum() + c.sum()), [x, *layer.parameters()])
    path(False)
    ref, (h_ref, c_ref) = layer(x)
    grads_ref = torch.autograd.grad((ref.sum() + h_ref.sum() + c_ref.sum()), [x, *layer.parameters()])
    for a, b in zip((out, h, c, *grads), (ref, h_ref, c_ref, *grads_ref)):
        torch.testing.assert_close(a, b, **TOL[torch.float32])
    torch._dynamo.reset()


def test_torch_export_keeps_one_operator_per_level(path):
    """torch.export traces the per-level operator (the exported program's documented form, read by the ONNX
    translation), wavefront or not."""
    path(True, 3)
    layer = _layer("gru_before", torch.float32, 3).eval()
    x = torch.randn(10, 2, 5)
    graph = str(torch.export.export(layer, (x,)).graph)
    assert "recurrent_stack" not in graph and graph.count("target=torch.ops.rnnlab.recurrent_level.default") == 3


def test_one_thread_runs_the_levels_in_turn():
    """At one torch thread the operator runs its levels one after the other: the same results as on threads."""
    args = stack_args("lstm", torch.float64, True, True, L=3, T=7)
    out = torch.ops.rnnlab.recurrent_stack(*args, cell="lstm", chunk=2)
    grads = torch.autograd.grad(out[0].sum() + out[1].sum(), [args[0], *args[1], *args[2]])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out1 = torch.ops.rnnlab.recurrent_stack(*args, cell="lstm", chunk=2)
        grads1 = torch.autograd.grad(out1[0].sum() + out1[1].sum(), [args[0], *args[1], *args[2]])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip((*out[:3], *grads), (*out1[:3], *grads1)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_default_rule(monkeypatch):
    """Without RNNLAB_WAVEFRONT (and TRAINING off), a call that records a backward runs the wavefront for a small
    stack only (B·H up to TRAINING_MAX_BH: 4096 for the LSTM, 8192 for the others); one without grad runs it."""
    monkeypatch.delenv("RNNLAB_WAVEFRONT", raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(wavefront, "TRAINING", False)
    layer = _layer("lstm", torch.float32, 2)
    H = layer.hidden_size
    x = torch.randn(wavefront.MIN_STEPS, 2, 5)
    assert wavefront.applies(layer, x, "lstm")  # training, B·H small
    big = torch.randn(wavefront.MIN_STEPS, 4096 // H + 1, 5)
    assert not wavefront.applies(layer, big, "lstm")  # training, B·H > 4096
    rnn = _layer("rnn_tanh", torch.float32, 2)
    assert wavefront.applies(rnn, torch.randn(wavefront.MIN_STEPS, 8, 5), "rnn_tanh")
    assert not wavefront.applies(rnn, torch.randn(wavefront.MIN_STEPS, 8192 // H + 1, 5), "rnn_tanh")
    with torch.no_grad():
        assert wavefront.applies(layer, x, "lstm")
    monkeypatch.setattr(wavefront, "TRAINING", True)
    assert wavefront.applies(layer, big, "lstm")


def test_environment_switch(path, monkeypatch):
    path(True)
    monkeypatch.setenv("RNNLAB_WAVEFRONT", "0")
    assert not wavefront.applies(_layer("lstm", torch.float32, 2), torch.randn(12, 2, 5), "lstm")


def test_levels_split_by_row_stay_off_the_wavefront(monkeypatch):
    """A small stack whose levels' loops run split by row (each already on both cores) takes the level path, in
    training too (measured 0.88-0.90x the wavefront's step); with the split by row off it takes the wavefront."""
    monkeypatch.delenv("RNNLAB_WAVEFRONT", raising=False)
    monkeypatch.setattr(wavefront, "TRAINING", False)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        layer = _layer("lstm", torch.float32, 2)
        x = torch.randn(wavefront.MIN_STEPS, 8, 5)
        monkeypatch.setenv("RNNLAB_ROWS", "1")
        assert not wavefront.applies(layer, x, "lstm")
        with torch.no_grad():
            assert not wavefront.applies(layer, x, "lstm")
        monkeypatch.setenv("RNNLAB_ROWS", "0")
        assert wavefront.applies(layer, x, "lstm")
    finally:
        torch.set_num_threads(threads)
