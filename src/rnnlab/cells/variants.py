"""Cell variants: layer normalisation, peepholes, the coupled input-forget gate, recurrent dropout and
zoneout — the options of :class:`rnnlab.LSTMCell`/:class:`rnnlab.GRUCell` and their layers.

Two kinds, kept apart:

* structural options change the cell's function and add parameters — ``layer_norm`` (LSTM, GRU),
  ``peepholes`` and ``coupled`` (LSTM). They are keyword arguments of ``equations``; the added
  parameters reach it as ``extra``, a dict named as below (a layer adds ``_l{k}``/``_reverse`` to
  the names of its parameters and hands ``equations`` the dict of ``extras(k, d)``).
* regularisers act in training only and add no parameters — ``recurrent_dropout`` (Gal &
  Ghahramani 2016: one mask per sequence on h_{t-1} where it enters the gates, passed to
  ``equations`` as ``h_mask``) and ``zoneout`` (Krueger et al. 2016: each unit of the carried state
  keeps its previous value with probability p, a fresh draw every step). At evaluation both are off:
  the plain update (the issue's choice for zoneout, rather than the paper's expectation
  p·s_{t-1} + (1 − p)·s_t). Masks come from torch's global RNG, so seeded runs repeat.

Added parameters (G the number of gate blocks, H the hidden size):

* ``ln_ih_weight``, ``ln_ih_bias`` (G·H): gain α and bias β of LN(W_x x_t), over all G·H units;
* ``ln_hh_weight``, ``ln_hh_bias`` (G·H): the same for LN(W_h h_{t-1}) (the GRU with reset="before"
  normalises its z, r rows together and its candidate's W_hn (r_t * h_{t-1}) on its own, rows 2H:);
* ``ln_c_weight``, ``ln_c_bias`` (H): LSTM, LN(C_t) in h_t = o_t * tanh(LN(C_t));
* ``weight_peep`` (P·H): LSTM peepholes p_f, p_i, p_o in that order (the gate order without g);
  P = 3, or 2 (p_f, p_o) when coupled.

Peephole terms and the gate bias b are added after the normalisation:
LN(W_x x_t) + LN(W_h h_{t-1}) + p * C + b.

Initialisation: gains 1, layer-norm biases 0; peepholes 0 (the cell starts as the plain LSTM), or
U(−1/√H, 1/√H) under ``init="torch"`` like every other weight.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .. import _checks

EPS = 1e-5  # layer norm's ε in (a − μ)/√(σ² + ε)
PEEPHOLE_GATES = ("f", "i", "o")  # rows of weight_peep, in this order (those present)
STRUCTURAL = ("layer_norm", "peepholes", "coupled")
REGULARISERS = ("recurrent_dropout", "zoneout")


def flags(**given: Any) -> dict[str, bool]:
    """The structural options that are on, each checked to be a bool."""
    for name, value in given.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")
    return {name: True for name, value in given.items() if value}


def regularisers(recurrent_dropout: Any, zoneout: Any) -> dict[str, float]:
    """The regularisers that are on (p > 0), each checked to be a probability in [0, 1)."""
    p = {"recurrent_dropout": _checks.probability("recurrent_dropout", recurrent_dropout),
         "zoneout": _checks.probability("zoneout", zoneout)}
    return {k: v for k, v in p.items() if v > 0}


def extra_shapes(gates: tuple[str, ...], hidden_size: int, options: dict[str, Any], *, cell_state: bool) -> dict[str, int]:
    """Name -> length of every added parameter of a cell with these gate blocks and options
    (``cell_state``: the cell has a C_t, which layer norm normalises too)."""
    G, H = len(gates), hidden_size
    shapes = {}
    if options.get("layer_norm"):
        shapes.update(ln_ih_weight=G * H, ln_ih_bias=G * H, ln_hh_weight=G * H, ln_hh_bias=G * H)
        if cell_state:
            shapes.update(ln_c_weight=H, ln_c_bias=H)
    if options.get("peepholes"):
        shapes["weight_peep"] = sum(g in gates for g in PEEPHOLE_GATES) * H
    return shapes


@torch.no_grad()
def init_extra(name: str, p: torch.Tensor, scheme: str, hidden_size: int) -> None:
    """Gains 1, layer-norm biases 0; peepholes 0 (``init="torch"``: U(−1/√H, 1/√H))."""
    if name.endswith("_weight"):
        p.fill_(1.0)
    elif scheme == "torch" and name == "weight_peep":
        bound = 1.0 / math.sqrt(hidden_size)
        p.uniform_(-bound, bound)
    else:
        p.zero_()


def need(extra: dict[str, torch.Tensor] | None, names: tuple[str, ...], option: str, cell_name: str) -> tuple[torch.Tensor, ...]:
    """The added parameters ``names`` from ``extra``, or a clear error when they are missing."""
    missing = [n for n in names if extra is None or n not in extra]
    if missing:
        raise ValueError(
            f"extra: {cell_name}.equations with {option}=True needs the parameters {', '.join(missing)} in extra "
            "(a cell's extras(), a layer's extras(k, d)); got "
            + ("no extra" if extra is None else f"extra with keys {sorted(extra)}")
        )
    return tuple(extra[n] for n in names)


def layer_norm(a: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """LN(a; α, β) = α * (a − μ) / √(σ² + ε) + β, μ and σ² over the last dimension (Ba et al. 2016)."""
    return F.layer_norm(a, (a.shape[-1],), gain, bias, EPS)


def plus(a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """a + b, where b (a bias) may be absent."""
    return a if b is None else a + b


def projections(v: torch.Tensor, weight: torch.Tensor, hidden_size: int, names: tuple[str, ...], blocks: tuple[int, ...],
                ln: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """{name: W_k v} (B, H) for the contiguous gate blocks ``blocks`` of ``weight`` (G·H, ·); with
    ``ln = (gain, bias)`` (G·H each), LN over those blocks' units together, with their rows of gain and bias."""
    H = hidden_size
    if ln is None:
        return {n: v @ weight[k * H:(k + 1) * H].T for n, k in zip(names, blocks)}
    rows = slice(blocks[0] * H, (blocks[-1] + 1) * H)
    a = layer_norm(v @ weight[rows].T, ln[0][rows], ln[1][rows])  # LN(W v), over len(blocks)·H units
    return dict(zip(names, a.chunk(len(blocks), -1)))


def biases(w, names: tuple[str, ...]) -> dict[str, torch.Tensor | None]:
    """{name: b_k} for every gate block (None without bias)."""
    return {n: w.gate(k)[2] for k, n in enumerate(names)}


def peephole_rows(extra, gates: tuple[str, ...], cell_name: str) -> dict[str, torch.Tensor]:
    """{gate: p_gate} (H) from ``weight_peep``, rows in PEEPHOLE_GATES order, those gates present."""
    (p,) = need(extra, ("weight_peep",), "peepholes", cell_name)
    names = tuple(g for g in PEEPHOLE_GATES if g in gates)
    return dict(zip(names, p.chunk(len(names))))


def peep(a: torch.Tensor, p: dict[str, torch.Tensor], gate: str, c: torch.Tensor) -> torch.Tensor:
    """a + p_gate * c for a gate with a peephole; a unchanged without."""
    return a if gate not in p else a + p[gate] * c


def recurrent_input(h_prev: torch.Tensor, h_mask: torch.Tensor | None) -> torch.Tensor:
    """h_{t-1} as the gates see it: times the sequence's dropout mask when there is one."""
    return h_prev if h_mask is None else h_prev * h_mask


def recurrent_mask(p: float, batch: int, hidden_size: int, like: torch.Tensor) -> torch.Tensor:
    """One recurrent dropout mask (B, H): Bernoulli(1 − p) / (1 − p), from torch's RNG."""
    keep = torch.full((batch, hidden_size), 1.0 - p, dtype=like.dtype, device=like.device)
    return torch.bernoulli(keep) / (1.0 - p)


def zoneout_keep(p: float, steps: int, states: int, like: torch.Tensor) -> torch.Tensor:
    """Zoneout's masks for ``steps`` steps of ``states`` states shaped like ``like`` (B, H):
    (steps, states, B, H), 1.0 where a unit keeps its previous value (probability p), drawn from torch's
    RNG step by step, state by state (h, then C) — every engine and the cells draw them here."""
    return torch.rand((steps, states, *like.shape), dtype=like.dtype, device=like.device).lt_(p)


def zoned(keep: torch.Tensor, prev: tuple[torch.Tensor, ...], new: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """One step of zoneout with that step's masks ``keep`` (states, B, H): s_t = s_{t-1} where kept, else s_new."""
    return tuple(torch.where(keep[k] != 0, s_prev, s_new) for k, (s_prev, s_new) in enumerate(zip(prev, new)))


def zoneout(p: float, prev: tuple[torch.Tensor, ...], new: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """s_t = d_t * s_{t-1} + (1 − d_t) * s_new, d_t ~ Bernoulli(p) drawn per unit, per state and per step."""
    return zoned(zoneout_keep(p, 1, len(new), new[0])[0], prev, new)


def describe(variants: dict[str, Any]) -> str:
    """"layer_norm=True, zoneout=0.1" — for error messages."""
    return ", ".join(f"{k}={v!r}" for k, v in variants.items())
