"""Layer variants: a layer equals its cell unrolled by hand, "auto" routes to an exact engine, the fast
engines and every plain-cell consumer refuse, counts are the closed forms, masks are seeded."""

import pytest
import torch

import rnnlab
from rnnlab.analysis import closed_form_parameters, count_parameters

VARIANTS = [
    (rnnlab.LSTM, rnnlab.LSTMCell, dict(layer_norm=True)),
    (rnnlab.LSTM, rnnlab.LSTMCell, dict(peepholes=True)),
    (rnnlab.LSTM, rnnlab.LSTMCell, dict(coupled=True)),
    (rnnlab.LSTM, rnnlab.LSTMCell, dict(layer_norm=True, peepholes=True, coupled=True)),
    (rnnlab.GRU, rnnlab.GRUCell, dict(layer_norm=True)),
    (rnnlab.GRU, rnnlab.GRUCell, dict(layer_norm=True, reset="after")),
]


def randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return module


def cell_of(layer, cell_cls, k, d, opts):
    """The cell holding level k, direction d's parameters (names without the _l{k} suffix)."""
    X = layer.input_size if k == 0 else layer.num_directions * layer.hidden_size
    cell = cell_cls(X, layer.hidden_size, **opts).double()
    sfx = layer._suffix(k, d)
    cell.load_state_dict({n: getattr(layer, n + sfx) for n, _ in cell.named_parameters()})
    return cell


def unrolled(layer, cell_cls, opts, x, lengths):
    """The layer's function from its cells, stepped by hand (x (T, B, X), zero initial state)."""
    T, B = x.shape[:2]
    inp, finals = x, []
    for k in range(layer.num_layers):
        outs = []
        for d in range(layer.num_directions):
            cell = cell_of(layer, cell_cls, k, d, opts)
            state = tuple(torch.zeros(B, layer.hidden_size, dtype=x.dtype) for _ in cell.STATE)
            out = [None] * T
            for t in (reversed(range(T)) if d else range(T)):
                _, new = cell(inp[t], state if len(state) > 1 else state[0])
                new = tuple(new) if isinstance(new, tuple) else (new,)
                live = (t < lengths).unsqueeze(1)
                state = tuple(torch.where(live, n, s) for n, s in zip(new, state))
                out[t] = torch.where(live, new[0], 0.0)
            outs.append(torch.stack(out))
            finals.append(state)
        inp = torch.cat(outs, -1)
    return inp, finals


@pytest.mark.parametrize("layer_cls,cell_cls,opts", VARIANTS)
def test_layer_equals_its_cells_unrolled(layer_cls, cell_cls, opts):
    layer = randomise(layer_cls(3, 4, num_layers=2, bidirectional=True, **opts).double())
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([5, 2, 4])
    out, h_n = layer(x, lengths=lengths)
    want, finals = unrolled(layer, cell_cls, {k: v for k, v in opts.items()}, x, lengths)
    torch.testing.assert_close(out, want, atol=1e-12, rtol=1e-12)
    h_n = h_n[0] if isinstance(h_n, tuple) else h_n
    torch.testing.assert_close(h_n, torch.stack([f[0] for f in finals]), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("layer_cls,cell_cls,opts", VARIANTS)
def test_gradcheck_layer(layer_cls, cell_cls, opts):
    layer = randomise(layer_cls(2, 3, bidirectional=True, **opts).double())
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 2])
    # fast mode: the Jacobian against random directions (the cells' gradchecks are full)
    assert torch.autograd.gradcheck(lambda x, *p: layer(x, lengths=lengths)[0], (x, *layer.parameters()), fast_mode=True)


@pytest.mark.parametrize("cls,opts", [(rnnlab.LSTM, dict(layer_norm=True)), (rnnlab.LSTM, dict(zoneout=0.1)),
                                      (rnnlab.GRU, dict(layer_norm=True))])
def test_auto_runs_the_native_engine_and_torch_refuses(cls, opts):
    # (native equals reference on every variant: tests/engine/test_native_variants.py)
    auto = cls(3, 4, **opts).double()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    assert auto.select_engine(x).name == "native"
    name, value = next(iter(opts.items()))
    with pytest.raises(ValueError, match=rf"engine: 'torch' cannot compute {cls.__name__} with {name}={value!r}.*expected engine='auto' or 'reference'"):
        cls(3, 4, engine="torch", **opts)(torch.randn(6, 2, 3))


def test_plain_layers_are_unchanged():
    assert rnnlab.LSTM(3, 4).variants() == {} and rnnlab.GRU(3, 4).variants() == {}
    assert rnnlab.LSTM(3, 4).extras(0, 0) == {}
    assert rnnlab.LSTM(3, 4).select_engine(torch.randn(2, 1, 3)).name == "auto"  # as before: auto picks per call


def test_parameter_names_follow_torch_naming():
    layer = rnnlab.LSTM(3, 4, num_layers=2, bidirectional=True, layer_norm=True, peepholes=True)
    names = {n for n, _ in layer.named_parameters()}
    for sfx in ("_l0", "_l0_reverse", "_l1", "_l1_reverse"):
        for base in ("weight_ih", "weight_hh", "bias", "ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias",
                     "ln_c_weight", "ln_c_bias", "weight_peep"):
            assert base + sfx in names
    assert tuple(layer.weight_peep_l1_reverse.shape) == (12,)
    assert tuple(layer.ln_ih_weight_l1.shape) == (16,)
    assert set(layer.extras(1, 1)) == {"ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias", "ln_c_weight",
                                       "ln_c_bias", "weight_peep"}
    assert layer.extras(1, 1)["weight_peep"] is layer.weight_peep_l1_reverse
    cifg = rnnlab.LSTM(3, 4, coupled=True)
    assert cifg.gates == ("f", "g", "o") and tuple(cifg.weight_hh_l0.shape) == (12, 4)


@pytest.mark.parametrize("mode,cls,opts", [
    ("lstm", rnnlab.LSTM, dict(layer_norm=True)), ("lstm", rnnlab.LSTM, dict(peepholes=True)),
    ("lstm", rnnlab.LSTM, dict(coupled=True)), ("lstm", rnnlab.LSTM, dict(coupled=True, peepholes=True)),
    ("lstm", rnnlab.LSTM, dict(layer_norm=True, peepholes=True, coupled=True)),
    ("gru", rnnlab.GRU, dict(layer_norm=True)), ("gru", rnnlab.GRU, dict(layer_norm=True, reset="after")),
])
@pytest.mark.parametrize("layers,bi,bias", [(1, False, True), (3, True, False)])
def test_parameter_counts_are_the_closed_forms(mode, cls, opts, layers, bi, bias):
    layer = cls(5, 7, num_layers=layers, bidirectional=bi, bias=bias, **opts)
    reset = opts.get("reset", "before")
    structural = {k: v for k, v in opts.items() if k != "reset"}
    assert count_parameters(layer) == closed_form_parameters(mode, 5, 7, layers, bi, bias, reset, **structural)


def test_closed_form_by_hand_and_refusals():
    # one level, X = 5, H = 7: LSTM 4·(7·12 + 7) = 364; LN adds 4·4·7 + 2·7 = 126; peepholes 21; CIFG: G = 3
    assert closed_form_parameters("lstm", 5, 7, layer_norm=True) == 364 + 126
    assert closed_form_parameters("lstm", 5, 7, peepholes=True) == 364 + 21
    assert closed_form_parameters("lstm", 5, 7, coupled=True, peepholes=True) == 3 * 91 + 14
    assert closed_form_parameters("gru", 5, 7, layer_norm=True) == 3 * 91 + 4 * 21
    with pytest.raises(ValueError, match="peepholes: only for cell 'lstm', got cell 'gru'"):
        closed_form_parameters("gru", 5, 7, peepholes=True)


def test_recurrent_dropout_is_one_mask_per_sequence_from_torchs_rng():
    layer = randomise(rnnlab.LSTM(3, 4, num_layers=2, recurrent_dropout=0.5).double())
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    torch.manual_seed(5)
    out, _ = layer(x)
    torch.manual_seed(5)
    again, _ = layer(x)
    assert torch.equal(out, again)
    # by hand: the runner draws level 0's mask, runs level 0, then draws level 1's; each mask serves every step
    torch.manual_seed(5)
    inp = x
    for k in range(2):
        mask = layer.step_arguments(k, 0, 2)["h_mask"]
        assert set(mask.unique().tolist()) <= {0.0, 2.0}
        state, outs = (torch.zeros(2, 4, dtype=torch.float64),) * 2, []
        for t in range(7):
            new, _ = rnnlab.LSTMCell.equations(inp[t], state, layer.weights(k, 0), h_mask=mask)
            state = new
            outs.append(new[0])
        inp = torch.stack(outs)
    torch.testing.assert_close(out, inp, atol=1e-12, rtol=1e-12)
    layer.eval()
    plain = rnnlab.LSTM(3, 4, num_layers=2).double()
    plain.load_state_dict(layer.state_dict())
    assert layer.select_engine(x).name == plain.select_engine(x).name == "auto"  # evaluation: the plain cell's engine
    torch.testing.assert_close(layer(x)[0], plain(x)[0], atol=0, rtol=0)  # and no mask


def test_zoneout_in_training_keeps_units_and_is_identity_at_eval():
    layer = randomise(rnnlab.GRU(3, 32, zoneout=0.4).double())
    plain = rnnlab.GRU(3, 32).double()
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(20, 8, 3, dtype=torch.float64)
    torch.manual_seed(2)
    out, _ = layer(x)
    prev = torch.zeros(8, 32, dtype=torch.float64)
    kept = []
    for t in range(20):
        new = rnnlab.GRUCell.equations(x[t], (prev,), layer.weights(0, 0))[0][0]
        same = lambda a, b: torch.isclose(a, b, rtol=0, atol=1e-12)  # noqa: E731 (the native engine's rounding)
        assert bool((same(out[t], prev) | same(out[t], new)).all())
        kept.append(same(out[t], prev) & ~same(new, prev))
        prev = out[t]
    assert abs(torch.stack(kept).double().mean().item() - 0.4) < 0.05
    torch.manual_seed(2)
    assert torch.equal(layer(x)[0], out)
    layer.eval()
    torch.testing.assert_close(layer(x)[0], plain(x)[0], atol=0, rtol=0)  # evaluation: the plain update


def test_layer_to_torch_is_refused():
    with pytest.raises(ValueError, match=r"LSTM.to_torch: torch.nn computes the plain cell only; this LSTM has coupled=True"):
        rnnlab.LSTM(3, 4, coupled=True).to_torch()
    with pytest.raises(ValueError, match=r"GRU.to_torch: .* has recurrent_dropout=0.1"):
        rnnlab.GRU(3, 4, reset="after", recurrent_dropout=0.1).to_torch()
    with pytest.raises(ValueError, match=r"LSTM.from_torch: .* has layer_norm=True"):
        rnnlab.LSTM.from_torch(torch.nn.LSTM(3, 4), layer_norm=True)


def test_repr_names_the_variants():
    assert repr(rnnlab.LSTM(3, 4, peepholes=True, zoneout=0.1)) == "LSTM(3, 4, num_layers=1, peepholes=True, zoneout=0.1)"


def test_gradient_analysis_steps_the_variants():
    """‖∂L/∂h_T‖ of a loss on h_T alone is ‖∂L/∂out_T‖: the analysis unrolls the layer-norm LSTM exactly."""
    from rnnlab.analysis.gradients import hidden_gradient_norms

    layer = rnnlab.LSTM(3, 4, layer_norm=True).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    w = torch.randn(2, 4, dtype=torch.float64)
    norms = hidden_gradient_norms(layer, x, lambda out: (out[-1] * w).sum())
    torch.testing.assert_close(norms[-1], w.norm())


def test_active_variants_are_structural_always_and_regularisers_in_training():
    layer = rnnlab.LSTM(3, 4, peepholes=True, zoneout=0.1, recurrent_dropout=0.2)
    assert layer.active_variants() == {"peepholes": True, "recurrent_dropout": 0.2, "zoneout": 0.1}
    assert layer.eval().active_variants() == {"peepholes": True}
    assert rnnlab.GRU(3, 4, zoneout=0.1).eval().active_variants() == {}


def test_engines_called_directly_refuse_variants_in_force():
    from rnnlab.engine.fused import NativeEngine
    from rnnlab.engine.torch_kernel import TorchEngine

    layer = rnnlab.LSTM(3, 4, layer_norm=True)  # (the native engine runs every variant)
    x = torch.randn(5, 2, 3)
    hx = (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match=r"engine: 'torch' cannot compute layer_norm=True \(torch's kernels compute the plain cell\)"):
        TorchEngine().run(layer, x, hx, None, False)
    zoned = rnnlab.LSTM(3, 4, zoneout=0.2).eval()  # at evaluation zoneout is the plain update: the fast engines run it
    plain = rnnlab.LSTM(3, 4).eval()
    plain.load_state_dict(zoned.state_dict())
    torch.testing.assert_close(NativeEngine().run(zoned, x, hx, None, False)[0], plain(x)[0], atol=1e-6, rtol=1e-6)
