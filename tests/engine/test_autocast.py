"""Under torch.autocast (CPU, bfloat16) the native operators compute in float32 — their own GEMMs included — so
every cell runs (it used to abort the process or refuse bf16) and gives exactly its float32 result and gradients.
(A bf16 path of the loops is separate work; until then autocast changes nothing inside a native level.)"""

import pytest
import torch

import rnnlab
from rnnlab.engine import ops

pytestmark = pytest.mark.skipif(not ops.available(), reason="the native operators are not built")

CASES = [(rnnlab.RNN, {}), (rnnlab.RNN, dict(nonlinearity="relu")), (rnnlab.LSTM, {}), (rnnlab.GRU, {}),
         (rnnlab.GRU, dict(reset="after")), (rnnlab.LSTM, dict(layer_norm=True, peepholes=True)),
         (rnnlab.GRU, dict(layer_norm=True))]


@pytest.mark.parametrize("cls,opts", CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_native_level_under_autocast_equals_float32(cls, opts, dtype):
    torch.manual_seed(0)
    layer = cls(5, 6, num_layers=2, bidirectional=True, engine="native", **opts)
    x = torch.randn(7, 3, 5, requires_grad=True)
    lengths = torch.tensor([7, 3, 5])
    runs = []
    for autocast in (True, False):
        with torch.autocast("cpu", dtype=dtype, enabled=autocast):
            out, _ = layer(x, lengths=lengths)
        assert out.dtype == torch.float32
        runs.append([out, *torch.autograd.grad(out.square().sum(), [x, *layer.parameters()])])
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


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
