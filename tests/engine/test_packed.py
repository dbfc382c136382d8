"""RNNLAB_PACK=1: the recurrent weight packed once per call (MKL's cblas_sgemm_pack) gives the unpacked loops'
results, forward and backward, for every cell (float32; float64 is never packed)."""

from __future__ import annotations

import pytest
import torch

import rnnlab
from rnnlab.engine import ops

pytestmark = pytest.mark.skipif(not ops.available(), reason="the native operators are not built")


@pytest.mark.parametrize("make", [lambda: rnnlab.LSTM(6, 16, bidirectional=True), lambda: rnnlab.GRU(6, 16),
                                  lambda: rnnlab.GRU(6, 16, reset="after"), lambda: rnnlab.RNN(6, 16),
                                  lambda: rnnlab.LSTM(6, 16, proj_size=5)])
def test_packed_weights_give_the_same_results(make, monkeypatch):
    torch.manual_seed(0)
    layer = make()
    layer.engine = "native"
    x = torch.randn(9, 4, 6)
    lengths = torch.tensor([9, 3, 7, 1])

    def run():
        out, state = layer(x, lengths=lengths)
        parts = state if isinstance(state, tuple) else (state,)
        loss = out.square().sum() + sum(p.sum() for p in parts)
        return [out.detach(), *(p.detach() for p in parts), *torch.autograd.grad(loss, list(layer.parameters()))]

    monkeypatch.setenv("RNNLAB_PACK", "0")
    plain = run()
    monkeypatch.setenv("RNNLAB_PACK", "1")
    packed = run()
    for a, b in zip(packed, plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru-after", "rnn"])
def test_packing_follows_the_l2_rule(cell, monkeypatch):
    """Unset, RNNLAB_PACK packs where the block of W_hh one thread multiplies by every step is larger than a core's L2
    (blas.h's PackedB::wanted), and not where it fits; the packed results are the unpacked ones. (Where MKL runs the
    products: brgemm.h's blocked float32 products, which replace it on some CPUs, are off here.)"""
    monkeypatch.delenv("RNNLAB_PACK", raising=False)
    monkeypatch.setenv("RNNLAB_BRGEMM_F32", "0")
    l2 = torch.ops.rnnlab.l2_bytes()
    make = {"lstm": rnnlab.LSTM, "rnn": rnnlab.RNN, "gru-after": lambda x, h: rnnlab.GRU(x, h, reset="after")}[cell]
    gates = {"lstm": 4, "gru-after": 3, "rnn": 1}[cell]
    big = 64
    while gates * big * big * 4 <= 2 * l2:  # W_hh over two threads (or two parts) still past the L2
        big *= 2
    if big > 2048:
        pytest.skip(f"a core's L2 of {l2} bytes needs too large a layer for a test")
    torch.manual_seed(0)
    for H, packs in ((32, False), (big, True)):
        layer = make(8, H)
        layer.engine = "native"
        x = torch.randn(3, 16, 8, requires_grad=True)

        def run():
            out, _ = layer(x)
            return [out.detach(), *torch.autograd.grad(out.square().sum(), [x, layer.weight_hh_l0])]

        before = torch.ops.rnnlab.sgemm_packs()
        default = run()
        assert (torch.ops.rnnlab.sgemm_packs() > before) == packs, (H, l2)
        monkeypatch.setenv("RNNLAB_PACK", "0")
        plain = run()
        monkeypatch.delenv("RNNLAB_PACK")
        for a, b in zip(default, plain):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_training_packs_from_a_block_of_the_l2s_size(monkeypatch):
    """A training loop (the forward that keeps its steps, and the backward) packs where one thread's block of W_hh is
    exactly a core's L2 — its steps also stream the saved gates and states through that cache — while inference keeps
    the strict rule (blas.h's PackedB::wanted); the results are the unpacked ones. The LSTM's W_hh, 4H × H float32s,
    runs its per-step GEMM over torch's threads on one loop: a thread count is chosen that makes its block the L2.
    (MKL's rule: brgemm.h's blocked float32 products are off here.)"""
    import math

    monkeypatch.delenv("RNNLAB_PACK", raising=False)
    monkeypatch.setenv("RNNLAB_BRGEMM_F32", "0")
    l2 = torch.ops.rnnlab.l2_bytes()
    for threads in range(2, 9):
        H = math.isqrt(l2 * threads // 16)
        if 16 * H * H == l2 * threads and H <= 1024:
            break
    else:
        pytest.skip(f"no LSTM width up to 1024 gives a block of exactly the L2 ({l2} bytes) over 2-8 threads")
    before_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        layer = rnnlab.LSTM(8, H, engine="native")
        x = torch.randn(2, 4, 8)  # 4 rows: one loop in training (no split by row or by unit at these sizes)
        monkeypatch.setenv("RNNLAB_SPLIT", "0")  # inference on one loop too, its GEMM over the same threads
        with torch.no_grad():
            before = torch.ops.rnnlab.sgemm_packs()
            layer(x)
            assert torch.ops.rnnlab.sgemm_packs() == before  # inference: the block fits, not packed
        monkeypatch.delenv("RNNLAB_SPLIT")

        def run():
            out, _ = layer(x)
            return [out.detach(), *torch.autograd.grad(out.square().sum(), [layer.weight_ih_l0, layer.weight_hh_l0])]

        before = torch.ops.rnnlab.sgemm_packs()
        default = run()
        assert torch.ops.rnnlab.sgemm_packs() >= before + 2  # forward and backward
        monkeypatch.setenv("RNNLAB_PACK", "0")
        plain = run()
        for a, b in zip(default, plain):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    finally:
        torch.set_num_threads(before_threads)
