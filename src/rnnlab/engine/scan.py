"""The parallel scan engine for linear recurrences h_t = a_t * h_{t-1} + b_t (minGRU, minLSTM).

With A_t = a_1 ⋯ a_t (all products positive), the recurrence unrolls to

    h_t = A_t · h_0 + Σ_{k ≤ t} (A_t / A_k) · b_k
        = A_t · h_0 + exp(log A_t + logcumsumexp_k(log b_k − log A_k))

so every h_t comes from one projection GEMM, a cumulative sum and a cumulative log-sum-exp over
time — no sequential loop, and autograd differentiates it (Feng et al. 2024, Heinsen 2023).
Lengths: a padded step gets a = 1, b = 0, so the state passes through it unchanged; the reverse
direction flips the padded sequence, whose padding then comes first and leaves h_0 untouched.
"""

from __future__ import annotations

import torch

from ..layers.runner import run_stack

_NEG = -1e30  # log of a coefficient that is zero; finite so gradients stay finite


def direction(layer, w, x, state, lengths, reverse: bool, trace: bool, step: dict):
    """One level, one direction by the scan (``step`` is always empty: minimal cells have no variants)."""
    (h0,) = state
    k = x @ w.weight_ih.T  # (T, B, G·H): one GEMM over all steps
    if w.bias is not None:
        k = k + w.bias
    log_a, log_b, traces = layer.cell_class.log_coefficients(k)  # (T, B, H) each
    if lengths is not None:
        live = (torch.arange(x.shape[0], device=x.device).unsqueeze(1) < lengths).unsqueeze(2)  # (T, B, 1)
        log_a = torch.where(live, log_a, 0.0)
        log_b = torch.where(live, log_b, _NEG)
    if reverse:
        log_a, log_b = log_a.flip(0), log_b.flip(0)
    log_A = torch.cumsum(log_a, dim=0)
    h = log_A.exp() * h0 + torch.exp(log_A + torch.logcumsumexp(log_b - log_A, dim=0))
    h_last = h[-1]
    if reverse:
        h = h.flip(0)
    return finish(h, h_last, traces, live if lengths is not None else None, trace)


def finish(out, h_last, traces, live, trace: bool):
    """A minimal cell's direction result: outputs and traces zero at padded steps (``live`` (T, B, 1), or None)."""
    if live is not None:
        out = torch.where(live, out, 0.0)
        if trace:
            traces = {n: torch.where(live, v, 0.0) for n, v in traces.items()}
    return out, (h_last,), (traces if trace else None)


class ScanEngine:
    name = "scan"

    def run(self, layer, x, hx, lengths, trace):
        return run_stack(layer, x, hx, lengths, trace, direction)
