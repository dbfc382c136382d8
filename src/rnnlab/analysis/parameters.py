"""Parameter counts: what a module holds, and the seed's closed forms."""

from __future__ import annotations

from torch import nn

GATES = {"rnn": 1, "lstm": 4, "gru": 3, "mingru": 2, "minlstm": 3}
RECURRENT = {"rnn": True, "lstm": True, "gru": True, "mingru": False, "minlstm": False}


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def closed_form_parameters(cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                           bidirectional: bool = False, bias: bool = True, reset: str = "before") -> int:
    """The closed form ``G·(H(X + H) + H)`` per level and direction (G = 1, 4, 3 for RNN, LSTM, GRU;
    +H for GRU reset="after"; no +H·G without bias), summed over levels whose input is X for the
    first and D·H above. minGRU and minLSTM have no recurrent weights: G·(H·X + H), G = 2, 3."""
    if cell not in GATES:
        raise ValueError(f"cell: expected one of {', '.join(repr(c) for c in GATES)}, got {cell!r}")
    G, H, D = GATES[cell], hidden_size, 2 if bidirectional else 1
    total = 0
    for k in range(num_layers):
        X = input_size if k == 0 else D * H
        per = G * (H * (X + (H if RECURRENT[cell] else 0)) + (H if bias else 0))
        if cell == "gru" and reset == "after" and bias:
            per += H
        total += D * per
    return total
