"""Shared test helpers: the torch.nn layout of rnnlab's gradients, written independently of
rnnlab's own conversion code."""

import torch

import rnnlab

# every cell of the seed, with the options that select it: one row per distinct function
CELLS_AND_OPTIONS = [
    (rnnlab.RNN, dict(nonlinearity="tanh")),
    (rnnlab.RNN, dict(nonlinearity="relu")),
    (rnnlab.LSTM, {}),
    (rnnlab.GRU, dict(reset="before")),
    (rnnlab.GRU, dict(reset="after")),
]
CELL_IDS = ["rnn-tanh", "rnn-relu", "lstm", "gru-before", "gru-after"]

TORCH_ORDER = {"rnn": ("h",), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}
SEED_ORDER = {"rnn": ("h",), "lstm": ("f", "i", "g", "o"), "gru": ("z", "r", "n")}


def seed_grads_in_torch_layout(mode, g_ih, g_hh, g_b, g_bhn):
    """Gradients w.r.t. rnnlab's parameters, rearranged as the gradients w.r.t. torch's.

    rnnlab's parameters are a linear function of torch's (reorder, sum the two biases, negate the
    GRU's z rows), so torch's gradient is the same rearrangement applied backwards.
    """
    seed, tor = SEED_ORDER[mode], TORCH_ORDER[mode]
    G = len(seed)
    blocks = lambda t: list(t.chunk(G, 0))
    sign = {g: (-1.0 if (mode == "gru" and g == "z") else 1.0) for g in seed}
    out = {}
    for name, t in (("weight_ih", g_ih), ("weight_hh", g_hh), ("bias_ih", g_b)):
        if t is None:
            continue
        b = blocks(t)
        out[name] = torch.cat([sign[g] * b[seed.index(g)] for g in tor])
    if g_b is not None:
        b = blocks(g_b)
        parts = []
        for g in tor:
            if mode == "gru" and g == "n":
                parts.append(g_bhn)
            else:
                parts.append(sign[g] * b[seed.index(g)])
        out["bias_hh"] = torch.cat(parts)
    return out
