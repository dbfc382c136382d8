"""The native operators' bf16 mode under torch.autocast("cpu", dtype=torch.bfloat16) (csrc/ops.cpp, ``use_bf16``):
bf16 GEMM operands, float32 accumulation, float32 pointwise maths and carried state.

The accuracy bound (derived in csrc/ops.cpp's bf16 section): each operand's rounding is at most u = 2^-9
relative, each GEMM output carries ~2u = 2^-8, and through a contractive recurrence the outputs, the final
state and every gradient stay within a relative Frobenius error of a few 2^-8 of the float32 reference run
with the same weights. Asserted here: ``BOUND`` = 2^-5, for every cell and variant. The layers are made
contractive (W_hh halved; layer norm's recurrent gains 0.5) — an expansive recurrence amplifies any
rounding, float32's own included, and no bound holds there.
"""

import copy
import os

import pytest
import torch

import rnnlab
from rnnlab.engine import ops
from rnnlab.tasks.adding import AddingConfig, AddingTask

pytestmark = pytest.mark.skipif(not ops.available(), reason="the native operators are not built")


def _kernel_when_asked() -> str:
    """The bf16 mode's kernel where this CPU and BLAS can run it at all: without AMX it is off unless RNNLAB_BF16=1."""
    old = os.environ.get("RNNLAB_BF16")
    os.environ["RNNLAB_BF16"] = "1"
    try:
        return ops.bf16_kernel()
    finally:
        if old is None:
            del os.environ["RNNLAB_BF16"]
        else:
            os.environ["RNNLAB_BF16"] = old


KERNEL = _kernel_when_asked()
requires_bf16 = pytest.mark.skipif(not KERNEL.startswith("mkl-bf16"), reason=f"no bf16 mode on this machine: {KERNEL}")


@pytest.fixture(autouse=True)
def bf16_mode_on(monkeypatch):
    """These tests check the mode itself, so they run it wherever the CPU can (RNNLAB_BF16=1: on AMX the default)."""
    monkeypatch.setenv("RNNLAB_BF16", "1")

BOUND = 2.0 ** -5
BF16 = dict(device_type="cpu", dtype=torch.bfloat16)
T, B, X, H = 12, 32, 16, 64  # B·H·H = 2^17: every cell's step GEMM at or above BF16_MIN_STEP_MACS

CASES = [
    (rnnlab.RNN, {}), (rnnlab.RNN, dict(nonlinearity="relu")), (rnnlab.RNN, dict(bias=False)),
    (rnnlab.LSTM, {}), (rnnlab.LSTM, dict(peepholes=True)), (rnnlab.LSTM, dict(coupled=True)),
    (rnnlab.LSTM, dict(coupled=True, peepholes=True)), (rnnlab.LSTM, dict(layer_norm=True)),
    (rnnlab.LSTM, dict(layer_norm=True, peepholes=True, coupled=True)),
    (rnnlab.LSTM, dict(recurrent_dropout=0.3, zoneout=0.2)),
    (rnnlab.GRU, {}), (rnnlab.GRU, dict(reset="after")), (rnnlab.GRU, dict(layer_norm=True)),
    (rnnlab.GRU, dict(layer_norm=True, reset="after")), (rnnlab.GRU, dict(reset="after", zoneout=0.2)),
    (rnnlab.GRU, dict(recurrent_dropout=0.3)), (rnnlab.LSTM, dict(proj_size=H // 2)),
]


def contractive(layer):
    """Halve every W_hh and set layer norm's recurrent gains to 0.5: a contractive recurrence."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.startswith("weight_hh"):
                p.mul_(0.5)
            elif name.startswith("ln_hh_weight"):
                p.fill_(0.5)
    return layer


def rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def run(layer, x, lengths, autocast, seed=1):
    """out, h_n parts and the gradients of x and every parameter, for a loss whose gradient at the outputs
    is exact in bf16 (so a bf16 output's cast passes it back unrounded)."""
    torch.manual_seed(seed)  # recurrent dropout's and zoneout's masks: the same draws in every run
    with torch.autocast(**BF16, enabled=autocast):
        out, h_n = layer(x, lengths=lengths)
    parts = h_n if isinstance(h_n, tuple) else (h_n,)
    g = torch.Generator().manual_seed(2)
    loss = sum((t.float() * torch.randn(t.shape, generator=g).bfloat16().float()).sum() for t in (out, *parts))
    return [out, *parts, *torch.autograd.grad(loss, [x, *layer.parameters()])]


def step_sensitivity(layer, x, lengths, ref):
    """The ReLU RNN's gradients are not Lipschitz in the pre-activations: a unit within rounding of 0 flips
    between passing and blocking its whole gradient, so no bound in 2^-8 holds for them — the float32
    function itself moves as much when only its weights and x are rounded to bf16 (about 6% here). This is
    that float32 run's relative error per output; the bf16 mode must stay within twice it."""
    rounded = copy.deepcopy(layer)
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.bfloat16().float())
    xr = x.detach().bfloat16().float().requires_grad_()
    return [rel(a, b) for a, b in zip(run(rounded, xr, lengths, False), ref)]


def case(cls, opts):
    torch.manual_seed(0)
    layer = contractive(cls(X, H, num_layers=2, bidirectional=True, engine="native", **opts))
    x = torch.randn(T, B, X, requires_grad=True)
    lengths = torch.randint(1, T + 1, (B,))
    lengths[0] = T
    return layer, x, lengths


@requires_bf16
@pytest.mark.parametrize("cls,opts", CASES, ids=str)
def test_bf16_outputs_and_gradients_within_bound(cls, opts):
    layer, x, lengths = case(cls, opts)
    bf, ref = run(layer, x, lengths, True), run(layer, x, lengths, False)
    errors = [rel(a, b) for a, b in zip(bf, ref)]
    bounds = [BOUND] * len(errors)
    if opts.get("nonlinearity") == "relu":  # ReLU's derivative is a step: see step_sensitivity
        bounds[2:] = [max(BOUND, 2 * e) for e in step_sensitivity(layer, x, lengths, ref)[2:]]
    assert all(e <= b for e, b in zip(errors, bounds)), (errors, bounds)
    # the bf16 mode ran: the GEMMs' rounding shows beyond the outputs' own bf16 cast
    assert rel(bf[0].float(), ref[0].to(bf[0].dtype).float()) > 0


@requires_bf16
@pytest.mark.parametrize("cls,opts", [c for c in CASES if not c[1].get("layer_norm")], ids=str)
def test_bf16_split_by_row_within_bound(cls, opts, monkeypatch):
    """One direction of two levels, each level's loop split by row (RNNLAB_ROWS=1: each half of the batch a bf16-mode
    loop on a thread of its own, forward and backward): within the same bound, and the counters saw both routes."""
    monkeypatch.setenv("RNNLAB_ROWS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the split runs on two
    try:
        torch.manual_seed(0)
        layer = contractive(cls(X, H, num_layers=2, engine="native", **opts))
        x = torch.randn(T, B, X, requires_grad=True)
        lengths = torch.randint(1, T + 1, (B,))
        lengths[0] = T
        before = torch.ops.rnnlab.route_counts()
        bf = run(layer, x, lengths, True)
        after = torch.ops.rnnlab.route_counts()
        assert after[4] > before[4] and after[5] > before[5] and after[6] > before[6], (before, after)
        ref = run(layer, x, lengths, False)
    finally:
        torch.set_num_threads(threads)
    errors = [rel(a, b) for a, b in zip(bf, ref)]
    bounds = [BOUND] * len(errors)
    if opts.get("nonlinearity") == "relu":
        bounds[2:] = [max(BOUND, 2 * e) for e in step_sensitivity(layer, x, lengths, ref)[2:]]
    assert all(e <= b for e, b in zip(errors, bounds)), (errors, bounds)


@requires_bf16
@pytest.mark.parametrize("cls,opts", [(rnnlab.RNN, {}), (rnnlab.LSTM, {}), (rnnlab.GRU, dict(reset="after")),
                                      (rnnlab.GRU, {})], ids=str)
@pytest.mark.parametrize("hidden", [64, 80])
def test_bf16_split_by_unit_within_bound(cls, opts, hidden, monkeypatch):
    """One direction, its loops split by hidden unit (RNNLAB_SPLIT=1, RNNLAB_ROWS=0: each part rounds its own rows of
    W_ih and W_hh to bf16 and packs them, forward and, but for the seed's GRU, backward): within the bound of the
    float32 run, and the counters saw the split and the bf16 mode. H = 80 gives parts of 48 and 32 units (a last
    packed block narrower than 64)."""
    monkeypatch.setenv("RNNLAB_SPLIT", "1")
    monkeypatch.setenv("RNNLAB_ROWS", "0")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        layer = contractive(cls(X, hidden, engine="native", **opts))
        x = torch.randn(T, B, X, requires_grad=True)
        lengths = torch.randint(1, T + 1, (B,))
        lengths[0] = T
        before = torch.ops.rnnlab.route_counts()
        bf = run(layer, x, lengths, True)
        with torch.no_grad(), torch.autocast(**BF16):
            inferred = layer(x, lengths=lengths)[0]
        after = torch.ops.rnnlab.route_counts()
        ref = run(layer, x, lengths, False)
    finally:
        torch.set_num_threads(threads)
    assert after[1] > before[1] and after[4] > before[4], (before, after)  # split forward, bf16 mode
    if opts.get("reset") == "after" or cls is not rnnlab.GRU:
        assert after[3] > before[3], (before, after)  # split backward
    errors = [rel(a, b) for a, b in zip(bf, ref)] + [rel(inferred, ref[0])]
    assert all(e <= BOUND for e in errors), errors
    assert rel(bf[0].float(), ref[0].to(bf[0].dtype).float()) > 0  # the GEMMs' rounding shows


@pytest.mark.parametrize("cls,opts", [(rnnlab.LSTM, {}), (rnnlab.GRU, dict(layer_norm=True)), (rnnlab.RNN, {})],
                         ids=str)
def test_forced_fallback_is_float32(cls, opts, monkeypatch):
    """RNNLAB_BF16=0: under bf16 autocast the operators compute in float32 (only the outputs' cast differs)."""
    monkeypatch.setenv("RNNLAB_BF16", "0")
    assert ops.bf16_kernel().startswith("float32")
    layer, x, lengths = case(cls, opts)
    got, want = run(layer, x, lengths, True), run(layer, x, lengths, False)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b.to(a.dtype), atol=0, rtol=0)


def test_bf16_kernel_names_the_path(monkeypatch):
    monkeypatch.delenv("RNNLAB_BF16")
    kernel = ops.bf16_kernel()
    assert kernel in ("mkl-bf16 (amx)", "mkl-bf16 (avx512-bf16)", "float32 (no AMX; RNNLAB_BF16=1 runs the bf16 mode)",
                      "float32 (no bf16 GEMM on this CPU)", "float32 (no bf16 GEMM in this BLAS)",
                      "float32 (no native operators)")
    # the mode is on by default with AMX, and without it where brgemm.h's packed products run (RNNLAB_BRGEMM=0: MKL's
    # bf16 GEMM, off); RNNLAB_BF16=1 runs it wherever the hardware has it, and RNNLAB_BF16=0 never does
    packed = torch.ops.rnnlab.brgemm_available() if KERNEL.startswith("mkl-bf16") else False
    assert (kernel == "mkl-bf16 (amx)") == (KERNEL == "mkl-bf16 (amx)")
    assert kernel.startswith("float32 (no AMX") == (KERNEL == "mkl-bf16 (avx512-bf16)" and not packed)
    if KERNEL == "mkl-bf16 (avx512-bf16)":
        monkeypatch.setenv("RNNLAB_BRGEMM", "0")
        assert ops.bf16_kernel().startswith("float32 (no AMX")
        monkeypatch.delenv("RNNLAB_BRGEMM")
    monkeypatch.setenv("RNNLAB_BF16", "0")  # where the hardware has no mode, its own reason stays
    assert ops.bf16_kernel() == ("float32 (RNNLAB_BF16=0)" if KERNEL.startswith("mkl-bf16") else kernel)


def test_without_amx_autocast_computes_float32(monkeypatch):
    """On a CPU with AVX-512-BF16 but no AMX, with MKL's bf16 GEMM for the products (RNNLAB_BRGEMM=0: it measured no
    faster than float32 there) autocast runs the float32 path unless RNNLAB_BF16=1: no loop counts as the bf16 mode."""
    monkeypatch.delenv("RNNLAB_BF16")
    monkeypatch.setenv("RNNLAB_BRGEMM", "0")
    if not ops.bf16_kernel().startswith("float32 (no AMX"):
        pytest.skip(f"not a CPU without AMX but with AVX-512-BF16: {ops.bf16_kernel()}")
    layer, x = rnnlab.GRU(16, 128, engine="native"), torch.randn(4, 16, 16)  # 16·384·128 ≥ 2^17
    before = torch.ops.rnnlab.route_counts()[4]
    with torch.no_grad(), torch.autocast(**BF16):
        layer(x)
    assert torch.ops.rnnlab.route_counts()[4] == before


def level_args(dtype, cell="lstm"):
    g = torch.Generator().manual_seed(0)
    G = 4 if cell == "lstm" else 3
    r = lambda *s: (torch.rand(*s, dtype=dtype, generator=g) - 0.5) / 4  # noqa: E731
    return (r(T, B, X), r(1, G * H, X), r(1, G * H, H), r(1, B, H), r(1, B, H) if cell == "lstm" else None,
            r(1, G * H)) + (None,) * 11


def both_passes(args, cell, bf16):
    out = torch.ops.rnnlab.recurrent_level(*args, cell=cell, bf16=bf16)
    g = torch.ones_like(out[0])
    return [*out, *torch.ops.rnnlab.recurrent_level_backward(*args, *out, g, None, None, None, cell=cell, bf16=bf16)]


@requires_bf16
@pytest.mark.parametrize("cell", ["lstm", "gru_before"])
def test_operator_flag(cell, monkeypatch):
    """bf16=True asks for the mode: it runs on float32 (within the bound), float64 ignores it, and
    RNNLAB_BF16=0 turns it off."""
    args = level_args(torch.float32, cell)
    ref, bf = both_passes(args, cell, False), both_passes(args, cell, True)
    for a, b in zip(bf, ref):
        if b.numel() and b.norm() > 0:
            assert rel(a, b) <= BOUND
    assert rel(bf[0], ref[0]) > 0
    with torch.autocast(**BF16):  # the AutocastCPU kernel asks for the mode itself
        auto = torch.ops.rnnlab.recurrent_level(*args, cell=cell)
    for a, b in zip(auto, bf[:5]):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    args64 = level_args(torch.float64, cell)
    for a, b in zip(both_passes(args64, cell, True), both_passes(args64, cell, False)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    monkeypatch.setenv("RNNLAB_BF16", "0")
    for a, b in zip(both_passes(args, cell, True), ref):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@requires_bf16
def test_small_levels_run_float32():
    """Below BF16_MIN_STEP_MACS the bf16 mode does not pay: the call computes float32 throughout."""
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(5, 3, 4, generator=g), torch.randn(1, 8, 4, generator=g), torch.randn(1, 8, 8, generator=g),
            torch.zeros(1, 3, 8)) + (None,) * 13
    for a, b in zip(both_passes(args, "rnn_tanh", True), both_passes(args, "rnn_tanh", False)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@requires_bf16
def test_route_counts_see_the_bf16_mode():
    """rnnlab::route_counts counts a loop that ran the bf16 mode (its 5th entry), which is what the bench reports as
    "native-cpp bf16" (bench.engine.bf16_path): a level from BF16_MIN_STEP_MACS does, a smaller one does not."""
    from rnnlab.bench import engine as bench

    def bf16_loops(layer, x):
        before = torch.ops.rnnlab.route_counts()[4]
        with torch.no_grad(), torch.autocast(**BF16):
            layer(x)
        return torch.ops.rnnlab.route_counts()[4] - before

    big, big_x = rnnlab.GRU(16, 128, engine="native"), torch.randn(4, 16, 16)  # 16·384·128 ≥ 2^17
    small, small_x = rnnlab.GRU(4, 8, engine="native"), torch.randn(4, 2, 4)
    assert bf16_loops(big, big_x) == 1 and bf16_loops(small, small_x) == 0
    assert bench.bf16_path(big, big_x) == "native-cpp bf16" and bench.bf16_path(small, small_x) == "native-cpp float32"


@requires_bf16
def test_compile_under_autocast_equals_eager():
    """torch.compile under autocast: the graph's recurrent_level runs the bf16 mode and its backward the same
    mode, so the compiled model gives eager autocast's values and gradients."""
    torch.manual_seed(0)
    layer = contractive(rnnlab.LSTM(X, H, engine="native"))
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    x = torch.randn(T, B, X)
    runs = []
    for m in (compiled, layer):
        xg = x.clone().requires_grad_()
        with torch.autocast(**BF16):
            out, (h, c) = m(xg)
        assert out.dtype == torch.bfloat16
        runs.append([out, h, *torch.autograd.grad(out.float().sum() + c.float().sum(), [xg, *layer.parameters()])])
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        f32 = layer(x)[0]
    assert rel(runs[0][0].float(), f32.bfloat16().float()) > 0  # the graph ran the bf16 mode, not float32


@requires_bf16
def test_export_under_autocast_records_the_bf16_mode():
    """torch.export traces above the AutocastCPU kernel: the layer's call asks for the mode itself, so the
    exported graph holds recurrent_level(..., bf16=True) and runs it (as it holds aten's own casts to bf16)."""
    torch.manual_seed(0)
    layer = contractive(rnnlab.GRU(X, H, engine="native")).eval()
    x = torch.randn(T, B, X)
    with torch.autocast(**BF16):
        program = torch.export.export(layer, (x,))
        eager = layer(x)[0]
    calls = [n for n in program.graph.nodes if n.target == torch.ops.rnnlab.recurrent_level.default]
    assert calls and all(n.kwargs.get("bf16") for n in calls)
    torch.testing.assert_close(program.module()(x)[0], eager, atol=0, rtol=0)
    assert rel(eager, layer(x)[0]) > 0


@requires_bf16
def test_adding_problem_trains_as_in_float32():
    """The adding problem at T = 100 (an LSTM, the same seed and batches): trained under bf16 autocast it
    reaches the float32 run's held-out MSE band, far below the baseline's 1/6."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small per-step GEMMs: one thread is as fast, and far faster on a busy machine
    try:
        bf16, f32 = train_adding()
    finally:
        torch.set_num_threads(threads)
    assert f32 < MSE_BAND and bf16 < MSE_BAND, (bf16, f32)


STEPS, MSE_BAND = 800, 0.02  # both runs reach ~0.0025 (800 steps of 32); the baseline is 1/6


def train_adding():
    task = AddingTask(AddingConfig(seq_len=100))
    test = task.draw(512, torch.Generator().manual_seed(123))
    results = []
    for autocast in (True, False):
        torch.manual_seed(0)
        rnn, head = rnnlab.LSTM(2, 32, engine="native"), torch.nn.Linear(32, 1)
        params = [*rnn.parameters(), *head.parameters()]
        opt = torch.optim.Adam(params, lr=1e-2)
        g = torch.Generator().manual_seed(0)
        for _ in range(STEPS):
            batch = task.draw(32, g)
            with torch.autocast(**BF16, enabled=autocast):
                out, _ = rnn(batch.x.transpose(0, 1))
                pred = head(out[-1]).squeeze(-1)
            loss = (pred.float() - batch.y).square().mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        with torch.no_grad(), torch.autocast(**BF16, enabled=autocast):
            out, _ = rnn(test.x.transpose(0, 1))
            results.append(float((head(out[-1]).squeeze(-1).float() - test.y).square().mean()))
    return results


def test_bf16_tensors_outside_autocast_are_refused_with_the_way_in():
    x = torch.randn(4, 2, 3).bfloat16()
    with pytest.raises(TypeError, match=r"expected float32 or float64, got BFloat16 \(for bf16 GEMMs pass float32"):
        torch.ops.rnnlab.recurrent_level(x, torch.randn(1, 4, 3), torch.randn(1, 4, 4), torch.zeros(1, 2, 4),
                                         *(None,) * 13, cell="rnn_tanh")


@requires_bf16
@pytest.mark.parametrize("cell", ["lstm", "gru_after"])
def test_opcheck_with_the_bf16_flag(cell):
    """schema, fake shapes, autograd registration and AOT dispatch with bf16=True at a size that runs the mode."""
    args = tuple(t.requires_grad_() if isinstance(t, torch.Tensor) else t for t in level_args(torch.float32, cell))
    if cell == "gru_after":
        args = args[:6] + (torch.rand(1, H) - 0.5,) + args[7:]
    torch.library.opcheck(torch.ops.rnnlab.recurrent_level.default, args, {"cell": cell, "bf16": True})


requires_brgemm = pytest.mark.skipif(
    not (ops.available() and torch.ops.rnnlab.brgemm_available()), reason="no packed bf16 products on this CPU"
)


@requires_bf16
@requires_brgemm
@pytest.mark.parametrize("cls,opts", [c for c in CASES if not c[1].get("recurrent_dropout")] +
                         [(rnnlab.GRU, dict(reset="before"))], ids=str)
@pytest.mark.parametrize("hidden", [64, 96, 75])
@pytest.mark.parametrize("inputs", [X, X - 1])
def test_packed_products_match_mkl(cls, opts, hidden, inputs, monkeypatch):
    """brgemm.h's products on W_hh packed once per call against MKL's bf16 GEMM on the unpacked copy
    (RNNLAB_BRGEMM=0): both multiply the same bf16 operands and accumulate in float32, so the results agree to
    float32 rounding of sums over H terms, which moves a carried h across a bf16 rounding edge now and then: within
    2^-8 relative, an eighth of the bf16 bound (a misplaced block or row offset is off by O(1)); and the packed
    route ran wherever W_hh or W_hhᵀ has an even number of rows. H = 96 leaves a
    narrower last column block (and the reset-before GRU's n block off a block edge: MKL there); at H = 75 every
    W_hh with an odd number of rows stays MKL's (brgemm.h packs rows in pairs), which leaves the LSTM's backward
    (4H rows) packed, its last block 11 wide, and none of the others. The input projection x · W_ihᵀ runs on W_ihᵀ
    packed as well where X is even and the loop computes it (X = 16; at X = 15 MKL's; layer norm's is the
    driver's), so the W_hh rule is checked at X = 15."""
    torch.manual_seed(0)
    layer = contractive(cls(inputs, hidden, num_layers=1, bidirectional=True, engine="native", **opts))
    x = torch.randn(T, B, inputs, requires_grad=True)
    lengths = torch.randint(1, T + 1, (B,))
    lengths[0] = T
    before = torch.ops.rnnlab.brgemm_products()
    packed = run(layer, x, lengths, True)
    rows = {rnnlab.RNN: 1, rnnlab.GRU: 3, rnnlab.LSTM: 3 if opts.get("coupled") else 4}[cls] * hidden
    width = opts.get("proj_size") or hidden
    ran = torch.ops.rnnlab.brgemm_products() > before
    assert ran == (rows % 2 == 0 or width % 2 == 0) if inputs % 2 else ran or not (rows % 2 == 0 or width % 2 == 0)
    monkeypatch.setenv("RNNLAB_BRGEMM", "0")
    before = torch.ops.rnnlab.brgemm_products()
    plain = run(layer, x, lengths, True)
    assert torch.ops.rnnlab.brgemm_products() == before
    errors = [rel(a.float(), b.float()) for a, b in zip(packed, plain)]
    assert max(errors) < 2.0 ** -8, errors


@requires_bf16
@pytest.mark.parametrize("cls,opts", [(rnnlab.RNN, {}), (rnnlab.RNN, dict(nonlinearity="relu")), (rnnlab.LSTM, {}),
                                      (rnnlab.LSTM, dict(coupled=True, peepholes=True)),
                                      (rnnlab.LSTM, dict(proj_size=H // 2)),
                                      (rnnlab.LSTM, dict(recurrent_dropout=0.3, zoneout=0.2)),
                                      (rnnlab.GRU, dict(reset="after"))], ids=str)
@pytest.mark.parametrize("rows", ["0", "1"])
def test_kept_gradient_rows_equal_a_rounding_after_the_loop(cls, opts, rows, monkeypatch):
    """The backward keeps ∂a as each step's product rounds it to bf16 and multiplies that into ∂W_ih, ∂W_hh and ∂x
    (csrc/ops.cpp, da16); RNNLAB_DA16=0 rounds all T·B rows after the loop instead. The same float32 values rounded
    the same way: every output and gradient bit for bit, with lengths, on one loop per direction (two directions) and
    split by row (one direction, RNNLAB_ROWS=1). The GRU keeps none (its first product is not the whole row): the
    switch changes nothing there either. Kept, ∂a in float32 is one step's rows (without peepholes, whose gradient
    reads every step's) and the loop sums them into the bias's gradient a step at a time: the biases' gradients are
    the same sums in another order, so equal to float32 rounding (within 2^-17 relative)."""
    monkeypatch.setenv("RNNLAB_ROWS", rows)
    layer, x, lengths = case(cls, opts)
    if rows == "1":
        torch.manual_seed(0)
        layer = contractive(cls(X, H, num_layers=2, engine="native", **opts))
    kept = run(layer, x, lengths, True)
    monkeypatch.setenv("RNNLAB_DA16", "0")
    after = run(layer, x, lengths, True)
    names = ["out"] * (len(kept) - 1 - len(list(layer.parameters()))) + ["x"] + [n for n, _ in layer.named_parameters()]
    for name, a, b in zip(names, kept, after):
        if name.startswith("bias"):
            assert rel(a, b) < 2.0 ** -17, name
        else:
            assert torch.equal(a, b), name


@requires_bf16
@requires_brgemm
@pytest.mark.parametrize("cls,opts", [(rnnlab.LSTM, {}), (rnnlab.GRU, dict(layer_norm=True)), (rnnlab.RNN, {})],
                         ids=str)
def test_row_gemms_on_packed_products_match_mkl(cls, opts, monkeypatch):
    """Without AMX the GEMMs over T·B rows (∂W_ih, ∂W_hh as (vᵀ · ∂a)ᵀ on ∂a packed; ∂x, accumulated over the two
    directions; layer norm's whole input projection on W_ihᵀ packed) run brgemm.h's products from 2^22 multiply-adds
    (ops.cpp's mm16_packed): at sizes past that, against MKL's bf16 GEMM (RNNLAB_BRGEMM=0), within 2^-8 relative as
    the per-step products are."""
    if ops.bf16_kernel() == "mkl-bf16 (amx)":
        pytest.skip("with AMX the T·B-row GEMMs stay MKL's")
    torch.manual_seed(0)
    layer = contractive(cls(64, 64, num_layers=1, bidirectional=True, engine="native", **opts))
    x = torch.randn(12, 64, 64, requires_grad=True)  # 768 rows: ∂x 768 · 64 · 256 multiply-adds for the LSTM
    lengths = torch.randint(1, 13, (64,))
    lengths[0] = 12
    packed = run(layer, x, lengths, True)
    monkeypatch.setenv("RNNLAB_BRGEMM", "0")
    plain = run(layer, x, lengths, True)
    errors = [rel(a.float(), b.float()) for a, b in zip(packed, plain)]
    assert max(errors) < 2.0 ** -8, errors
