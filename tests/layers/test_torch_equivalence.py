"""Layers equal torch.nn through from_torch/to_torch: outputs, final states and every gradient."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnlab
from helpers import seed_grads_in_torch_layout

KINDS = {
    "rnn-tanh": (nn.RNN, rnnlab.RNN, dict(nonlinearity="tanh")),
    "rnn-relu": (nn.RNN, rnnlab.RNN, dict(nonlinearity="relu")),
    "lstm": (nn.LSTM, rnnlab.LSTM, {}),
    "gru-after": (nn.GRU, rnnlab.GRU, dict(reset="after")),
}


@st.composite
def configs(draw):
    return dict(
        kind=draw(st.sampled_from(sorted(KINDS))),
        T=draw(st.integers(1, 6)),
        B=draw(st.integers(1, 4)),
        X=draw(st.integers(1, 5)),
        H=draw(st.integers(1, 5)),
        num_layers=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bias=draw(st.booleans()),
        form=draw(st.sampled_from(["padded", "packed", "unbatched"])),
        with_hx=draw(st.booleans()),
        direction=draw(st.sampled_from(["from_torch", "to_torch"])),
        seed=draw(st.integers(0, 2**16)),
    )


def _run_pair(cfg):
    torch.manual_seed(cfg["seed"])
    torch_cls, our_cls, opts = KINDS[cfg["kind"]]
    mode = cfg["kind"].split("-")[0]
    args = (cfg["X"], cfg["H"])
    kw = dict(num_layers=cfg["num_layers"], bias=cfg["bias"], batch_first=cfg["batch_first"], bidirectional=cfg["bidirectional"])
    if cfg["direction"] == "from_torch":
        ref = torch_cls(*args, **kw, **{k: v for k, v in opts.items() if k != "reset"})
        ours = our_cls.from_torch(ref)
    else:
        ours = our_cls(*args, **kw, **opts)
        ref = ours.to_torch()
    T, B, X, H = cfg["T"], cfg["B"], cfg["X"], cfg["H"]
    L = cfg["num_layers"] * (2 if cfg["bidirectional"] else 1)
    unbatched = cfg["form"] == "unbatched"
    shape = (T, X) if unbatched else ((B, T, X) if cfg["batch_first"] else (T, B, X))
    x = torch.randn(*shape, requires_grad=True)
    hx_shape = (L, H) if unbatched else (L, B, H)
    hx = [torch.randn(*hx_shape, requires_grad=True) for _ in range(2 if mode == "lstm" else 1)]
    inp = x
    if cfg["form"] == "packed":
        lengths = torch.randint(1, T + 1, (B,))
        inp = pack_padded_sequence(x, lengths, batch_first=cfg["batch_first"], enforce_sorted=False)
    h_arg = None
    if cfg["with_hx"]:
        h_arg = tuple(hx) if mode == "lstm" else hx[0]
    return mode, ref, ours, inp, h_arg, [x] + (hx if cfg["with_hx"] else [])


def _loss(out, h_n, proj):
    data = out.data if isinstance(out, PackedSequence) else out
    states = h_n if isinstance(h_n, tuple) else (h_n,)
    g = torch.Generator().manual_seed(proj)
    loss = (data * torch.randn(data.shape, generator=g)).sum()
    for s in states:
        loss = loss + (s * torch.randn(s.shape, generator=g)).sum()
    return loss


@settings(max_examples=150, deadline=None)
@given(configs())
def test_layer_equals_torch(cfg):
    mode, ref, ours, inp, h_arg, leaves = _run_pair(cfg)
    out_r, hn_r = ref(inp, h_arg)
    out_o, hn_o = ours(inp, h_arg)
    if isinstance(out_r, PackedSequence):
        assert isinstance(out_o, PackedSequence)
        assert torch.equal(out_r.batch_sizes, out_o.batch_sizes)
        assert torch.equal(out_r.sorted_indices, out_o.sorted_indices)
        torch.testing.assert_close(out_o.data, out_r.data, atol=1e-5, rtol=1e-5)
    else:
        torch.testing.assert_close(out_o, out_r, atol=1e-5, rtol=1e-5)
    for a, b in zip(hn_o if mode == "lstm" else (hn_o,), hn_r if mode == "lstm" else (hn_r,)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)

    torch_params = dict(ref.named_parameters())
    our_params = dict(ours.named_parameters())
    g_ref = torch.autograd.grad(_loss(out_r, hn_r, 1), leaves + list(torch_params.values()), retain_graph=True)
    g_our = torch.autograd.grad(_loss(out_o, hn_o, 1), leaves + list(our_params.values()))
    n = len(leaves)
    for a, b in zip(g_our[:n], g_ref[:n]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    ref_by_name = dict(zip(torch_params, g_ref[n:]))
    our_by_name = dict(zip(our_params, g_our[n:]))
    for k in range(ours.num_layers):
        for sfx in [f"_l{k}", f"_l{k}_reverse"][: ours.num_directions]:
            mapped = seed_grads_in_torch_layout(
                mode, our_by_name["weight_ih" + sfx], our_by_name["weight_hh" + sfx],
                our_by_name.get("bias" + sfx), our_by_name.get("bias_hn" + sfx))
            for name, g in mapped.items():
                torch.testing.assert_close(g, ref_by_name[name + sfx], atol=1e-5, rtol=1e-5)
