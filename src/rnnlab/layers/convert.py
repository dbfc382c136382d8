"""Layers to and from torch.nn's RNN, LSTM and GRU modules.

The layout differences (gate order, the two biases, the GRU's update convention) and the per-level
weight conversion are the cells' (:mod:`rnnlab.cells.torch_layout`, each cell's ``SPEC.torch``);
here they are applied to every level and direction. Only GRU reset="after" has a torch.nn
counterpart; reset="before" (the seed's form) is refused, and so are the variants.
"""

from __future__ import annotations

import torch
from torch import nn

from ..cells.torch_layout import (copy, expect, refuse_untranslatable, refuse_variants, structural,
                                  weights_from_torch, weights_to_torch)

PARAMETERS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # torch.nn's per-level names


def layer_from_torch(cls, module: nn.Module, **kwargs):
    spec = cls.cell_class.SPEC
    refuse_untranslatable(spec, cls.__name__, "from_torch")
    expect(module, spec.torch.layer, cls.__name__)
    ref = module.weight_ih_l0
    if getattr(module, "proj_size", 0):  # the LSTM's projection: weight_hr_l{k} (P, H), the same in both layouts
        kwargs = {"proj_size": module.proj_size, **kwargs}
    layer = cls(module.input_size, module.hidden_size, num_layers=module.num_layers, bias=module.bias,
                batch_first=module.batch_first, dropout=float(module.dropout), bidirectional=module.bidirectional,
                **spec.torch.options(module), **kwargs)
    refuse_variants(structural(layer.options), cls.__name__, "from_torch")
    layer = layer.to(dtype=ref.dtype, device=ref.device)
    for k in range(layer.num_layers):
        for d in range(layer.num_directions):
            s = layer._suffix(k, d)
            src = [getattr(module, n + s, None) for n in PARAMETERS + ("weight_hr",)]
            copy(layer.weights(k, d), weights_from_torch(spec, *src))
    return layer


def layer_to_torch(layer) -> nn.Module:
    spec, who = layer.cell_class.SPEC, type(layer).__name__
    refuse_untranslatable(spec, who, "to_torch", layer.options)
    refuse_variants(layer.variants(), who, "to_torch")
    if getattr(layer, "learn_initial_state", False):
        raise ValueError(f"{who}.to_torch: this {who} has learn_initial_state=True (parameters initial_h"
                         f"{', initial_c' if 'c' in layer.cell_class.STATE else ''}), which torch.nn has no counterpart for; "
                         "pass its initial_state(B) as hx to the torch module instead")
    ref = layer.weight_ih_l0
    module = spec.torch.layer(layer.input_size, layer.hidden_size, num_layers=layer.num_layers, bias=layer.bias,
                              batch_first=layer.batch_first, dropout=layer.dropout, bidirectional=layer.bidirectional,
                              device=ref.device, dtype=ref.dtype, **spec.torch.arguments(layer.options),
                              **({"proj_size": layer.proj_size} if getattr(layer, "proj_size", 0) else {}))
    with torch.no_grad():
        for k in range(layer.num_layers):
            for d in range(layer.num_directions):
                s = layer._suffix(k, d)
                w = layer.weights(k, d)
                for n, t in zip(PARAMETERS + ("weight_hr",), (*weights_to_torch(spec, w), w.weight_hr)):
                    if t is not None:
                        getattr(module, n + s).copy_(t)
    return module
