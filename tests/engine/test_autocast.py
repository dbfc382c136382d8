"""Under torch.autocast (CPU) every cell runs on the native engine, and the layers return what torch.nn's
return for the same call: under bfloat16 autocast RNN and LSTM give bf16 ``out`` and ``h_n``, GRU gives
x's own dtype. Inside, float16 autocast and levels too small for the bf16 mode compute exactly float32;
larger levels under bfloat16 run the bf16 mode (tests/engine/test_bf16.py)."""

import pytest
import torch

import rnnlab
from rnnlab.engine import ops

pytestmark = pytest.mark.skipif(not ops.available(), reason="the native operators are not built")

CASES = [(rnnlab.RNN, {}), (rnnlab.RNN, dict(nonlinearity="relu")), (rnnlab.LSTM, {}), (rnnlab.GRU, {}),
         (rnnlab.GRU, dict(reset="after")), (rnnlab.LSTM, dict(layer_norm=True, peepholes=True)),
         (rnnlab.GRU, dict(layer_norm=True))]


def returned_dtype(cls, autocast_dtype, x_dtype):
    """torch.nn's: RNN and LSTM return the autocast dtype, GRU returns x's dtype."""
    return x_dtype if cls is rnnlab.GRU else autocast_dtype


@pytest.mark.parametrize("cls,opts", CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_small_level_under_autocast_computes_float32(cls, opts, dtype):
    """A level below the bf16 mode's threshold (and every level under float16) computes exactly its float32
    result; only the returned dtype differs (gradients exact: the loss's weights are exact in bf16 and fp16)."""
    torch.manual_seed(0)
    layer = cls(5, 6, num_layers=2, bidirectional=True, engine="native", **opts)
    x = torch.randn(7, 3, 5, requires_grad=True)
    lengths = torch.tensor([7, 3, 5])
    weights = torch.randn(7, 3, 12).bfloat16().float()
    runs = []
    for autocast in (True, False):
        with torch.autocast("cpu", dtype=dtype, enabled=autocast):
            out, _ = layer(x, lengths=lengths)
        assert out.dtype == (returned_dtype(cls, dtype, x.dtype) if autocast else torch.float32)
        runs.append([out, *torch.autograd.grad((out.float() * weights).sum(), [x, *layer.parameters()])])
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b.to(a.dtype), atol=0, rtol=0)


@pytest.mark.parametrize("cls,opts", [(rnnlab.RNN, {}), (rnnlab.LSTM, {}), (rnnlab.GRU, dict(reset="after"))],
                         ids=str)
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("unbatched", [False, True])
def test_returned_dtypes_match_torch_nn(cls, opts, x_dtype, unbatched):
    torch.manual_seed(0)
    layer = cls(8, 16, num_layers=2, bidirectional=True, engine="native", **opts)
    reference = layer.to_torch()
    x = torch.randn(5, 8) if unbatched else torch.randn(5, 3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = layer(x.to(x_dtype)), reference(x.to(x_dtype))
    flat = lambda r: [r[0], *(r[1] if isinstance(r[1], tuple) else (r[1],))]  # noqa: E731
    assert [t.dtype for t in flat(got)] == [t.dtype for t in flat(want)]
    assert got[0].dtype == returned_dtype(cls, torch.bfloat16, x_dtype)


@pytest.mark.parametrize("cls", [rnnlab.LSTM, rnnlab.GRU])
def test_bf16_input_from_an_autocast_layer_trains(cls):
    """x (and hx) in bf16, as an autocast nn.Linear gives them: accepted under autocast, cast up
    differentiably; the backward reaches the Linear's weights and the initial state."""
    torch.manual_seed(0)
    proj, layer = torch.nn.Linear(4, 8), cls(8, 16, engine="native")
    h0 = torch.zeros(1, 3, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = proj(torch.randn(6, 3, 4))
        assert x.dtype == torch.bfloat16
        hx = (h0.bfloat16(), h0.bfloat16()) if cls is rnnlab.LSTM else h0.bfloat16()
        out, _ = layer(x, hx)
    out.float().square().sum().backward()
    assert proj.weight.grad is not None and h0.grad is not None and layer.weight_hh_l0.grad.dtype == torch.float32


def test_operator_casts_low_precision_arguments_up_under_autocast():
    """Called directly under autocast with bfloat16 tensors, the operator computes in float32 (differentiably)."""
    torch.manual_seed(0)
    x = torch.randn(4, 2, 3)
    w_ih, w_hh, h0 = torch.randn(1, 4, 3), torch.randn(1, 4, 4), torch.zeros(1, 2, 4)
    want = torch.ops.rnnlab.recurrent_level(x, w_ih, w_hh, h0, None, None, None, None, None, None, None, None, None,
                                            None, None, None, None, cell="rnn_tanh")[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = torch.ops.rnnlab.recurrent_level(x.bfloat16(), w_ih, w_hh, h0, None, None, None, None, None, None, None,
                                               None, None, None, None, None, None, cell="rnn_tanh")[0]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=2e-2, rtol=0)  # x itself was rounded to bf16
