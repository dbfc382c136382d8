"""csrc/small_gemm.h: the per-step recurrent GEMM for a few rows (Loop::small), directly through the test-only
operator rnnlab::small_gemm against torch.mm in float64, and inside the layers against the float64 reference
(ops.cpp's small_rows chooses it for B = 1 against W_hh < 2^18 numbers, and B <= 4 against W_hh <= 2^14)."""

import pytest
import torch

import rnnlab
from rnnlab.engine import ops

pytestmark = pytest.mark.skipif(not ops.available(), reason="the kernel is the compiled operators'")


@pytest.mark.parametrize("M", [1, 2, 3, 4, 5, 8, 9])
@pytest.mark.parametrize("N", [1, 15, 16, 17, 32, 47, 63, 64, 84, 96, 129, 256])
@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
def test_against_a_float64_product(M, N, beta):
    """Every row tile (4, 3, 2, 1 rows), column tile (64, 32, 16) and the leftover columns, odd K included."""
    gen = torch.Generator().manual_seed(M * 1000 + N)
    for K in (1, 7, 64):
        a, b, c = (torch.randn(*shape, generator=gen) for shape in ((M, K), (K, N), (M, N)))
        got = torch.ops.rnnlab.small_gemm(a, b, c, beta)
        want = a.double() @ b.double() + beta * c.double()
        scale = (a.double().abs() @ b.double().abs() + abs(beta) * c.double().abs())
        assert ((got.double() - want).abs() <= 4 * K * 2**-24 * scale + 1e-30).all(), (K, (got - want).abs().max())


def test_beta_zero_never_reads_c():
    """As BLAS: with beta = 0 the old C is not read, so a NaN there does not reach the product."""
    a, b = torch.randn(3, 5), torch.randn(5, 40)
    c = torch.full((3, 40), float("nan"))
    torch.testing.assert_close(torch.ops.rnnlab.small_gemm(a, b, c, 0.0), a @ b, rtol=1e-6, atol=1e-6)


def test_nan_in_the_operands_comes_out():
    a, b = torch.randn(2, 8), torch.randn(8, 70)
    a[1, 3] = float("nan")
    got = torch.ops.rnnlab.small_gemm(a, b, torch.zeros(2, 70), 0.0)
    assert torch.isnan(got[1]).all() and torch.isfinite(got[0]).all()


def test_bad_arguments_are_refused_by_name():
    with pytest.raises(TypeError, match="a: expected float32"):
        torch.ops.rnnlab.small_gemm(torch.zeros(2, 3, dtype=torch.float64), torch.zeros(3, 4), torch.zeros(2, 4), 0.0)
    with pytest.raises(ValueError, match="expected a \\(M, K\\), b \\(K, N\\)"):
        torch.ops.rnnlab.small_gemm(torch.zeros(2, 3), torch.zeros(4, 4), torch.zeros(2, 4), 0.0)


@pytest.mark.parametrize("cls,opts", [(rnnlab.LSTM, {}), (rnnlab.LSTM, dict(peepholes=True, coupled=True)),
                                      (rnnlab.GRU, {}), (rnnlab.GRU, dict(reset="after")), (rnnlab.RNN, {}),
                                      (rnnlab.GRU, dict(layer_norm=True))], ids=str)
@pytest.mark.parametrize("B,H", [(1, 21), (1, 100), (3, 21), (4, 16)])
def test_layers_on_the_small_kernel_match_the_float64_reference(cls, opts, B, H, monkeypatch):
    """float32 layers whose steps run the kernel (H = 21: column tails of every width; the GRU's reset-before
    second product reads W_hhᵀ from column 2H), training and inference, with lengths, match the float64 reference
    to float32 accuracy, and match the same layer on BLAS (RNNLAB_SMALL=0) as closely."""
    torch.manual_seed(0)
    layer = cls(6, H, engine="native", **opts)
    ref = cls(6, H, engine="reference", **opts).double()
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(9, B, 6)
    lengths = torch.tensor([9, 4, 7, 1][:B])
    results = {}
    for name, model, env in (("small", layer, "1"), ("blas", layer, "0"), ("ref", ref, "1")):
        monkeypatch.setenv("RNNLAB_SMALL", env)
        xi = x.to(next(model.parameters()).dtype).requires_grad_()
        with torch.no_grad():
            inference = model(xi, lengths=lengths)[0]
        out, _ = model(xi, lengths=lengths)
        grads = torch.autograd.grad((out**2).sum(), [xi, *model.parameters()])
        results[name] = [t.double() for t in (inference, out, *grads)]
    for small, blas, want in zip(results["small"], results["blas"], results["ref"]):
        torch.testing.assert_close(small, want, rtol=2e-4, atol=2e-5)
        torch.testing.assert_close(small, blas, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("N", [1, 3, 4, 5, 8, 13, 256])
@pytest.mark.parametrize("K", [1, 15, 16, 17, 31, 32, 33, 48, 100, 512])
def test_gemv_against_a_float64_product(N, K):
    """small_gemv, the batch-1 product read from W_hh's rows (Loop::dot, float32): groups of four rows and the rows
    left over, two accumulators over 32s of k, one 16, and the scalar tail."""
    gen = torch.Generator().manual_seed(N * 1000 + K)
    w, a = torch.randn(N, K, generator=gen), torch.randn(K, generator=gen)
    got = torch.ops.rnnlab.small_gemv(w, a)
    want = w.double() @ a.double()
    scale = w.double().abs() @ a.double().abs()
    assert ((got.double() - want).abs() <= 4 * K * 2**-24 * scale + 1e-30).all(), (got - want).abs().max()
    # rows taken last to first (Loop::dot's alternate steps): the same sums, bit for bit
    assert torch.equal(torch.ops.rnnlab.small_gemv(w, a, backwards=True), got)


def test_gemv_refuses_bad_input_by_name():
    with pytest.raises(TypeError, match="w: expected float32"):
        torch.ops.rnnlab.small_gemv(torch.zeros(2, 3, dtype=torch.float64), torch.zeros(3))
    with pytest.raises(ValueError, match="expected CPU tensors w"):
        torch.ops.rnnlab.small_gemv(torch.zeros(2, 3), torch.zeros(4))
