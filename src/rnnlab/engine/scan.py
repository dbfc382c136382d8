"""The parallel scan engine for linear recurrences h_t = a_t * h_{t-1} + b_t (minGRU, minLSTM).

With A_t = a_1 ⋯ a_t (all products positive), the recurrence unrolls to

    h_t = A_t · h_0 + Σ_{k ≤ t} (A_t / A_k) · b_k
        = A_t · h_0 + exp(log A_t + logcumsumexp_k(log b_k − log A_k))

so every h_t comes from one projection GEMM, a cumulative sum and a cumulative log-sum-exp over
time — no sequential loop, and autograd differentiates it (Feng et al. 2024, Heinsen 2023).
Lengths: padding comes after each sequence's last real step, so the scan runs through it and the
state at step len − 1 is the final one; the reverse direction reverses each sequence within its own
length, which keeps its padding at the end too. (Second derivatives: torch's double backward of
logcumsumexp is NaN where an incoming gradient is exactly zero — as at padded steps, whose outputs
are zero — so create_graph through the scan with lengths gives NaN; the native loop has no such gap.)
"""

from __future__ import annotations

import torch

from .stack import run_stack


def _within(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """Time indices (T, B) that reverse each sequence within its own length and leave its padding in place:
    t -> len − 1 − t for t < len, t otherwise (its own inverse)."""
    t = torch.arange(T, device=lengths.device).unsqueeze(1)
    return torch.where(t < lengths, lengths - 1 - t, t)


def _gather_time(v: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return v.gather(0, index.unsqueeze(2).expand(-1, -1, v.shape[2]))


def direction(layer, w, x, state, lengths, reverse: bool, trace: bool, step: dict):
    """One level, one direction by the scan (``step`` is always empty: minimal cells have no variants)."""
    (h0,) = state
    T = x.shape[0]
    k = x @ w.weight_ih.T  # (T, B, G·H): one GEMM over all steps
    if w.bias is not None:
        k = k + w.bias
    if reverse:  # the reverse direction scans each sequence from its last real step: padding stays at the end
        index = _within(lengths, T) if lengths is not None else None
        k = k.flip(0) if index is None else _gather_time(k, index)
    log_a, log_b, traces = layer.cell_class.log_coefficients(k)  # (T, B, H) each
    log_A = torch.cumsum(log_a, dim=0)
    h = log_A.exp() * h0 + torch.exp(log_A + torch.logcumsumexp(log_b - log_A, dim=0))
    # the state after each sequence's last real step (steps past it are computed, then dropped)
    h_last = h[-1] if lengths is None else _gather_time(h, (lengths - 1).unsqueeze(0))[0]
    if reverse:
        h = h.flip(0) if index is None else _gather_time(h, index)
        traces = {n: (v.flip(0) if index is None else _gather_time(v, index)) for n, v in traces.items()}
    live = None if lengths is None else (torch.arange(T, device=x.device).unsqueeze(1) < lengths).unsqueeze(2)
    return finish(h, h_last, traces, live, trace)


def finish(out, h_last, traces, live, trace: bool):
    """A minimal cell's direction result: outputs and traces zero at padded steps (``live`` (T, B, 1), or None)."""
    if live is not None:
        out = torch.where(live, out, 0.0)
        if trace:
            traces = {n: torch.where(live, v, 0.0) for n, v in traces.items()}
    return out, (h_last,), (traces if trace else None)


class ScanEngine:
    name = "scan"

    def path(self, x: torch.Tensor, layer=None) -> str:
        """Which code runs for this call: always "scan" (the parallel log-space scan)."""
        return "scan"

    def run(self, layer, x, hx, lengths, trace):
        return run_stack(layer, x, hx, lengths, trace, direction)
