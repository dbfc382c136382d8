"""Cell variants (layer norm, peepholes, CIFG, recurrent dropout, zoneout) against an independent
transcription of the papers' equations, finite differences, and their refusals."""

import pytest
import torch
from torch import nn

import rnnlab

LSTM_VARIANTS = [
    dict(layer_norm=True),
    dict(peepholes=True),
    dict(coupled=True),
    dict(coupled=True, peepholes=True),
    dict(layer_norm=True, peepholes=True),
    dict(layer_norm=True, peepholes=True, coupled=True),
]
GRU_VARIANTS = [dict(layer_norm=True, reset="before"), dict(layer_norm=True, reset="after")]


def randomise(module):
    """Every parameter random (gains and peepholes too, which start at 1 and 0)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return module


def ln(a, gain, bias):
    mu = a.mean(-1, keepdim=True)
    var = ((a - mu) ** 2).mean(-1, keepdim=True)
    return gain * (a - mu) / torch.sqrt(var + 1e-5) + bias


def lstm_by_hand(cell, x, h, c, mask=None):
    """Ba et al. (2016) eqs. 20-22, Gers & Schmidhuber (2000), Greff et al. (2017), fused-matrix form."""
    P = dict(cell.named_parameters())
    names = ("f", "g", "o") if cell.options().get("coupled") else ("f", "i", "g", "o")
    hm = h if mask is None else h * mask
    ax, ah = x @ P["weight_ih"].T, hm @ P["weight_hh"].T
    if "ln_ih_weight" in P:
        ax, ah = ln(ax, P["ln_ih_weight"], P["ln_ih_bias"]), ln(ah, P["ln_hh_weight"], P["ln_hh_bias"])
    a = dict(zip(names, (ax + ah).chunk(len(names), 1)))
    b = dict(zip(names, P["bias"].chunk(len(names))))
    p = {}
    if "weight_peep" in P:
        p = dict(zip([g for g in ("f", "i", "o") if g in names], P["weight_peep"].chunk(len(names) - 1)))
    f = torch.sigmoid(a["f"] + p.get("f", 0) * c + b["f"])
    i = 1 - f if "i" not in names else torch.sigmoid(a["i"] + p.get("i", 0) * c + b["i"])
    c_new = f * c + i * torch.tanh(a["g"] + b["g"])
    o = torch.sigmoid(a["o"] + p.get("o", 0) * c_new + b["o"])
    c_out = ln(c_new, P["ln_c_weight"], P["ln_c_bias"]) if "ln_c_weight" in P else c_new
    return o * torch.tanh(c_out), c_new


def gru_by_hand(cell, x, h, mask=None):
    P = dict(cell.named_parameters())
    H = cell.hidden_size
    hm = h if mask is None else h * mask
    ax = ln(x @ P["weight_ih"].T, P["ln_ih_weight"], P["ln_ih_bias"])
    g_hh, b_hh = P["ln_hh_weight"], P["ln_hh_bias"]
    b = P["bias"]
    if cell.reset == "before":
        ahzr = ln(hm @ P["weight_hh"][: 2 * H].T, g_hh[: 2 * H], b_hh[: 2 * H])
        z = torch.sigmoid(ax[:, :H] + ahzr[:, :H] + b[:H])
        r = torch.sigmoid(ax[:, H:2 * H] + ahzr[:, H:] + b[H:2 * H])
        n = torch.tanh(ax[:, 2 * H:] + ln((r * hm) @ P["weight_hh"][2 * H:].T, g_hh[2 * H:], b_hh[2 * H:]) + b[2 * H:])
    else:
        ah = ln(hm @ P["weight_hh"].T, g_hh, b_hh)
        z = torch.sigmoid(ax[:, :H] + ah[:, :H] + b[:H])
        r = torch.sigmoid(ax[:, H:2 * H] + ah[:, H:2 * H] + b[H:2 * H])
        n = torch.tanh(ax[:, 2 * H:] + b[2 * H:] + r * (ah[:, 2 * H:] + P["bias_hn"]))
    return (1 - z) * h + z * n


@pytest.mark.parametrize("opts", LSTM_VARIANTS)
def test_lstm_variants_equal_the_papers_equations(opts):
    cell = randomise(rnnlab.LSTMCell(3, 4, **opts).double())
    x, h, c = (torch.randn(2, n, dtype=torch.float64) for n in (3, 4, 4))
    h1, (h2, c1) = cell(x, (h, c))
    h_ref, c_ref = lstm_by_hand(cell, x, h, c)
    torch.testing.assert_close(h1, h_ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(c1, c_ref, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("opts", GRU_VARIANTS)
def test_gru_layer_norm_equals_the_papers_equations(opts):
    cell = randomise(rnnlab.GRUCell(3, 4, **opts).double())
    x, h = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    torch.testing.assert_close(cell(x, h)[0], gru_by_hand(cell, x, h), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("cls,opts", [(rnnlab.LSTMCell, o) for o in LSTM_VARIANTS] + [(rnnlab.GRUCell, o) for o in GRU_VARIANTS])
def test_gradcheck(cls, opts):
    cell = randomise(cls(3, 4, **opts).double())
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)

    def f(x, h, c, *ps):
        out, st = cell(x, (h, c) if cls is rnnlab.LSTMCell else h)
        return (out, st.c) if cls is rnnlab.LSTMCell else out

    assert torch.autograd.gradcheck(f, (x, h, c, *cell.parameters()))


def test_parameter_names_shapes_and_initialisation():
    cell = rnnlab.LSTMCell(3, 4, layer_norm=True, peepholes=True)
    shapes = {n: tuple(p.shape) for n, p in cell.named_parameters()}
    assert shapes == {"weight_ih": (16, 3), "weight_hh": (16, 4), "bias": (16,), "ln_ih_weight": (16,),
                      "ln_ih_bias": (16,), "ln_hh_weight": (16,), "ln_hh_bias": (16,), "ln_c_weight": (4,),
                      "ln_c_bias": (4,), "weight_peep": (12,)}
    assert torch.equal(cell.ln_ih_weight, torch.ones(16)) and torch.equal(cell.ln_c_bias, torch.zeros(4))
    assert torch.equal(cell.weight_peep, torch.zeros(12))
    cifg = rnnlab.LSTMCell(3, 4, coupled=True, peepholes=True)
    assert tuple(cifg.weight_ih.shape) == (12, 3) and tuple(cifg.weight_peep.shape) == (8,)
    assert torch.equal(cifg.bias, torch.tensor([1.0] * 4 + [0.0] * 8))  # forget bias 1 on the (f, g, o) rows
    gru = rnnlab.GRUCell(3, 4, reset="after", layer_norm=True)
    assert {n for n, _ in gru.named_parameters()} == {"weight_ih", "weight_hh", "bias", "bias_hn", "ln_ih_weight",
                                                      "ln_ih_bias", "ln_hh_weight", "ln_hh_bias"}


def test_zero_peepholes_are_the_plain_lstm():
    plain = randomise(rnnlab.LSTMCell(3, 4).double())
    peep = rnnlab.LSTMCell(3, 4, peepholes=True).double()  # weight_peep starts at zero
    peep.load_state_dict(plain.state_dict(), strict=False)
    x, h, c = (torch.randn(2, n, dtype=torch.float64) for n in (3, 4, 4))
    torch.testing.assert_close(peep(x, (h, c))[1], plain(x, (h, c))[1], atol=0, rtol=0)


def test_coupled_input_gate_is_one_minus_forget():
    cell = randomise(rnnlab.LSTMCell(3, 4, coupled=True).double())
    _, _, tr = cell(torch.randn(2, 3, dtype=torch.float64), return_gates=True)
    torch.testing.assert_close(tr["i"], 1 - tr["f"], atol=0, rtol=0)


@pytest.mark.parametrize("cls,opts", [(rnnlab.LSTMCell, dict(peepholes=True)), (rnnlab.GRUCell, dict(layer_norm=True))])
def test_recurrent_dropout_masks_h_where_it_enters_the_gates(cls, opts):
    cell = randomise(cls(3, 4, recurrent_dropout=0.5, **opts).double())
    x, h, c = (torch.randn(2, n, dtype=torch.float64) for n in (3, 4, 4))
    mask = cell.recurrent_mask(2)
    assert tuple(mask.shape) == (2, 4) and set(mask.unique().tolist()) <= {0.0, 2.0}
    if cls is rnnlab.LSTMCell:
        got = cell(x, (h, c), h_mask=mask)[1]
        want = lstm_by_hand(cell, x, h, c, mask)
        torch.testing.assert_close(got.h, want[0], atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(got.c, want[1], atol=1e-12, rtol=1e-12)
    else:  # the update (1 - z) * h_{t-1} keeps the undropped h
        torch.testing.assert_close(cell(x, h, h_mask=mask)[0], gru_by_hand(cell, x, h, mask), atol=1e-12, rtol=1e-12)
    cell.eval()  # evaluation: no mask, the plain update
    torch.testing.assert_close(cell(x, h if cls is rnnlab.GRUCell else (h, c))[0],
                               (gru_by_hand(cell, x, h) if cls is rnnlab.GRUCell else lstm_by_hand(cell, x, h, c)[0]))


def test_recurrent_dropout_needs_the_sequence_mask_in_training():
    cell = rnnlab.LSTMCell(3, 4, recurrent_dropout=0.2)
    with pytest.raises(ValueError, match=r"h_mask: .*recurrent_dropout=0.2.*recurrent_mask\(batch\)"):
        cell(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"h_mask: expected shape \(2, 4\), got \(3, 4\)"):
        cell(torch.randn(2, 3), h_mask=torch.ones(3, 4))
    with pytest.raises(ValueError, match="h_mask: expected None for a cell without recurrent_dropout"):
        rnnlab.LSTMCell(3, 4)(torch.randn(2, 3), h_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="recurrent_mask: .*recurrent_dropout=0"):
        rnnlab.LSTMCell(3, 4).recurrent_mask(2)


@pytest.mark.parametrize("cls", [rnnlab.LSTMCell, rnnlab.GRUCell])
def test_zoneout_keeps_each_unit_with_probability_p_in_training_only(cls):
    cell = randomise(cls(3, 64, zoneout=0.3).double())
    plain = cls(3, 64).double()
    plain.load_state_dict(cell.state_dict())
    x = torch.randn(50, 3, dtype=torch.float64)
    state = (torch.randn(50, 64, dtype=torch.float64), torch.randn(50, 64, dtype=torch.float64))
    state = state if cls is rnnlab.LSTMCell else state[0]
    prev = state if cls is rnnlab.LSTMCell else (state,)
    new = plain(x, state)[1]
    new = new if cls is rnnlab.LSTMCell else (new,)
    torch.manual_seed(3)
    got = cell(x, state)[1]
    got = got if cls is rnnlab.LSTMCell else (got,)
    for g, p, n in zip(got, prev, new):
        kept, updated = g == p, g == n
        assert bool((kept | updated).all())
        assert abs(kept.double().mean().item() - 0.3) < 0.03  # 3200 units per state
    torch.manual_seed(3)
    again = cell(x, state)[1]
    assert all(torch.equal(a, b) for a, b in zip(got, again if cls is rnnlab.LSTMCell else (again,)))  # seeded: repeats
    cell.eval()
    torch.testing.assert_close(cell(x, state)[0], plain(x, state)[0], atol=0, rtol=0)  # evaluation: the plain update


def test_equations_without_the_added_parameters_say_so():
    cell = rnnlab.LSTMCell(3, 4, layer_norm=True)
    with pytest.raises(ValueError, match=r"extra: LSTMCell.equations with layer_norm=True needs the parameters ln_ih_weight"):
        rnnlab.LSTMCell.equations(torch.randn(2, 3), (torch.zeros(2, 4),) * 2, cell.weights(), **cell.options())
    with pytest.raises(ValueError, match=r"extra: .*peepholes=True needs the parameters weight_peep.*got extra with keys"):
        rnnlab.LSTMCell.equations(torch.randn(2, 3), (torch.zeros(2, 4),) * 2, cell.weights(), peepholes=True,
                                  extra={"ln_ih_weight": cell.ln_ih_weight})


def test_bad_options_are_refused():
    with pytest.raises(TypeError, match="layer_norm: expected a bool, got int 1"):
        rnnlab.LSTMCell(3, 4, layer_norm=1)
    with pytest.raises(ValueError, match=r"zoneout: expected a float in \[0, 1\), got 1.0"):
        rnnlab.GRUCell(3, 4, zoneout=1.0)
    with pytest.raises(TypeError, match="peepholes"):
        rnnlab.GRUCell(3, 4, peepholes=True)


@pytest.mark.parametrize("cell", [rnnlab.LSTMCell(3, 4, peepholes=True), rnnlab.LSTMCell(3, 4, zoneout=0.1),
                                  rnnlab.GRUCell(3, 4, reset="after", layer_norm=True)])
def test_to_torch_is_refused(cell):
    with pytest.raises(ValueError, match=r"to_torch: torch.nn computes the plain cell only; this \w+ has (peepholes|zoneout|layer_norm)"):
        cell.to_torch()


def test_from_torch_refuses_structural_variants():
    with pytest.raises(ValueError, match=r"LSTMCell.from_torch: .* has coupled=True"):
        rnnlab.LSTMCell.from_torch(nn.LSTMCell(3, 4), coupled=True)
