"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): the seed's GRU and LSTM with
gates that see only x_t, so a whole sequence can be computed by a parallel scan over time.

Both are linear recurrences ``h_t = a_t * h_{t-1} + b_t`` whose coefficients depend on x_t alone.
``equations`` computes one step (the sequential form, used at inference and as the reference);
``log_coefficients`` gives ``log a_t`` and ``log b_t`` for all steps at once, which the scan engine
(:mod:`rnnlab.engine.scan`) turns into every h_t with a cumulative log-sum-exp; ``coefficients``
gives a_t and b_t themselves, for the native engine's compiled loop (:mod:`rnnlab.engine.linear`).

The candidate passes through ``g(a) = a + 1/2 for a ≥ 0, σ(a) for a < 0`` (continuous, positive),
as in the paper's log-space version, so that ``log b_t`` exists.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import RecurrentCell, Weights
from .spec import CellSpec, Memory

# no torch.nn, ONNX or fused streaming counterpart: their layers run the scan or the linear loop,
# and a stream steps their equations
MINGRU = CellSpec(name="mingru", gates=("z", "h"), state=("h",), traces=("z", "n"), gate_bias={"z": -1.0},
                  recurrent=False, kernel=lambda options: "linear", kernels={"linear": {}}, memory=Memory(per_step=2 + 1 + 1))
MINLSTM = CellSpec(name="minlstm", gates=("f", "i", "h"), state=("h",), traces=("f", "i", "n"), gate_bias={"f": 1.0},
                   recurrent=False, kernel=lambda options: "linear", kernels={"linear": {}}, memory=Memory(per_step=3 + 1 + 1))


def g(a: torch.Tensor) -> torch.Tensor:
    """g(a) = a + 1/2 (a ≥ 0), σ(a) (a < 0): positive and continuous."""
    return torch.where(a >= 0, a + 0.5, torch.sigmoid(a))


def log_g(a: torch.Tensor) -> torch.Tensor:
    """log g(a), computed without forming g(a) for a < 0."""
    return torch.where(a >= 0, torch.log(F.relu(a) + 0.5), -F.softplus(-a))


def _projection(x: torch.Tensor, w: Weights) -> torch.Tensor:
    """W · x_t + b for every gate at once: (..., G·H)."""
    k = x @ w.weight_ih.T
    return k if w.bias is None else k + w.bias


class MinGRUCell(RecurrentCell):
    r"""minGRU: the seed's GRU with the update gate and candidate computed from x_t alone, no reset gate.

    .. math::
        z_t &= σ(W_z x_t + b_z)\\
        \tilde h_t &= g(W_h x_t + b_h)\\
        h_t &= (1 - z_t) * h_{t-1} + z_t * \tilde h_t

    Parameters: ``weight_ih`` (2H, X) rows (z, h), ``bias`` (2H): 2(H·X + H). No ``weight_hh``.
    Traces: ``z`` and ``n`` (= h̃).
    """

    SPEC = MINGRU

    @staticmethod
    def equations(x_t, state, w: Weights):
        (h_prev,) = state
        a_z, a_h = _projection(x_t, w).chunk(2, dim=-1)
        z = torch.sigmoid(a_z)  # z_t = σ(W_z x_t + b_z)
        n = g(a_h)  # h̃_t = g(W_h x_t + b_h)
        h = (1 - z) * h_prev + z * n  # h_t = (1 - z_t) * h_{t-1} + z_t * h̃_t
        return (h,), {"z": z, "n": n}

    @staticmethod
    def coefficients(k: torch.Tensor):
        """k = W x + b for all steps (T, B, 2H) -> (a, b, traces) with h_t = a_t h_{t-1} + b_t."""
        a_z, a_h = k.chunk(2, dim=-1)
        z, n = torch.sigmoid(a_z), g(a_h)
        return torch.sigmoid(-a_z), z * n, {"z": z, "n": n}  # a = 1 − z_t (as σ(−a_z): no cancellation), b = z_t h̃_t

    @staticmethod
    def log_coefficients(k: torch.Tensor):
        """k = W x + b for all steps (T, B, 2H) -> (log a, log b, traces) with h_t = a_t h_{t-1} + b_t."""
        a_z, a_h = k.chunk(2, dim=-1)
        log_a = -F.softplus(a_z)  # log(1 - z)
        log_b = -F.softplus(-a_z) + log_g(a_h)  # log(z · h̃)
        return log_a, log_b, {"z": torch.sigmoid(a_z), "n": g(a_h)}


class MinLSTMCell(RecurrentCell):
    r"""minLSTM: the seed's LSTM with gates from x_t alone, forget and input gates normalised to sum
    to one, and no output gate or separate cell state.

    .. math::
        f_t &= σ(W_f x_t + b_f),\quad i_t = σ(W_i x_t + b_i)\\
        f'_t &= f_t / (f_t + i_t),\quad i'_t = i_t / (f_t + i_t)\\
        \tilde h_t &= g(W_h x_t + b_h)\\
        h_t &= f'_t * h_{t-1} + i'_t * \tilde h_t

    Parameters: ``weight_ih`` (3H, X) rows (f, i, h), ``bias`` (3H): 3(H·X + H). No ``weight_hh``.
    Traces: ``f`` and ``i`` (normalised, f' and i') and ``n`` (= h̃).
    """

    SPEC = MINLSTM

    @staticmethod
    def equations(x_t, state, w: Weights):
        (h_prev,) = state
        a_f, a_i, a_h = _projection(x_t, w).chunk(3, dim=-1)
        # f_t = σ(W_f x_t + b_f), i_t = σ(W_i x_t + b_i), and f'_t = f_t / (f_t + i_t) = σ(log f_t − log i_t),
        # i'_t = σ(log i_t − log f_t): the same values, without 0/0 when both gates underflow to 0
        d = F.logsigmoid(a_i) - F.logsigmoid(a_f)  # log i_t − log f_t
        f, i = torch.sigmoid(-d), torch.sigmoid(d)  # f'_t, i'_t
        n = g(a_h)  # h̃_t = g(W_h x_t + b_h)
        h = f * h_prev + i * n  # h_t = f'_t * h_{t-1} + i'_t * h̃_t
        return (h,), {"f": f, "i": i, "n": n}

    @staticmethod
    def coefficients(k: torch.Tensor):
        """k = W x + b for all steps (T, B, 3H) -> (a, b, traces) with h_t = a_t h_{t-1} + b_t: a = f'_t, b = i'_t h̃_t."""
        a_f, a_i, a_h = k.chunk(3, dim=-1)
        d = F.logsigmoid(a_i) - F.logsigmoid(a_f)  # log i_t − log f_t, as in equations
        f, i, n = torch.sigmoid(-d), torch.sigmoid(d), g(a_h)
        return f, i * n, {"f": f, "i": i, "n": n}

    @staticmethod
    def log_coefficients(k: torch.Tensor):
        a_f, a_i, a_h = k.chunk(3, dim=-1)
        d = F.softplus(-a_f) - F.softplus(-a_i)  # log i - log f
        log_f = -F.softplus(d)  # log f'
        log_i = -F.softplus(-d)  # log i'
        return log_f, log_i + log_g(a_h), {"f": log_f.exp(), "i": log_i.exp(), "n": g(a_h)}
