"""csrc/transpose.h: the W_hhᵀ (and W_hrᵀ) every call makes, in 16 × 16 (float32) or 8 × 8 (float64) register tiles
plus a plain loop at the edges, held exactly to torch's transpose through the test-only operator rnnlab::transpose."""

import pytest
import torch

from rnnlab.engine import ops

pytestmark = pytest.mark.skipif(not ops.available(), reason="the transpose is the compiled operators'")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", [1, 7, 8, 15, 16, 17, 33, 256])
@pytest.mark.parametrize("cols", [1, 8, 9, 16, 31, 64, 100])
def test_equals_torch_transpose(dtype, rows, cols):
    """Whole tiles, partial tiles on either edge, and matrices smaller than one tile: an exact copy, so equal."""
    w = torch.randn(rows, cols, dtype=dtype)
    got = torch.ops.rnnlab.transpose(w)
    assert got.shape == (cols, rows) and got.is_contiguous()
    assert torch.equal(got, w.t())


def test_values_move_bit_for_bit():
    """NaN, infinities, signed zeros and subnormals are moved, never computed on (the tiles are shuffles)."""
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 1e-40, -1e-45, 3.0])
    w = special.repeat(40)[:17 * 18].view(17, 18)
    got = torch.ops.rnnlab.transpose(w)
    assert torch.equal(got.view(torch.int32), w.t().contiguous().view(torch.int32))


def test_layers_see_the_transposed_weights():
    """The layers' inference path (which runs on W_hhᵀ) against torch.nn with the same weights, at a width that is not
    a multiple of 16 (the tiles' edge loop): a wrong W_hhᵀ would not be close."""
    import rnnlab

    torch.manual_seed(0)
    peer = torch.nn.LSTM(13, 37)
    ours = rnnlab.LSTM.from_torch(peer)
    x = torch.randn(20, 1, 13)
    with torch.inference_mode():
        a, b = ours(x)[0], peer(x)[0]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad, message", [(torch.zeros(3), "2-D"), (torch.zeros(2, 2, dtype=torch.int32), "float32"),
                                           (torch.zeros(2, 2, dtype=torch.bfloat16), "float32")])
def test_bad_input_is_refused_by_name(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        torch.ops.rnnlab.transpose(bad)
