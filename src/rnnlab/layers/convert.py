"""Conversion to and from torch.nn modules.

torch.nn stores the same maths in another layout:

* gate order: LSTM (i, f, g, o) against the seed's (f, i, g, o); GRU (r, z, n) against (z, r, n);
* two biases per gate (``b_ih + b_hh``) against the seed's one — except the GRU's candidate, whose
  ``b_hn`` sits inside ``r ⊙ (W_hn h + b_hn)`` and stays separate (``bias_hn``);
* the GRU update convention: torch's z weighs h_{t-1}, the seed's weighs the candidate, so
  ``z_seed = 1 - z_torch = σ(-a_torch)``: the z rows and bias change sign.

Only GRU reset="after" has a torch.nn counterpart; reset="before" (the seed's form) is refused, and
so are the variants (layer_norm, peepholes, coupled, recurrent_dropout, zoneout; ``from_torch``
refuses the structural ones, which would change the function).
"""

from __future__ import annotations

import torch
from torch import nn

from ..cells.base import Weights
from ..cells.variants import STRUCTURAL

TORCH_GATES = {"rnn": ("h",), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}
NEGATED = {"gru": ("z",)}
TORCH_LAYER = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
TORCH_CELL = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


def _blocks(t: torch.Tensor | None, n: int):
    return [None] * n if t is None else list(t.chunk(n, 0))


def weights_from_torch(mode: str, gates: tuple[str, ...], w_ih, w_hh, b_ih, b_hh) -> Weights:
    """torch's (w_ih, w_hh, b_ih, b_hh) -> the seed's Weights (new tensors, no grad history)."""
    order, G = TORCH_GATES[mode], len(gates)
    Wi, Wh, Bi, Bh = _blocks(w_ih, G), _blocks(w_hh, G), _blocks(b_ih, G), _blocks(b_hh, G)
    wi, wh, b, b_hn = [], [], [], None
    for g in gates:
        j = order.index(g)
        sign = -1.0 if g in NEGATED.get(mode, ()) else 1.0
        wi.append(sign * Wi[j])
        wh.append(sign * Wh[j])
        if b_ih is None:
            continue
        if mode == "gru" and g == "n":
            b.append(Bi[j])
            b_hn = Bh[j].clone()
        else:
            b.append(sign * (Bi[j] + Bh[j]))
    return Weights(torch.cat(wi), torch.cat(wh), torch.cat(b) if b else None, b_hn)


def weights_to_torch(mode: str, gates: tuple[str, ...], w: Weights):
    """The seed's Weights -> torch's (w_ih, w_hh, b_ih, b_hh); b_hh is zero except the GRU's b_hn."""
    order, G = TORCH_GATES[mode], len(gates)
    Wi, Wh, B = _blocks(w.weight_ih, G), _blocks(w.weight_hh, G), _blocks(w.bias, G)
    wi, wh, bi, bh = [None] * G, [None] * G, [None] * G, [None] * G
    for k, g in enumerate(gates):
        j = order.index(g)
        sign = -1.0 if g in NEGATED.get(mode, ()) else 1.0
        wi[j], wh[j] = sign * Wi[k], sign * Wh[k]
        if w.bias is not None:
            bi[j] = sign * B[k]
            bh[j] = w.bias_hn if (mode == "gru" and g == "n") else torch.zeros_like(B[k])
    if w.bias is None:
        return torch.cat(wi), torch.cat(wh), None, None
    return torch.cat(wi), torch.cat(wh), torch.cat(bi), torch.cat(bh)


def _expect(module, kind: type, who: str):
    if not isinstance(module, kind):
        raise TypeError(f"module: {who}.from_torch expects a torch.nn.{kind.__name__}, got {type(module).__name__}")


def _copy(dst: Weights, src: Weights) -> None:
    with torch.no_grad():
        for d, s in zip(dst, src):
            if d is not None:
                d.copy_(s)


def _options(mode: str, module) -> dict:
    if mode == "rnn":
        return {"nonlinearity": module.nonlinearity}
    if mode == "gru":
        return {"reset": "after"}
    return {}


def _refuse_variants(found: dict, who: str, what: str) -> None:
    """torch.nn's modules compute the plain cells: no layer norm, peepholes, coupled gates,
    recurrent dropout or zoneout."""
    if found:
        raise ValueError(f"{who}.{what}: torch.nn computes the plain cell only; this {who} has "
                         f"{', '.join(f'{k}={v!r}' for k, v in found.items())}, which torch.nn has no module for; expected none")


def _refuse_before(mode: str, options: dict, who: str) -> None:
    if mode not in TORCH_LAYER:
        raise ValueError(f"{who}.to_torch: torch.nn has no {who} (only RNN, LSTM and GRU with reset='after')")
    if mode == "gru" and options.get("reset") != "after":
        raise ValueError(
            f"{who}.to_torch: torch.nn.GRU computes reset='after' (r applied to W_hn h + b_hn); this GRU has "
            "reset='before' (the seed's form), which torch.nn has no module for"
        )


def layer_from_torch(cls, module: nn.Module, **kwargs):
    mode = cls.cell_class.__name__[:-4].lower()
    _expect(module, TORCH_LAYER[mode], cls.__name__)
    if getattr(module, "proj_size", 0):
        raise ValueError(f"module: proj_size = {module.proj_size} has no rnnlab counterpart; expected 0")
    ref = module.weight_ih_l0
    layer = cls(module.input_size, module.hidden_size, num_layers=module.num_layers, bias=module.bias,
                batch_first=module.batch_first, dropout=float(module.dropout), bidirectional=module.bidirectional,
                **_options(mode, module), **kwargs)
    _refuse_variants({k: v for k, v in layer.options.items() if k in STRUCTURAL}, cls.__name__, "from_torch")
    layer = layer.to(dtype=ref.dtype, device=ref.device)
    for k in range(layer.num_layers):
        for d in range(layer.num_directions):
            s = layer._suffix(k, d)
            src = [getattr(module, n + s, None) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            _copy(layer.weights(k, d), weights_from_torch(mode, layer.cell_class.GATES, *src))
    return layer


def layer_to_torch(layer) -> nn.Module:
    mode = layer.mode
    _refuse_before(mode, layer.options, type(layer).__name__)
    _refuse_variants(layer.variants(), type(layer).__name__, "to_torch")
    kw = {"nonlinearity": layer.options["nonlinearity"]} if mode == "rnn" else {}
    ref = layer.weight_ih_l0
    module = TORCH_LAYER[mode](layer.input_size, layer.hidden_size, num_layers=layer.num_layers, bias=layer.bias,
                               batch_first=layer.batch_first, dropout=layer.dropout, bidirectional=layer.bidirectional,
                               device=ref.device, dtype=ref.dtype, **kw)
    with torch.no_grad():
        for k in range(layer.num_layers):
            for d in range(layer.num_directions):
                s = layer._suffix(k, d)
                for n, t in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"),
                                weights_to_torch(mode, layer.cell_class.GATES, layer.weights(k, d))):
                    if t is not None:
                        getattr(module, n + s).copy_(t)
    return module


def cell_from_torch(cls, module: nn.Module, **kwargs):
    mode = cls.__name__[:-4].lower()
    _expect(module, TORCH_CELL[mode], cls.__name__)
    ref = module.weight_ih
    cell = cls(module.input_size, module.hidden_size, bias=module.bias, **_options(mode, module), **kwargs)
    _refuse_variants({k: v for k, v in cell.options().items() if k in STRUCTURAL}, cls.__name__, "from_torch")
    cell = cell.to(dtype=ref.dtype, device=ref.device)
    _copy(cell.weights(), weights_from_torch(mode, cls.GATES, module.weight_ih, module.weight_hh,
                                             module.bias_ih, module.bias_hh))
    return cell


def cell_to_torch(cell) -> nn.Module:
    mode = type(cell).__name__[:-4].lower()
    _refuse_before(mode, cell.options(), type(cell).__name__)
    _refuse_variants(cell.variants(), type(cell).__name__, "to_torch")
    kw = {"nonlinearity": cell.nonlinearity} if mode == "rnn" else {}
    ref = cell.weight_ih
    module = TORCH_CELL[mode](cell.input_size, cell.hidden_size, bias=cell.bias is not None, device=ref.device,
                              dtype=ref.dtype, **kw)
    with torch.no_grad():
        for n, t in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"),
                        weights_to_torch(mode, cell.GATES, cell.weights())):
            if t is not None:
                getattr(module, n).copy_(t)
    return module
