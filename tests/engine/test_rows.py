"""The split by row (csrc/split.h's run_rows): a one-direction level run as two loops over halves of the batch, on a
thread each, forward and backward. Against the float64 reference engine and against the same call with the split off
(RNNLAB_ROWS=0), every variant it runs (all but layer norm), lengths, given states and traces; rnnlab::route_counts
shows which route ran."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings

import rnnlab

from .test_native import TOL, _assert_same, _inputs, _run, configs, loops  # noqa: F401 (loops: a fixture)
from .test_native_variants import NATIVE, _build

PLAIN = [(rnnlab.LSTM, {}), (rnnlab.GRU, dict(reset="after")), (rnnlab.GRU, dict(reset="before")), (rnnlab.RNN, {}),
         (rnnlab.RNN, dict(nonlinearity="relu"))]
# every variant the split by row runs (layer norm keeps its loop whole)
ROWS = PLAIN + [(c, o) for c, o in NATIVE if not o.get("layer_norm")]


def rows_ran():
    """(forward, backward) loops split by row so far."""
    counts = torch.ops.rnnlab.route_counts()
    return counts[5], counts[6]


@pytest.fixture(autouse=True)
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=configs(ROWS))
def test_rows_equal_reference(loops, cfg, monkeypatch):
    """Random layers (stacks, both directions, lengths, packed and unbatched input, traces, dropout) with the split by
    row forced wherever it can run: the same outputs and gradients as the reference engine."""
    monkeypatch.setenv("RNNLAB_ROWS", "1")
    layer, x, hx, lengths = _build(cfg)
    ref = _run(layer, "reference", x, hx, lengths, cfg["trace"], cfg["seed"])
    got = _run(layer, "native", x, hx, lengths, cfg["trace"], cfg["seed"])
    _assert_same(ref[0], got[0], TOL[cfg["dtype"]])
    _assert_same(ref[1], got[1], TOL[cfg["dtype"]])


@pytest.mark.parametrize("cls,opts", ROWS + [(rnnlab.LSTM, dict(proj_size=7))], ids=str)
@pytest.mark.parametrize("B", [2, 9])  # 9: parts of 4 and 5 rows
def test_rows_training_matches_float64_and_the_whole_loop(loops, cls, opts, B, monkeypatch):
    """A training step split by row (forward and backward): every gradient matches the float64 reference and the
    same step on the whole loop, with lengths, given states and in training mode (dropout and zoneout masks drawn
    alike from the same seed; against the float32 reference engine for those, whose draws follow the dtype); the route
    counters see both halves ran split."""
    torch.manual_seed(B)
    H = 20
    layer = cls(6, H, engine="native", **opts)
    ref = cls(6, H, engine="reference", **opts).double()
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(13, B, 6)
    lengths = torch.tensor([13, 4, 1, 13, 7, 13, 2, 9, 13][:B])
    P = opts.get("proj_size") or H
    h0 = torch.randn(1, B, P)
    state = (h0, torch.randn(1, B, H)) if cls is rnnlab.LSTM else h0
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(13, B, P, generator=gen), torch.randn(1, B, P, generator=gen)]

    def step(model, dtype, env):
        monkeypatch.setenv("RNNLAB_ROWS", env)
        model.zero_grad()
        leaf = lambda t: t.detach().to(dtype).clone().requires_grad_()  # noqa: E731
        xi = leaf(x)
        hi = tuple(leaf(s) for s in state) if isinstance(state, tuple) else leaf(state)
        torch.manual_seed(5)
        out, hn = model(xi, hi, lengths=lengths)
        h_last = hn[0] if isinstance(hn, tuple) else hn
        loss = (out * weights[0].to(dtype)).sum() + (h_last * weights[1].to(dtype)).sum()
        if isinstance(hn, tuple):
            loss = loss + hn[1].sum()
        loss.backward()
        grads = [xi.grad, *(s.grad for s in (hi if isinstance(hi, tuple) else (hi,)))]
        return [out.detach(), *grads, *(p.grad for p in model.parameters())]

    before = rows_ran()
    split = step(layer, torch.float32, "1")
    after = rows_ran()
    assert after[0] == before[0] + 1 and after[1] == before[1] + 1, (before, after)
    whole = step(layer, torch.float32, "0")
    assert rows_ran() == after
    layer.engine = "reference"  # the cells' equations under autograd, the same dropout and zoneout draws
    same = step(layer, torch.float32, "0")
    random = opts.get("recurrent_dropout") or opts.get("zoneout")  # drawn in the layer's dtype: no float64 twin
    want = same if random else step(ref, torch.float64, "0")
    for s, w, o, r in zip(split, whole, same, want):
        torch.testing.assert_close(s, w, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(s, o, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(s.double(), r.double(), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("cls,opts", PLAIN, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rows_inference_is_the_rule_at_a_small_layer_and_matches(loops, cls, opts, dtype, monkeypatch):
    """Without RNNLAB_ROWS the rule (ops.cpp's rows_pay) splits a batch of 16 rows of a small layer by row, and the
    outputs and final states (the LSTM's C_T from the operator's two-slot C) match the float64 reference and the whole
    loop's, with lengths."""
    torch.manual_seed(0)
    layer = cls(8, 32, engine="native", **opts).to(dtype)
    ref = cls(8, 32, engine="reference", **opts).double()
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(30, 16, 8, dtype=dtype)
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)

    def flat(res):
        out, hn = res
        return [out, *(hn if isinstance(hn, tuple) else (hn,))]

    # whole sequences take run_lean, lengths the general path: each reads C_T from the operator's two-slot C
    for kwargs in ({}, dict(lengths=torch.randint(1, 31, (16,)))):
        monkeypatch.delenv("RNNLAB_ROWS", raising=False)
        before = rows_ran()
        with torch.inference_mode():
            got = flat(layer(x, **kwargs))
        assert rows_ran()[0] == before[0] + 1
        monkeypatch.setenv("RNNLAB_ROWS", "0")
        with torch.inference_mode():
            whole = flat(layer(x, **kwargs))
        with torch.no_grad():
            want = flat(ref(x.double(), **kwargs))
        for g, w, r in zip(got, whole, want):
            torch.testing.assert_close(g.double(), r, **tol)
            torch.testing.assert_close(g, w, **tol)


def test_rows_never_split_layer_norm_or_one_thread(loops, monkeypatch):
    """Layer norm keeps its loop whole (its saved statistics are the loop's), and so does one torch thread."""
    monkeypatch.setenv("RNNLAB_ROWS", "1")
    layer = rnnlab.LSTM(8, 16, layer_norm=True, engine="native")
    x = torch.randn(5, 8, 8)
    before = rows_ran()
    with torch.no_grad():
        layer(x)
    assert rows_ran() == before
    plain = rnnlab.GRU(8, 16, engine="native")
    torch.set_num_threads(1)
    with torch.no_grad():
        plain(x)
    assert rows_ran() == before
