"""Where a native training step's time goes: per-step recurrent GEMMs, large GEMMs, and the rest.

For one unidirectional level at (T, B, X, H), a training step of the native engine (x without gradient,
as in the benchmark) runs these GEMMs (csrc/ops.cpp, csrc/driver.h), with G·H = GH gate rows:

(a) per step, T times each: forward h_{t-1} (B, H) · W_hhᵀ (H, GH) and backward ∂hh (B, GH) · W_hh (GH, H)
    (GRU reset="before" splits each into its z, r block and its n block). Timed by
    ``rnnlab::time_step_gemms``: the same ``gemm<float>`` calls, row strides and BLAS thread rule as the
    loop (MKL's SGEMM, or csrc/brgemm.h's float32 brgemm on W_hh blocked once where ``rnnlab::f32_products`` says so),
    in a C++ loop on their own; where the step splits by row (``rnnlab::splits_rows``), as it runs them:
    each half of the batch its own products on a thread of its own.
(b) over all T·B rows, once each: the input projection x (T·B, X) · W_ihᵀ (the cell adds b in its pointwise pass),
    ∂W_ih = ∂aᵀ · x and ∂W_hh = ∂hhᵀ · h_{t-1} (two GEMMs for the GRUs: the z, r rows and the n rows). Timed with
    ``torch.mm`` at those shapes and layouts, each weight gradient as the operator runs it (``weight_grad``:
    in float32 as (operandᵀ · ∂a)ᵀ where ``rnnlab::swaps_weight_grad`` says so). The loop itself runs the input
    projection a chunk of steps at a time (csrc/driver.h's InputChunks): the same multiply-adds in GEMMs of fewer
    rows, timed here as one.
(c) everything else — the cells' pointwise maths, the autograd and operator overhead, bias sums, copies —
    is the step's median time less (a) and (b).

The same split of a step under bfloat16 autocast (``bf16=True``: the operators' bf16 mode) times (a) as that mode
runs it (h and the gradient rows rounded to bf16 each step; brgemm on W_hh packed once per call, csrc/brgemm.h, where
the CPU has it, else MKL's bf16 GEMM) and (b) on bf16 operands, and sets
them against the machine's bf16 GEMM rate; (c) then also holds the per-call bf16 copies of x, the weights and the
states (and, for the GRU and layer norm, of ∂a: the RNN's and the LSTM's is the per-step rounding (a) makes, kept).

Each is a median of repeats (``timing.median_ms``); (a) and (b) as GFLOP/s (2 flops per multiply-add) are
set against the machine's SGEMM rate. (a) and (b) are timed in isolation, with warm caches of their own:
inside the step they may run slower (cold caches after the pointwise pass), which (c) then absorbs.
"""

from __future__ import annotations

import torch

from ..cells.spec import SPECS
from ..engine import ops
from .timing import median_ms


def kernel(cell: str) -> str:
    """The operators' name for a bench cell ("gru-after" -> "gru_after"): its SPEC's, with the reset the name gives."""
    name, _, reset = cell.partition("-")
    return SPECS[name].kernel({"reset": reset} if reset else {})


def gates(cell: str) -> int:
    """G: the gate blocks of W_hh ("gru-before" -> the GRU's 3)."""
    return len(SPECS[cell.split("-")[0]].gates)


def first_block(cell: str, H: int) -> int:
    """Columns of the loop's first recurrent GEMM: the z, r blocks for GRU reset="before", else all G·H."""
    return 2 * H if cell == "gru-before" else gates(cell) * H


def step_gemm_flops(cell: str, shape) -> float:
    T, B, _, H = shape
    return 2.0 * T * 2 * B * H * gates(cell) * H  # forward and backward, T steps each


def large_gemm_flops(cell: str, shape) -> float:
    T, B, X, H = shape
    GH = gates(cell) * H
    return 2.0 * T * B * GH * (2 * X + H)  # x·W_ihᵀ, ∂W_ih, ∂W_hh


def step_gemms_ms(cell: str, shape, budget_s: float, bf16: bool = False) -> float:
    """(a): ms of the T forward and T backward per-step GEMMs, on their own (needs the native library); with
    ``bf16``, as the operators' bf16 mode runs them."""
    T, B, _, H = shape
    GH = gates(cell) * H
    rows = B >= 2 and torch.ops.rnnlab.splits_rows(kernel(cell), B, H, True)  # halves of the batch on a core each
    return median_ms(lambda: torch.ops.rnnlab.time_step_gemms(B, H, GH, first_block(cell, H), T, bf16=bf16, rows=rows),
                     budget_s)


def weight_grad(da: torch.Tensor, operand: torch.Tensor) -> torch.Tensor:
    """∂W = ∂aᵀ · operand as the operator computes it (csrc/ops.cpp's weight gradients): in float32, where
    ``rnnlab::swaps_weight_grad`` says so, as (operandᵀ · ∂a)ᵀ made contiguous; else as ∂aᵀ · operand."""
    rows, gh = da.shape
    swap = (da.dtype == torch.float32 and ops.available()
            and torch.ops.rnnlab.swaps_weight_grad(rows, gh, operand.shape[1]))
    return torch.mm(operand.t(), da).t().contiguous() if swap else torch.mm(da.t(), operand)


def _large_gemms(cell: str, shape, dtype: torch.dtype = torch.float32):
    """The step's large GEMMs as one function, on operands of their shapes and layouts (in ``dtype``)."""
    T, B, X, H = shape
    GH = gates(cell) * H
    x2, w_ih = (torch.randn(*size, dtype=dtype) for size in ((T * B, X), (GH, X)))
    da, h_prev = torch.randn(T * B, GH, dtype=dtype), torch.randn(T * B, H, dtype=dtype)
    blocks = (2 * H, H) if cell.startswith("gru") else (GH,)  # ∂W_hh: the GRU's z, r rows and n rows apart
    parts = da.split(blocks, 1)  # column blocks of ∂a, as the operator narrows it

    def run():
        torch.mm(x2, w_ih.t())  # the input projection
        weight_grad(da, x2)  # ∂W_ih
        for part in parts:
            weight_grad(part, h_prev)  # ∂W_hh

    return run


def large_gemms_ms(cell: str, shape, budget_s: float, bf16: bool = False) -> float:
    """(b): ms of the step's GEMMs over T·B rows (bf16 operands with ``bf16``)."""
    return median_ms(_large_gemms(cell, shape, torch.bfloat16 if bf16 else torch.float32), budget_s)


def split(cell: str, shape, step_ms: float, sgemm_gflops: float, budget_s: float, bf16: bool = False) -> dict:
    """{"step", "recurrent", "large", "rest"} in ms, and each GEMM part's share of the GEMM rate
    ``sgemm_gflops`` (the bf16 GEMM rate with ``bf16``: the step is then the bf16 mode's, its GEMMs timed in
    bf16); None without the native library (the step is then the reference engine's, with no such loop)."""
    if not ops.available():
        return None
    rec, large = step_gemms_ms(cell, shape, budget_s, bf16), large_gemms_ms(cell, shape, budget_s, bf16)
    rate = lambda flops, ms: flops / (ms * 1e-3) / 1e9 / sgemm_gflops  # noqa: E731
    return {"step": step_ms, "recurrent": rec, "large": large, "rest": step_ms - rec - large,
            "recurrent_sgemm": rate(step_gemm_flops(cell, shape), rec),
            "large_sgemm": rate(large_gemm_flops(cell, shape), large)}
