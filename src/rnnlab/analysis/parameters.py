"""Parameter counts: what a module holds, and the seed's closed forms."""

from __future__ import annotations

from torch import nn

from ..cells.spec import SPECS


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def closed_form_parameters(cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                           bidirectional: bool = False, bias: bool = True, reset: str = "before", *,
                           layer_norm: bool = False, peepholes: bool = False, coupled: bool = False) -> int:
    """The closed form ``G·(H(X + H) + H)`` per level and direction (G = 1, 4, 3 for RNN, LSTM, GRU;
    +H for GRU reset="after"; no +H·G without bias), summed over levels whose input is X for the
    first and D·H above. minGRU and minLSTM have no recurrent weights: G·(H·X + H), G = 2, 3.

    Variants (LSTM, GRU; see :mod:`rnnlab.cells.variants`): ``coupled`` (LSTM) has G = 3;
    ``layer_norm`` adds 4·G·H (gain and bias of LN(W_x x) and of LN(W_h h)), and for the LSTM 2H more
    (LN(C_t)); ``peepholes`` (LSTM) adds 3H, or 2H when coupled. Each cell's ``SPEC.parameters``
    writes its form out."""
    if cell not in SPECS:
        raise ValueError(f"cell: expected one of {', '.join(repr(c) for c in SPECS)}, got {cell!r}")
    structural = {"layer_norm": layer_norm, "peepholes": peepholes, "coupled": coupled}
    for name, on in structural.items():
        if on and name not in SPECS[cell].structural:
            takers = [c for c, spec in SPECS.items() if name in spec.structural]
            raise ValueError(f"{name}: only for cell {' or '.join(repr(c) for c in takers)}, got cell {cell!r}")
    options = {"reset": reset, **{k: True for k, on in structural.items() if on}}
    return SPECS[cell].layer_parameters(input_size, hidden_size, num_layers, bidirectional, bias, options)
