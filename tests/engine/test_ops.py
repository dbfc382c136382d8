"""The native engine's operators under torch.library.opcheck: schema, fake (meta) shapes, autograd
registration and AOT dispatch with dynamic shapes, for every cell, both dtypes, with and without lengths,
one and two directions, and the variants (layer norm, peepholes, coupled, recurrent dropout, zoneout)."""

import pytest
import torch

from rnnlab.engine import ops

pytestmark = pytest.mark.skipif(not ops.available(), reason="the native operators are not built")

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru_before", "gru_after")
G = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru_before": 3, "gru_after": 3}


def level_args(cell, dtype, lengths, D, variants, coupled=False, T=4, B=3, H=3, X=2, P=0):
    """Arguments of rnnlab::recurrent_level: each per-direction field (D, ...), or None where absent
    (``P`` > 0: an LSTM with a projection to P units, ``w_hr`` (D, P, H))."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s, grad=True: (torch.rand(D, *s, dtype=dtype, generator=g) - 0.5).requires_grad_(grad)  # noqa: E731
    lstm, on = cell == "lstm", variants and cell in ("lstm", "gru_before", "gru_after")
    GX, GH = (3 * H if coupled else G[cell] * H), G[cell] * H
    R = GX if lstm else GH
    keep = (torch.rand(D, T, 2 if lstm else 1, B, H, generator=g) < 0.3).to(dtype) if on else None
    mask = (torch.arange(T).unsqueeze(1) < torch.tensor([T, 2, 1][:B]).unsqueeze(0)).to(dtype) if lengths else None
    S = P or H  # the width of the carried h
    args = (torch.rand(T, B, X, dtype=dtype, generator=g).requires_grad_(), r(GX, X), r(R, S), r(B, S),
            r(B, H) if lstm else None, r(GX), r(H) if cell == "gru_after" else None, mask,
            r((2 if coupled else 3) * H) if on and lstm else None, r(B, H, grad=False) if on else None,
            r(GX) if on else None, r(GX) if on else None, r(R) if on else None, r(R) if on else None,
            r(H) if on and lstm else None, r(H) if on and lstm else None, keep, r(P, H) if P else None)
    return args, {"cell": cell, "coupled": coupled}


CASES = [(cell, dtype, lengths, D, False) for cell in CELLS for dtype in (torch.float32, torch.float64)
         for lengths in (False, True) for D in (1, 2) if not (dtype == torch.float32 and D == 2)]
CASES += [(cell, torch.float64, True, 2, True) for cell in ("lstm", "gru_before", "gru_after")]


@pytest.mark.parametrize("cell,dtype,lengths,D,variants", CASES, ids=str)
def test_opcheck_recurrent_level(cell, dtype, lengths, D, variants):
    args, kwargs = level_args(cell, dtype, lengths, D, variants)
    torch.library.opcheck(torch.ops.rnnlab.recurrent_level.default, args, kwargs)


@pytest.mark.parametrize("peepholes", [False, True])
def test_opcheck_coupled_lstm(peepholes):
    args, kwargs = level_args("lstm", torch.float64, True, 2, peepholes, coupled=True)
    torch.library.opcheck(torch.ops.rnnlab.recurrent_level.default, args, kwargs)


@pytest.mark.parametrize("dtype,lengths,D", [(torch.float64, True, 2), (torch.float64, False, 1), (torch.float32, True, 1)])
def test_opcheck_projected_lstm(dtype, lengths, D):
    args, kwargs = level_args("lstm", dtype, lengths, D, False, H=4, P=2)
    torch.library.opcheck(torch.ops.rnnlab.recurrent_level.default, args, kwargs)


def test_projection_is_refused_where_it_does_not_apply():
    args, kwargs = level_args("gru_after", torch.float64, False, 1, False)
    args = args[:-1] + (torch.rand(1, 2, 3, dtype=torch.float64),)
    with pytest.raises(ValueError, match="w_hr: expected None"):
        torch.ops.rnnlab.recurrent_level(*args, **kwargs)
    args, kwargs = level_args("lstm", torch.float64, False, 1, True, H=4, P=2)
    with pytest.raises(ValueError, match="w_hr: expected None with coupled, peep"):
        torch.ops.rnnlab.recurrent_level(*args, **kwargs)
    args, kwargs = level_args("lstm", torch.float64, False, 1, False, H=4, P=2)
    args = args[:-1] + (torch.rand(1, 3, 4, dtype=torch.float64),)  # P = 3, but W_hh has 2 columns
    with pytest.raises(ValueError, match=r"w_hr: expected a 3-D tensor \(D, P, H\) with D = 1 and P = 2"):
        torch.ops.rnnlab.recurrent_level(*args, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lengths", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_opcheck_linear_recurrence(dtype, lengths, reverse):
    g = torch.Generator().manual_seed(1)
    a, b, h0 = (torch.rand(*s, dtype=dtype, generator=g).requires_grad_() for s in ((5, 3, 4), (5, 3, 4), (3, 4)))
    mask = (torch.arange(5).unsqueeze(1) < torch.tensor([5, 2, 3]).unsqueeze(0)).to(dtype) if lengths else None
    torch.library.opcheck(torch.ops.rnnlab.linear_recurrence.default, (a, b, h0, mask), {"reverse": reverse})


def test_backward_operator_shapes_match_its_fake():
    """The backward operator's fake (used when torch.compile traces a training step) gives its real shapes."""
    for P in (0, 2):
        _shapes_match_fake(*level_args("lstm", torch.float64, True, 2, not P, H=4, P=P))


def _shapes_match_fake(args, kwargs):
    from torch._subclasses.fake_tensor import FakeTensorMode

    args = tuple(a.detach() if a is not None else None for a in args)
    out = torch.ops.rnnlab.recurrent_level(*args, **kwargs)
    grads = (torch.ones_like(out[0]), torch.ones_like(out[1]), None, None)
    real = torch.ops.rnnlab.recurrent_level_backward(*args[:-1], *out, *grads, args[-1], **kwargs)
    with FakeTensorMode() as mode:
        conv = lambda t: mode.from_tensor(t) if isinstance(t, torch.Tensor) else t  # noqa: E731
        fake_in = [conv(a) for a in (*args[:-1], *out, *grads, args[-1])]
        kwargs = dict(kwargs)
        fake = torch.ops.rnnlab.recurrent_level_backward(*fake_in, **kwargs)
    assert [t.shape for t in real] == [t.shape for t in fake]


@pytest.mark.parametrize("cell,P", [(cell, 0) for cell in CELLS] + [("lstm", 2)])
def test_inference_keeps_nothing_and_computes_the_same(cell, P):
    """keep=False (inference): the same states, and of the cells (LSTM) the first and the last only — slots (C_0, C_T)
    forward, (C_T, C_0) for the reverse direction, as the full layout's slots 0 and T — no gates and no reserve."""
    args, kwargs = level_args(cell, torch.float64, True, 2, False, H=4, P=P)
    args = tuple(a.detach() if a is not None else None for a in args)
    full = torch.ops.rnnlab.recurrent_level(*args, **kwargs)
    lean = torch.ops.rnnlab.recurrent_level(*args, **kwargs, keep=False)
    torch.testing.assert_close(lean[0], full[0], atol=0, rtol=0)
    if cell == "lstm":
        T = full[1].shape[1] - 1
        assert T > 1 and lean[1].shape == (full[1].shape[0], 2, *full[1].shape[2:])
        torch.testing.assert_close(lean[1], full[1][:, [0, T]], atol=0, rtol=0)
    else:
        assert lean[1].numel() == 0
    assert lean[2].numel() == 0 and lean[4].numel() == 0
    torch.library.opcheck(torch.ops.rnnlab.recurrent_level.default, args, {**kwargs, "keep": False})


def test_inference_is_refused_where_a_backward_or_a_variant_needs_the_saved_values():
    args, kwargs = level_args("lstm", torch.float64, True, 1, True)  # layer norm and zoneout on
    with pytest.raises(ValueError, match="keep: expected True with layer norm or zoneout"):
        torch.ops.rnnlab.recurrent_level(*(a.detach() if a is not None else None for a in args), **kwargs, keep=False)
    args, kwargs = level_args("gru_after", torch.float64, False, 1, False)
    with pytest.raises(ValueError, match="keep: expected True when an input needs a gradient"):
        torch.ops.rnnlab.recurrent_level(*args, **kwargs, keep=False)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bias", [True, False])
def test_no_input_features_projects_to_the_bias(cell, bias, capfd):
    """X = 0 (an operator call; the layers refuse it): the driver's input projection is the bias alone, the same as
    for inputs of one feature that are all 0, and BLAS is never handed a zero leading dimension."""
    args, kwargs = level_args(cell, torch.float64, True, 2, False)
    args = [a.detach() if a is not None else None for a in args]
    if not bias:
        args[5] = None
    empty, zero = list(args), list(args)
    empty[0], empty[1] = args[0][:, :, :0], args[1][:, :, :0]
    zero[0] = torch.zeros_like(args[0][:, :, :1])
    zero[1] = args[1][:, :, :1]
    got = torch.ops.rnnlab.recurrent_level(*empty, **kwargs)
    want = torch.ops.rnnlab.recurrent_level(*zero, **kwargs)
    torch.testing.assert_close(got[0], want[0], atol=0, rtol=0)
    printed = capfd.readouterr()
    assert "ERROR" not in printed.out + printed.err
