"""fused.run_lean: inference calls of one-direction layers with no variant in force skip the general path's
per-level fields and views (one call of the library's lean_forward); their results must be the general path's
(RNNLAB_LEAN=0) bit for bit. Most such calls arrive through engine/latency.py before the layer's own argument
handling (tests/engine/test_latency.py)."""

import pytest
import torch

import rnnlab
from rnnlab.engine import fused, ops

pytestmark = pytest.mark.skipif(not ops.available(), reason="the lean path calls the compiled operators")

LAYERS = {
    "rnn-relu": lambda: rnnlab.RNN(5, 7, nonlinearity="relu", num_layers=2),
    "lstm": lambda: rnnlab.LSTM(5, 7, num_layers=3),
    "lstm-proj": lambda: rnnlab.LSTM(5, 7, proj_size=3, num_layers=2),
    "gru-before": lambda: rnnlab.GRU(5, 7, bias=False),
    "gru-after": lambda: rnnlab.GRU(5, 7, reset="after", num_layers=2, batch_first=True),
}


def _flat(res):
    out, h = res
    return [out, *(h if isinstance(h, tuple) else (h,))]


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("given_state", [False, True])
def test_lean_equals_the_general_path(name, context, given_state, monkeypatch):
    torch.manual_seed(0)
    layer = LAYERS[name]().eval()
    layer.engine = "native"
    x = torch.randn(3, 6, 5) if layer.batch_first else torch.randn(6, 3, 5)
    hx = None
    if given_state:
        h = torch.randn(layer.num_layers, 3, getattr(layer, "proj_size", 0) or 7)
        hx = (h, torch.randn(layer.num_layers, 3, 7)) if isinstance(layer, rnnlab.LSTM) else h
    results = []
    for lean in ("1", "0"):
        monkeypatch.setenv("RNNLAB_LEAN", lean)
        with getattr(torch, context)():
            results.append(_flat(layer(x, hx)))
    for a, b in zip(*results):
        assert a.shape == b.shape and torch.equal(a, b)
    # and the float64 reference agrees
    layer.double().engine = "reference"
    with torch.no_grad():
        ref = _flat(layer(x.double(), hx if hx is None else tuple(t.double() for t in hx)
                          if isinstance(hx, tuple) else hx.double()))
    for a, b in zip(results[0], ref):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6)


def test_h_n_does_not_alias_the_output(monkeypatch):
    """As torch.nn: h_n is its own tensor, so writing into the output leaves it alone."""
    layer = rnnlab.GRU(4, 6, engine="native")
    with torch.no_grad():
        out, h = layer(torch.randn(5, 2, 4))
        before = h.clone()
        out.zero_()
    assert torch.equal(h, before)


def test_inter_level_dropout_in_training_mode_draws_as_the_general_path(monkeypatch):
    """A layer left in training mode with dropout between levels, called under no_grad: the lean path draws
    the same masks in the same order."""
    layer = rnnlab.LSTM(5, 7, num_layers=3, dropout=0.5, engine="native")
    x = torch.randn(4, 2, 5)
    results = []
    for lean in ("1", "0"):
        monkeypatch.setenv("RNNLAB_LEAN", lean)
        torch.manual_seed(3)
        with torch.no_grad():
            results.append(_flat(layer(x)))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_which_calls_are_lean():
    layer = rnnlab.LSTM(3, 4)
    x = torch.randn(2, 1, 3)
    with torch.no_grad():
        assert fused.lean(layer, x, None, False)
        assert not fused.lean(layer, x, torch.tensor([2]), False)  # lengths
        assert not fused.lean(layer, x, None, True)  # gate traces
        assert not fused.lean(rnnlab.LSTM(3, 4, bidirectional=True), x, None, False)
        assert not fused.lean(rnnlab.LSTM(3, 4, layer_norm=True), x, None, False)
        assert fused.lean(rnnlab.GRU(3, 4, zoneout=0.1).eval(), x, None, False)  # zoneout is off in eval
        assert not fused.lean(rnnlab.GRU(3, 4, zoneout=0.1), x, None, False)
    assert not fused.lean(layer, x, None, False)  # autograd on


def test_weight_changes_reach_the_next_call(monkeypatch):
    """The lean path keeps views of the parameters between calls: changes in place (through .data too), new
    storage (.data = ...), a replaced parameter and a dtype change must all be seen, as the general path sees them."""
    layer = rnnlab.LSTM(4, 5, engine="native")
    x = torch.randn(3, 2, 4)

    def both():
        got = []
        for lean in ("1", "0"):
            monkeypatch.setenv("RNNLAB_LEAN", lean)
            with torch.no_grad():
                got.append(layer(x.to(layer.weight_ih_l0.dtype))[0])
        assert torch.equal(got[0], got[1])
        return got[0]

    first = both()
    with torch.no_grad():
        layer.weight_hh_l0.mul_(0.5)
    second = both()
    assert not torch.equal(first, second)
    layer.weight_ih_l0.data.add_(1.0)  # in place through .data: the version counter does not move
    third = both()
    assert not torch.equal(second, third)
    layer.bias_l0.data = torch.randn_like(layer.bias_l0)  # new storage
    fourth = both()
    assert not torch.equal(third, fourth)
    layer.weight_hh_l0 = torch.nn.Parameter(torch.randn_like(layer.weight_hh_l0))  # a new parameter
    fifth = both()
    assert not torch.equal(fourth, fifth)
    layer.double()
    assert both().dtype == torch.float64


def test_a_lean_call_leaves_the_saved_layer_unchanged(tmp_path):
    """Nothing of a lean call stays on the layer: a saved layer is the same bytes before and after one, and a loaded
    one computes the same."""
    layer = rnnlab.GRU(3, 4)
    (tmp_path / "before").mkdir(), (tmp_path / "after").mkdir()  # the same file name: torch.save writes it inside
    torch.save(layer, tmp_path / "before" / "layer.pt")
    x = torch.randn(2, 1, 3)
    with torch.no_grad():
        want = layer(x)[0]
    torch.save(layer, tmp_path / "after" / "layer.pt")
    assert (tmp_path / "before" / "layer.pt").read_bytes() == (tmp_path / "after" / "layer.pt").read_bytes()
    loaded = torch.load(tmp_path / "after" / "layer.pt", weights_only=False)
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], want)


def _direct(layer):
    """``layer``'s weights as the library's lean_forward takes them: per level (w_ih, w_hh, b, b_hn, w_hr), detached."""
    return [t.detach() if t is not None else None for t in fused.lean_weights(layer, range(layer.num_layers))]


@pytest.mark.parametrize("cell, make", [("lstm", lambda: rnnlab.LSTM(3, 4, num_layers=2)),
                                        ("gru_after", lambda: rnnlab.GRU(3, 4, reset="after")),
                                        ("rnn_tanh", lambda: rnnlab.RNN(3, 4))])
def test_the_direct_entry_refuses_bad_arguments_by_name(cell, make):
    """lean_forward builds each level from 2-D weights itself (not through the operator's checks): every bad shape,
    dtype or count is refused with the argument's name, never read out of bounds."""
    import rnnlab.engine._C as C

    w = _direct(make())
    x = torch.randn(2, 1, 3)
    lstm = cell == "lstm"
    L = len(w) // 5
    with torch.no_grad():
        C.lean_forward(x, w, None, None, cell, False)  # the good call runs

        def refused(match, x=x, w=w, h0=None, c0=None, cell=cell, error=ValueError):
            with pytest.raises(error, match=match):
                C.lean_forward(x, w, h0, c0, cell, False)

        refused("w_ih \\(level 0\\): expected shape", w=[w[0], w[1][:, :3].contiguous(), *w[2:]])  # H from w_hh
        refused("w_hh \\(level 0\\): expected shape", w=[w[0], w[1][1:].contiguous(), *w[2:]])
        refused("w_ih \\(level 0\\): expected shape", w=[w[0][:, :2].contiguous(), *w[1:]])
        refused("w_ih \\(level 0\\): expected dtype", w=[w[0].double(), *w[1:]], error=TypeError)
        refused("b \\(level 0\\): expected shape", w=[w[0], w[1], w[2][1:], *w[3:]])
        refused("level 0 has no w_ih or w_hh", w=[None, *w[1:]])
        refused("weights: expected", w=w[:4])
        refused("x: expected \\(T, B, X\\)", x=x[0])
        refused("x: expected float32 or float64", x=x.to(torch.bfloat16), error=TypeError)
        refused("cell: expected one of", cell="gru")
        refused("h0, c0: expected", h0=torch.zeros(L + 1, 1, 4))
        refused("h0 \\(level 0\\): expected shape", h0=torch.zeros(L, 2, 4))
        if lstm:
            refused("h0, c0: expected", h0=torch.zeros(L, 1, 4), c0=torch.zeros(L, 1, 4)[:, :, :3].unsqueeze(0))
            refused("c0 \\(level 0\\): expected shape", h0=torch.zeros(L, 1, 4), c0=torch.zeros(L, 1, 3))
            refused("w_hh \\(level 1\\): expected shape", w=[*w[:6], w[6][1:].contiguous(), *w[7:]])
            refused("w_hr: expected None", w=[*w[:4], torch.zeros(4, 4)], cell="gru_after")
        else:
            refused("c0: expected None", c0=torch.zeros(L, 1, 4))
            refused("b_hn: expected None" if cell != "gru_after" else "b_hn \\(level 0\\): expected shape",
                    w=[*w[:3], torch.zeros(5), w[4]])


def test_the_direct_entry_takes_strided_weights_and_states_as_contiguous_ones():
    """Non-contiguous weights and states (views: a transposed parameter's transpose, every other row) compute what their
    contiguous copies do, and zero states what None does."""
    import rnnlab.engine._C as C

    torch.manual_seed(1)
    layer = rnnlab.LSTM(3, 4, num_layers=2)
    w = _direct(layer)
    strided = [t if t is None or t.dim() == 1 else t.t().contiguous().t() for t in w]
    assert not strided[0].is_contiguous()
    x = torch.randn(5, 2, 3)
    h0 = torch.randn(2, 4, 4)[:, ::2]
    c0 = torch.randn(2, 2, 8)[:, :, ::2]
    with torch.no_grad():
        want = C.lean_forward(x, w, h0.contiguous(), c0.contiguous(), "lstm", False)
        got = C.lean_forward(x, strided, h0, c0, "lstm", False)
        for a, b in zip(got, want):
            assert torch.equal(a, b)
        zeros = C.lean_forward(x, w, torch.zeros(2, 2, 4), torch.zeros(2, 2, 4), "lstm", False)
        for a, b in zip(C.lean_forward(x, w, None, None, "lstm", False), zeros):
            assert torch.equal(a, b)


@pytest.mark.parametrize("cell, gates", [("lstm", 4), ("rnn_tanh", 1)])
def test_the_direct_entry_refuses_levels_of_different_widths(cell, gates):
    """The finals of every level are one (L, B, ·) tensor: a level wider or narrower than level 0 (each one's own
    weights consistent) is refused by name, never written past the finals' end."""
    import rnnlab.engine._C as C

    def level(x, h):
        return [torch.randn(gates * h, x), torch.randn(gates * h, h), torch.randn(gates * h), None, None]

    x = torch.randn(3, 2, 5)
    with torch.no_grad():
        out, h_n, _ = C.lean_forward(x, level(5, 4) + level(4, 4), None, None, cell, False)
        assert out.shape == (3, 2, 4) and h_n.shape == (2, 2, 4)
        for wider in (6, 3):
            with pytest.raises(ValueError, match=f"weights: level 1 is {wider} wide"):
                C.lean_forward(x, level(5, 4) + level(4, wider), None, None, cell, False)
