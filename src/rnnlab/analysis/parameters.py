"""Parameter counts: what a module holds, and the seed's closed forms."""

from __future__ import annotations

from torch import nn

GATES = {"rnn": 1, "lstm": 4, "gru": 3, "mingru": 2, "minlstm": 3}
RECURRENT = {"rnn": True, "lstm": True, "gru": True, "mingru": False, "minlstm": False}


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
    (LN(C_t)); ``peepholes`` (LSTM) adds 3H, or 2H when coupled."""
    if cell not in GATES:
        raise ValueError(f"cell: expected one of {', '.join(repr(c) for c in GATES)}, got {cell!r}")
    for name, on, cells in (("layer_norm", layer_norm, ("lstm", "gru")), ("peepholes", peepholes, ("lstm",)),
                            ("coupled", coupled, ("lstm",))):
        if on and cell not in cells:
            raise ValueError(f"{name}: only for cell {' or '.join(repr(c) for c in cells)}, got cell {cell!r}")
    G, H, D = GATES[cell] - (1 if coupled else 0), hidden_size, 2 if bidirectional else 1
    total = 0
    for k in range(num_layers):
        X = input_size if k == 0 else D * H
        per = G * (H * (X + (H if RECURRENT[cell] else 0)) + (H if bias else 0))
        if cell == "gru" and reset == "after" and bias:
            per += H
        if layer_norm:
            per += 4 * G * H + (2 * H if cell == "lstm" else 0)
        if peepholes:
            per += (2 if coupled else 3) * H
        total += D * per
    return total
