"""engine/latency.py: eager inference calls of plain one-direction layers taken before the layer's own argument
handling, as one call of the library's lean_forward. Their results must be the general path's (RNNLAB_LEAN=0) bit
for bit, in every form of the call (unbatched, batch_first, given or learned state, float64, stacks, projection);
every other call must not take it; and bad arguments must get the general path's errors."""

import pytest
import torch

import rnnlab
from rnnlab.engine import latency, ops

pytestmark = pytest.mark.skipif(not ops.direct_available(), reason="the latency path calls the compiled library")

LAYERS = {
    "rnn": lambda: rnnlab.RNN(5, 7),
    "rnn-relu-2": lambda: rnnlab.RNN(5, 7, nonlinearity="relu", num_layers=2),
    "lstm": lambda: rnnlab.LSTM(5, 7),
    "lstm-3": lambda: rnnlab.LSTM(5, 7, num_layers=3),
    "lstm-proj": lambda: rnnlab.LSTM(5, 7, proj_size=3, num_layers=2),
    "lstm-learned": lambda: rnnlab.LSTM(5, 7, num_layers=2, learn_initial_state=True),
    "gru-before": lambda: rnnlab.GRU(5, 7, bias=False),
    "gru-after-bf": lambda: rnnlab.GRU(5, 7, reset="after", num_layers=2, batch_first=True),
    "gru-eval-variants": lambda: rnnlab.GRU(5, 7, zoneout=0.2, recurrent_dropout=0.3).eval(),
}


@pytest.fixture
def calls(monkeypatch):
    """The number of calls the latency path ran so far (a list of one count)."""
    count = [0]
    real = latency.run_lean

    def counted(*args):
        count[0] += 1
        return real(*args)

    monkeypatch.setattr(latency, "run_lean", counted)
    return count


def _flat(res):
    out, h = res
    return [out, *(h if isinstance(h, tuple) else (h,))]


def _state(layer, B, unbatched, dtype):
    L, H = layer.num_layers, layer.hidden_size
    shape = (lambda w: (L, w)) if unbatched else (lambda w: (L, B, w))
    h = torch.randn(shape(getattr(layer, "proj_size", 0) or H), dtype=dtype)
    return (h, torch.randn(shape(H), dtype=dtype)) if isinstance(layer, rnnlab.LSTM) else h


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("form", ["batched", "unbatched", "given-state", "float64", "batch-1"])
def test_latency_path_equals_the_general_path(name, form, calls, monkeypatch):
    torch.manual_seed(0)
    layer = LAYERS[name]()
    dtype = torch.float64 if form == "float64" else torch.float32
    layer.to(dtype)
    B = 1 if form == "batch-1" else 3
    unbatched = form == "unbatched"
    x = torch.randn(6, 5, dtype=dtype) if unbatched else torch.randn(B, 6, 5, dtype=dtype) if layer.batch_first \
        else torch.randn(6, B, 5, dtype=dtype)
    hx = _state(layer, B, unbatched, dtype) if form in ("given-state", "unbatched") else None
    results = []
    for lean in ("1", "0"):
        monkeypatch.setenv("RNNLAB_LEAN", lean)
        before = calls[0]
        with torch.inference_mode():
            results.append(_flat(layer(x, hx)))
        assert calls[0] - before == (1 if lean == "1" else 0)  # the latency path ran, and only it
    for a, b in zip(*results):
        assert a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    # an independent reference: the reference engine in float64
    layer.double().engine = "reference"
    with torch.no_grad():
        ref = _flat(layer(x.double(), None if hx is None else tuple(t.double() for t in hx) if isinstance(hx, tuple)
                          else hx.double()))
    for a, b in zip(results[0], ref):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6)


def test_calls_that_do_not_take_it(calls):
    """Autograd on, traces, lengths, autocast, variants in force, two directions, another engine, "auto" choosing
    torch's oneDNN LSTM, and input the general path must check or convert: all go the general way."""
    x = torch.randn(4, 2, 3)
    lstm = rnnlab.LSTM(3, 4)
    lstm(x)  # autograd on
    with torch.no_grad():
        lstm(x, return_gates=True)
        lstm(x, lengths=torch.tensor([4, 2]))
        lstm(torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor([4, 2])))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(x)
        rnnlab.LSTM(3, 4, layer_norm=True)(x)
        rnnlab.GRU(3, 4, zoneout=0.1)(x)  # training mode: zoneout in force
        rnnlab.LSTM(3, 4, bidirectional=True)(x)
        rnnlab.LSTM(3, 4, engine="reference")(x)
        rnnlab.LSTM(3, 4, engine="torch")(x)
        rnnlab.MinGRU(3, 4)(x)
        lstm(x.double().float().requires_grad_())  # (a leaf that needs a gradient, autograd off: still lean)
    assert calls[0] == 1
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        from rnnlab.engine import TORCH_LSTM_BF16_MIN_BH
        H = next(h for h in (256, 512, 1024, 2048) if 4 * h * h * 4 // 2 >= torch.ops.rnnlab.l2_bytes())
        big = rnnlab.LSTM(3, H)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            big(torch.randn(2, -(-TORCH_LSTM_BF16_MIN_BH // H), 3))  # "auto" runs torch's oneDNN kernel here
    finally:
        torch.set_num_threads(old)
    assert calls[0] == 1


def test_bad_arguments_get_the_general_paths_errors():
    layer = rnnlab.LSTM(3, 4)
    with torch.no_grad():
        with pytest.raises(ValueError, match="x: expected last dimension input_size = 3"):
            layer(torch.randn(5, 2, 7))
        with pytest.raises(ValueError, match="x: expected at least one time step"):
            layer(torch.randn(0, 2, 3))
        with pytest.raises(ValueError, match=r"hx\[0\] \(h_0\): expected shape \(1, 2, 4\)"):
            layer(torch.randn(5, 2, 3), (torch.zeros(1, 3, 4), torch.zeros(1, 2, 4)))
        with pytest.raises(TypeError, match="hx: expected a tuple"):
            layer(torch.randn(5, 2, 3), torch.zeros(1, 2, 4))
        with pytest.raises(TypeError):
            layer(torch.randn(5, 2, 3).double())  # the dtype differs from the parameters'
        with pytest.raises((TypeError, ValueError)):
            layer([[1.0, 2.0, 3.0]])  # not a tensor


def test_applies_reads_the_switch(monkeypatch):
    layer = rnnlab.GRU(3, 4)
    x = torch.randn(2, 1, 3)
    with torch.no_grad():
        assert latency.applies(layer, x)
        monkeypatch.setenv("RNNLAB_LEAN", "0")
        assert not latency.applies(layer, x)


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_the_drop_in_modules_inference_takes_the_lean_path_too(name, monkeypatch):
    """rnnlab.nn's modules (weights converted per call, no module of rnnlab's underneath) run fused.run_lean for
    their inference calls: the general path's results bit for bit, and torch.nn's within float32 rounding."""
    import rnnlab.nn

    torch.manual_seed(0)
    ours = getattr(rnnlab.nn, name)(5, 7, num_layers=2)
    ours.engine = "native"
    peer = getattr(torch.nn, name)(5, 7, num_layers=2)
    peer.load_state_dict(ours.state_dict())
    x = torch.randn(6, 1, 5)
    got = []
    for lean in ("1", "0"):
        monkeypatch.setenv("RNNLAB_LEAN", lean)
        with torch.inference_mode():
            got.append(_flat(ours(x)))
    with torch.inference_mode():
        want = _flat(peer(x))
    for a, b, c in zip(*got, want):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)
