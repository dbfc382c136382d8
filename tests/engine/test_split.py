"""csrc/split.h: a level's forward and backward loops on two threads, each with part of the hidden units (ops.cpp's
split_units chooses it; RNNLAB_SPLIT=1 forces it wherever it can run, 0 turns it off). Checked against the float64
reference engine and against the one-loop route, with rnnlab::route_counts showing which route ran."""

import threading

import pytest
import torch

import rnnlab
from rnnlab.engine import ops

pytestmark = pytest.mark.skipif(not ops.available(), reason="the split loop is the compiled operators'")

CELLS = [(rnnlab.LSTM, {}), (rnnlab.GRU, dict(reset="after")), (rnnlab.RNN, {}),
         (rnnlab.RNN, dict(nonlinearity="relu"))]
# inference splits the seed's GRU too (its W_hn (r h) reads the whole row of r h both parts write: Loop::mid_step)
INFER_CELLS = CELLS + [(rnnlab.GRU, {})]


def routes():
    one, split, small, split_back = torch.ops.rnnlab.route_counts()[:4]
    return {"one": one, "split": split, "small": small, "split_back": split_back}


def ran(fn):
    """The routes the forward loops of ``fn()`` took (counts), and its result."""
    before = routes()
    out = fn()
    after = routes()
    return {k: after[k] - before[k] for k in after}, out


def split_ran(layer, x=None, grad=False):
    """Whether one call of ``layer`` on ``x`` (default (5, 8, 16)) ran split by unit (in inference mode unless
    ``grad``)."""
    x = torch.randn(5, 8, 16) if x is None else x
    if grad:
        return ran(lambda: layer(x))[0]["split"] == 1
    with torch.inference_mode():
        return ran(lambda: layer(x))[0]["split"] == 1


def _agree(results, out, hn, dtype):
    """The split route's results (``results["1"]``) match the float64 reference's (out, hn) and the one-loop route's."""
    want = [out, *(hn if isinstance(hn, tuple) else (hn,))]
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    for split, one, w in zip(results["1"], results["0"], want):
        torch.testing.assert_close(split.double(), w, **tol)
        torch.testing.assert_close(split, one, **tol)


@pytest.fixture(autouse=True)
def two_threads(monkeypatch):
    monkeypatch.setenv("RNNLAB_ROWS", "0")  # the split by row (test_rows.py) would take these loops first
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("cls,opts", INFER_CELLS, ids=str)
@pytest.mark.parametrize("H", [32, 37, 100])  # 37: a part of 32 units and one of 5
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("B", [5, 1])  # 1: the parts read their rows of W_hh (Loop::dot)
def test_split_inference_matches_the_reference_and_one_loop(cls, opts, H, dtype, bias, B, monkeypatch):
    torch.manual_seed(H)
    layer = cls(7, H, bias=bias, engine="native", **opts).to(dtype)
    ref = cls(7, H, bias=bias, engine="reference", **opts).double()
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(11, B, 7, dtype=dtype)
    lengths = torch.tensor([11, 3, 1, 11, 6][:B] if B > 1 else [6])
    h0 = torch.randn(1, B, H, dtype=dtype)
    state = (h0, torch.randn(1, B, H, dtype=dtype)) if cls is rnnlab.LSTM else h0
    for kwargs in ({}, dict(lengths=lengths), dict(hx=state)):
        results = {}
        for env in ("1", "0"):
            monkeypatch.setenv("RNNLAB_SPLIT", env)
            with torch.inference_mode():
                took, (out, hn) = ran(lambda: layer(x, **kwargs))
            assert took["split"] == (env == "1") and took["one"] == (env == "0"), took
            results[env] = [out, *(hn if isinstance(hn, tuple) else (hn,))]
        ref_kwargs = {k: (tuple(s.double() for s in v) if isinstance(v, tuple) else v.double()) if k == "hx" else v
                      for k, v in kwargs.items()}
        with torch.no_grad():
            out, hn = ref(x.double(), **ref_kwargs)
        _agree(results, out, hn, dtype)


@pytest.mark.parametrize("cls,opts", CELLS, ids=str)
def test_split_training_matches_the_float64_reference(cls, opts, monkeypatch):
    """Training on the split route, forward and backward (RNNLAB_SPLIT=1): the forward copies each part's gates (and
    the GRU's W_hn h + b_hn) into the layer's layout, the backward's parts exchange their shares of ∂h_{t-1} each
    step; every gradient (x, weights, biases, h_0 and C_0 through the outputs) matches the float64 reference,
    lengths included, from given states."""
    monkeypatch.setenv("RNNLAB_SPLIT", "1")
    torch.manual_seed(1)
    layer = cls(6, 40, engine="native", **opts)
    ref = cls(6, 40, engine="reference", **opts).double()
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(9, 4, 6)
    lengths = torch.tensor([9, 2, 5, 9])
    h0, c0 = torch.randn(1, 4, 40), torch.randn(1, 4, 40)
    got = {}
    for name, model in (("split", layer), ("ref", ref)):
        dtype = next(model.parameters()).dtype
        xi, h, c = (t.to(dtype).requires_grad_() for t in (x, h0, c0))
        state = (h, c) if cls is rnnlab.LSTM else h
        inputs = [xi, h, c] if cls is rnnlab.LSTM else [xi, h]

        def step():
            out, hn = model(xi, state, lengths=lengths)
            last = hn[1].sum() if isinstance(hn, tuple) else hn.sum()  # C_n's (LSTM) or h_n's own gradient
            return torch.autograd.grad((out**2).sum() + out.sum() + 3 * last, [*inputs, *model.parameters()])

        took, grads = ran(step)
        if name == "split":
            assert took["split"] == 1 and took["split_back"] == 1, took
        got[name] = list(grads)
    for a, b in zip(got["split"], got["ref"]):
        torch.testing.assert_close(a.double(), b, rtol=2e-4, atol=2e-5)


def test_where_the_split_runs_by_default(monkeypatch):
    """Inference at the measured sizes (batch 1 only for W_hh of 2^16 numbers or more); training for the GRU and the
    LSTM's larger sizes; not for two directions,
    variants, a projection or the reset-before GRU's training, and never on one torch thread. (The training rules with
    the float32 products on MKL: on brgemm's blocks, test_training_does_not_split_on_blocked_products.)"""
    monkeypatch.delenv("RNNLAB_SPLIT", raising=False)
    monkeypatch.setenv("RNNLAB_BRGEMM_F32", "0")
    assert split_ran(rnnlab.LSTM(16, 64, engine="native"))
    assert split_ran(rnnlab.GRU(16, 64, reset="after", engine="native"))
    assert split_ran(rnnlab.RNN(16, 256, engine="native"))
    assert not split_ran(rnnlab.RNN(16, 64, engine="native"))  # the RNN's light step: one loop below 2^19
    assert not split_ran(rnnlab.LSTM(16, 64, engine="native"), x=torch.randn(5, 1, 16))  # batch 1, small W_hh
    assert split_ran(rnnlab.GRU(16, 256, reset="after", engine="native"), x=torch.randn(5, 1, 16))  # 3·2^16
    assert split_ran(rnnlab.GRU(16, 512, reset="after", engine="native"), x=torch.randn(5, 1, 16))  # 3·2^18
    assert not split_ran(rnnlab.LSTM(16, 64, engine="native"), grad=True)  # training: the GRU from 2^20, ...
    assert split_ran(rnnlab.GRU(16, 128, reset="after", engine="native"), x=torch.randn(5, 32, 16), grad=True)
    assert split_ran(rnnlab.LSTM(16, 256, engine="native"), x=torch.randn(5, 32, 16), grad=True)  # the LSTM 2^23
    assert not split_ran(rnnlab.RNN(16, 256, engine="native"), grad=True)  # the RNN never
    assert not split_ran(rnnlab.LSTM(16, 64, engine="native", bidirectional=True))
    assert not split_ran(rnnlab.LSTM(16, 64, engine="native", peepholes=True))
    assert not split_ran(rnnlab.LSTM(16, 64, engine="native", proj_size=16))
    assert split_ran(rnnlab.GRU(16, 64, reset="before", engine="native"))  # inference: the seed's GRU too
    assert not split_ran(rnnlab.GRU(16, 128, reset="before", engine="native"), x=torch.randn(5, 32, 16), grad=True)
    assert not split_ran(rnnlab.LSTM(16, 16, engine="native"))  # H < 32: parts of under 16 units
    torch.set_num_threads(1)
    assert not split_ran(rnnlab.LSTM(16, 64, engine="native"))


def test_training_does_not_split_on_blocked_products(monkeypatch):
    """Where the float32 per-step products run on brgemm's blocks (already over both threads), a training call runs
    one loop where MKL's products would split it by unit; inference still splits, and float64 keeps the rule."""
    monkeypatch.delenv("RNNLAB_SPLIT", raising=False)
    monkeypatch.setenv("RNNLAB_ROWS", "0")  # (the split by row would take these inference calls)
    monkeypatch.setenv("RNNLAB_BRGEMM_F32", "1")
    x = torch.randn(5, 32, 16)
    for make in (lambda **k: rnnlab.GRU(16, 128, reset="after", engine="native", **k),
                 lambda **k: rnnlab.LSTM(16, 256, engine="native", **k)):
        assert not split_ran(make(), x, grad=True)
        assert split_ran(make(), x)  # inference
        assert split_ran(make().double(), x.double(), grad=True)  # float64: no blocked products
        monkeypatch.setenv("RNNLAB_BRGEMM_F32", "0")
        assert split_ran(make(), x, grad=True)
        monkeypatch.setenv("RNNLAB_BRGEMM_F32", "1")


def test_calls_from_two_python_threads_at_once(monkeypatch):
    """The parts' second thread comes from one shared pool: concurrent calls (split layers and a wavefront stack)
    take turns and each gets its own results."""
    monkeypatch.setenv("RNNLAB_SPLIT", "1")
    torch.manual_seed(2)
    layers = [rnnlab.LSTM(8, 48, engine="native"), rnnlab.GRU(8, 48, reset="after", engine="native"),
              rnnlab.LSTM(8, 32, num_layers=3, engine="native")]
    xs = [torch.randn(20, 3, 8) for _ in layers]
    with torch.inference_mode():
        want = [layer(x)[0] for layer, x in zip(layers, xs)]
    errors, got = [], {}

    def work(i):
        try:
            with torch.inference_mode():
                for _ in range(20):
                    got[i] = layers[i](xs[i])[0]
                    torch.testing.assert_close(got[i], want[i], rtol=0, atol=0)
        except Exception as e:  # noqa: BLE001 — reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(layers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a call never returned"
    assert not errors, errors


def test_stacks_whose_levels_split_run_level_by_level(monkeypatch):
    """In inference a stack whose levels run split by unit runs level after level (each on both cores), not as a
    wavefront; a stack whose levels do not (the RNN's light step at H = 64) keeps the wavefront; both give the
    per-level results."""
    from rnnlab.engine import wavefront

    monkeypatch.delenv("RNNLAB_SPLIT", raising=False)
    monkeypatch.delenv("RNNLAB_WAVEFRONT", raising=False)
    x = torch.randn(12, 8, 16)
    for layer, cell, wave in ((rnnlab.LSTM(16, 64, num_layers=2, engine="native"), "lstm", False),
                              (rnnlab.GRU(16, 64, num_layers=2, reset="after", engine="native"), "gru_after", False),
                              (rnnlab.GRU(16, 64, num_layers=2, engine="native"), "gru_before", False),
                              (rnnlab.RNN(16, 64, num_layers=2, engine="native"), "rnn_tanh", True)):
        assert torch.ops.rnnlab.splits_units(cell, 8, 64, False) is not wave
        calls = wavefront.CALLS["stack"]
        with torch.inference_mode():
            took, (out, _) = ran(lambda: layer(x))
        assert (wavefront.CALLS["stack"] - calls == 1) is wave
        assert took["split"] == (0 if wave else 2), took
        monkeypatch.setenv("RNNLAB_WAVEFRONT", "0")
        monkeypatch.setenv("RNNLAB_SPLIT", "0")
        with torch.inference_mode():
            want, _ = layer(x)
        monkeypatch.delenv("RNNLAB_WAVEFRONT")
        monkeypatch.delenv("RNNLAB_SPLIT")
        torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls,opts,H", [(rnnlab.LSTM, {}, 256), (rnnlab.GRU, dict(reset="after"), 384)], ids=str)
def test_batch_one_parts_read_their_rows_of_w_hh(cls, opts, H, monkeypatch):
    """At batch 1 against a W_hh of 2^18 numbers or more (no small-rows kernel) each part reads its rows of W_hh
    one dot product per output: the results match the float64 reference and the one loop."""
    torch.manual_seed(3)
    layer = cls(8, H, engine="native", **opts)
    ref = cls(8, H, engine="reference", **opts).double()
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(6, 1, 8)
    got = {}
    for env in ("1", "0"):
        monkeypatch.setenv("RNNLAB_SPLIT", env)
        with torch.inference_mode():
            took, (out, _) = ran(lambda: layer(x))
        assert took["split"] == (env == "1") and took["small"] == 0, took
        got[env] = out
    with torch.no_grad():
        want, _ = ref(x.double())
    torch.testing.assert_close(got["1"].double(), want, rtol=2e-5, atol=2e-6)
    torch.testing.assert_close(got["1"], got["0"], rtol=2e-5, atol=2e-6)


def _forked_child(queue, layer, x, want):
    torch.set_num_threads(1)  # libgomp's team does not survive a fork (as for torch's own parallel ops)
    with torch.inference_mode():
        queue.put(float((layer(x)[0] - want).abs().max()))


def test_a_forked_child_on_one_thread_runs_after_a_split_call():
    """The split's threads are OpenMP's team: after a multi-threaded call a forked child that sets one torch thread
    (as torch's DataLoader workers do) computes the same results (and does not wait on the parent's team)."""
    import multiprocessing as mp

    layer = rnnlab.LSTM(16, 64, engine="native")
    x = torch.randn(10, 8, 16)
    with torch.inference_mode():
        took, (want, _) = ran(lambda: layer(x))
    assert took["split"] == 1
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_forked_child, args=(queue, layer, x, want))
    child.start()
    child.join(120)
    assert not child.is_alive(), "the forked child never finished"
    assert child.exitcode == 0
    assert queue.get(timeout=10) <= 1e-6


def test_without_a_pair_of_threads_the_split_runs_one_loop():
    """Where OpenMP gives no second thread (here its thread limit; also inside another parallel region) a level
    chosen for the split runs one loop instead, with the same results (a process of its own: the limit is read at
    start-up)."""
    import subprocess
    import sys

    code = """
import torch, rnnlab
torch.set_num_threads(2)
for B, cls, H, kw in ((8, rnnlab.LSTM, 64, {}), (8, rnnlab.GRU, 64, dict(reset="after")), (8, rnnlab.RNN, 256, {}),
                      (1, rnnlab.LSTM, 256, {})):
    layer, ref = cls(16, H, **kw), cls(16, H, engine="reference", **kw).double()
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(5, B, 16)
    before = torch.ops.rnnlab.route_counts()
    with torch.no_grad():
        got, want = layer(x)[0], ref(x.double())[0]
    out, _ = layer(x)
    out.sum().backward()
    after = torch.ops.rnnlab.route_counts()
    assert after[1] == before[1] and after[3] == before[3] and after[0] == before[0] + 2, (before, after)
    torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=2e-6)
print("ok")
"""
    env = {**__import__("os").environ, "OMP_THREAD_LIMIT": "1", "RNNLAB_SPLIT": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


@pytest.mark.parametrize("cls,opts", INFER_CELLS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_split_at_batch_1_reads_its_rows_of_a_large_w_hh_in_place(cls, opts, dtype, monkeypatch):
    """B = 1 against a W_hh of 2^18 numbers or more (Loop::dot): each part runs its gate blocks' rows of the whole W_hh
    in place (small_gemv in float32), no copy; inference equals one loop and the float64 reference."""
    torch.manual_seed(1)
    H = 512 if cls is rnnlab.RNN else 300  # W_hh 2^18 numbers or more; 300: parts of 160 and 140 units
    layer = cls(5, H, engine="native", **opts).to(dtype)
    ref = cls(5, H, engine="reference", **opts).double()
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(6, 1, 5, dtype=dtype)
    results = {}
    for env in ("1", "0"):
        monkeypatch.setenv("RNNLAB_SPLIT", env)
        with torch.inference_mode():
            took, (out, hn) = ran(lambda: layer(x))
        assert took["split"] == (env == "1"), took
        results[env] = [out, *(hn if isinstance(hn, tuple) else (hn,))]
    with torch.no_grad():
        out, hn = ref(x.double())
    want = [out, *(hn if isinstance(hn, tuple) else (hn,))]
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    for split, one, w in zip(results["1"], results["0"], want):
        torch.testing.assert_close(split.double(), w, **tol)
        torch.testing.assert_close(split, one, **tol)


@pytest.mark.parametrize("cls,opts", INFER_CELLS + [(rnnlab.LSTM, dict(peepholes=True))], ids=str)
@pytest.mark.parametrize("split", ["1", "0"])
def test_batch_1_steps_alternate_the_direction_they_read_w_hh_in(cls, opts, split, monkeypatch):
    """Loop::dot's steps read W_hh's rows last to first every other step (a W_hh larger than L2 then finds the rows
    read last still cached): split into parts or one loop (whose product runs on both threads), peepholes (never
    split) too, over odd and even T, the results are those of reading first to last every step (RNNLAB_ALTERNATE=0),
    bit for bit."""
    torch.manual_seed(2)
    H = 513 if cls is rnnlab.RNN else 301  # W_hh 2^18 numbers or more; parts whose rows are no multiple of four
    layer = cls(5, H, engine="native", **opts)
    monkeypatch.setenv("RNNLAB_SPLIT", split)
    for T in (1, 2, 7):
        x = torch.randn(T, 1, 5)
        got = {}
        for env in ("1", "0"):
            monkeypatch.setenv("RNNLAB_ALTERNATE", env)
            with torch.inference_mode():
                out, hn = layer(x)
            got[env] = [out, *(hn if isinstance(hn, tuple) else (hn,))]
        for a, b in zip(got["1"], got["0"]):
            assert torch.equal(a, b)


@pytest.mark.parametrize("cls,opts", INFER_CELLS, ids=str)
@pytest.mark.parametrize("H", [37, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bidirectional_inference_split_in_turn(cls, opts, H, dtype, monkeypatch):
    """Two directions in inference, one after the other, each split by unit (RNNLAB_SPLIT=1 forces it; by default the
    float32 LSTM whose half W_hh fills a core's L2): the reference's results and the directions-at-once route's."""
    torch.manual_seed(H)
    layer = cls(7, H, bidirectional=True, num_layers=2, engine="native", **opts).to(dtype)
    ref = cls(7, H, bidirectional=True, num_layers=2, engine="reference", **opts).double()
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(9, 5, 7, dtype=dtype)
    lengths = torch.tensor([9, 3, 1, 9, 6])
    for kwargs in ({}, dict(lengths=lengths)):
        results = {}
        for env in ("1", "0"):
            monkeypatch.setenv("RNNLAB_SPLIT", env)
            with torch.inference_mode():
                took, (out, hn) = ran(lambda: layer(x, **kwargs))
            assert took["split"] == (4 if env == "1" else 0) and took["one"] == (0 if env == "1" else 4), took
            results[env] = [out, *(hn if isinstance(hn, tuple) else (hn,))]
        with torch.no_grad():
            out, hn = ref(x.double(), **kwargs)
        _agree(results, out, hn, dtype)


def test_bidirectional_inference_in_turn_by_default_only_where_half_w_hh_fills_the_l2(monkeypatch):
    monkeypatch.delenv("RNNLAB_SPLIT", raising=False)
    l2 = torch.ops.rnnlab.l2_bytes()
    H = next(h for h in (256, 512, 1024, 2048) if 4 * h * h * 4 // 2 >= l2)
    x = torch.randn(2, 4, 3)
    for h, splits in ((64, 0), (H, 2)):
        layer = rnnlab.LSTM(3, h, bidirectional=True, engine="native")
        with torch.inference_mode():
            took, _ = ran(lambda: layer(x))
        assert took["split"] == splits, (h, took)
        took, _ = ran(lambda: layer(x))  # training: the directions at once
        assert took["split"] == 0, (h, took)
