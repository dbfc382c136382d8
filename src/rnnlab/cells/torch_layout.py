"""The seed's parameters in torch.nn's layout, and cells to and from torch.nn cells.

torch.nn stores the same maths in another layout (each cell's ``SPEC.torch`` names its part):

* gate order: LSTM (i, f, g, o) against the seed's (f, i, g, o); GRU (r, z, n) against (z, r, n);
* two biases per gate (``b_ih + b_hh``) against the seed's one — except the GRU's candidate, whose
  ``b_hn`` sits inside ``r ⊙ (W_hn h + b_hn)`` and stays separate (``bias_hn``);
* the GRU update convention: torch's z weighs h_{t-1}, the seed's weighs the candidate, so
  ``z_seed = 1 - z_torch = σ(-a_torch)``: the z rows and bias change sign.

Only GRU reset="after" has a torch.nn counterpart; reset="before" (the seed's form) is refused, and
so are the variants (layer_norm, peepholes, coupled, recurrent_dropout, zoneout; ``from_torch``
refuses the structural ones, which would change the function). The layers' conversions
(``rnnlab.layers.convert``) use the same pieces.
"""

from __future__ import annotations

import torch
from torch import nn

from .weights import Weights
from .spec import CellSpec
from .variants import STRUCTURAL


def _blocks(t: torch.Tensor | None, n: int):
    return [None] * n if t is None else list(t.chunk(n, 0))


def weights_from_torch(spec: CellSpec, w_ih, w_hh, b_ih, b_hh, w_hr=None) -> Weights:
    """torch's (w_ih, w_hh, b_ih, b_hh) (and an LSTM's projection ``w_hr``, the same in both layouts, passed
    through) -> the seed's Weights (new tensors, no grad history, but for ``w_hr`` itself)."""
    layout, gates = spec.torch, spec.gates
    order, G = layout.gates, len(gates)
    Wi, Wh, Bi, Bh = _blocks(w_ih, G), _blocks(w_hh, G), _blocks(b_ih, G), _blocks(b_hh, G)
    wi, wh, b, b_hn = [], [], [], None
    for g in gates:
        j = order.index(g)
        sign = -1.0 if g in layout.negated else 1.0
        wi.append(sign * Wi[j])
        wh.append(sign * Wh[j])
        if b_ih is None:
            continue
        if g == layout.separate_bias:
            b.append(Bi[j])
            b_hn = Bh[j].clone()
        else:
            b.append(sign * (Bi[j] + Bh[j]))
    return Weights(torch.cat(wi), torch.cat(wh), torch.cat(b) if b else None, b_hn, w_hr)


def weights_to_torch(spec: CellSpec, w: Weights):
    """The seed's Weights -> torch's (w_ih, w_hh, b_ih, b_hh); b_hh is zero except the GRU's b_hn."""
    layout, gates = spec.torch, spec.gates
    order, G = layout.gates, len(gates)
    Wi, Wh, B = _blocks(w.weight_ih, G), _blocks(w.weight_hh, G), _blocks(w.bias, G)
    wi, wh, bi, bh = [None] * G, [None] * G, [None] * G, [None] * G
    for k, g in enumerate(gates):
        j = order.index(g)
        sign = -1.0 if g in layout.negated else 1.0
        wi[j], wh[j] = (Wi[k], Wh[k]) if sign == 1.0 else (-Wi[k], -Wh[k])  # (no copy of a block kept as it is)
        if w.bias is not None:
            bi[j] = B[k] if sign == 1.0 else -B[k]
            bh[j] = w.bias_hn if g == layout.separate_bias else torch.zeros_like(B[k])
    if w.bias is None:
        return torch.cat(wi), torch.cat(wh), None, None
    return torch.cat(wi), torch.cat(wh), torch.cat(bi), torch.cat(bh)


def expect(module, kind: type, who: str):
    if not isinstance(module, kind):
        raise TypeError(f"module: {who}.from_torch expects a torch.nn.{kind.__name__}, got {type(module).__name__}")


def copy(dst: Weights, src: Weights) -> None:
    with torch.no_grad():
        for d, s in zip(dst, src):
            if d is not None:
                d.copy_(s)


def refuse_variants(found: dict, who: str, what: str) -> None:
    """torch.nn's modules compute the plain cells: no layer norm, peepholes, coupled gates,
    recurrent dropout or zoneout."""
    if found:
        raise ValueError(f"{who}.{what}: torch.nn computes the plain cell only; this {who} has "
                         f"{', '.join(f'{k}={v!r}' for k, v in found.items())}, which torch.nn has no module for; expected none")


def refuse_untranslatable(spec: CellSpec, who: str, what: str, options: dict | None = None) -> None:
    """A cell torch.nn has no module for (minGRU, minLSTM), or ``options`` it does not compute (GRU reset="before")."""
    if spec.torch is None:
        raise ValueError(f"{who}.{what}: torch.nn has no {who} (only RNN, LSTM and GRU with reset='after')")
    if options is not None and spec.torch.op(options) is None:
        raise ValueError(f"{who}.{what}: {spec.torch.no_module}")


def structural(options: dict) -> dict:
    """The structural variants among ``options`` (which change the function torch.nn computes)."""
    return {k: v for k, v in options.items() if k in STRUCTURAL}


def cell_from_torch(cls, module: nn.Module, **kwargs):
    """The ``cls`` cell computing exactly the function of the torch.nn cell ``module``."""
    spec = cls.SPEC
    refuse_untranslatable(spec, cls.__name__, "from_torch")
    expect(module, spec.torch.cell, cls.__name__)
    ref = module.weight_ih
    cell = cls(module.input_size, module.hidden_size, bias=module.bias, **spec.torch.options(module), **kwargs)
    refuse_variants(structural(cell.options()), cls.__name__, "from_torch")
    cell = cell.to(dtype=ref.dtype, device=ref.device)
    copy(cell.weights(), weights_from_torch(spec, module.weight_ih, module.weight_hh, module.bias_ih, module.bias_hh))
    return cell


def cell_to_torch(cell) -> nn.Module:
    """The torch.nn cell computing exactly ``cell``'s function."""
    spec, options, who = cell.SPEC, cell.options(), type(cell).__name__
    refuse_untranslatable(spec, who, "to_torch", options)
    refuse_variants(cell.variants(), who, "to_torch")
    ref = cell.weight_ih
    module = spec.torch.cell(cell.input_size, cell.hidden_size, bias=cell.bias is not None, device=ref.device,
                             dtype=ref.dtype, **spec.torch.arguments(options))
    with torch.no_grad():
        for n, t in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), weights_to_torch(spec, cell.weights())):
            if t is not None:
                getattr(module, n).copy_(t)
    return module
