"""The benchmarks' timing helpers: a median of repeats sized to a time budget, and the machine's GEMM rate."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import torch


def median_ms(fn, budget_s: float = 1.0, min_repeats: int = 3, max_repeats: int = 25, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in ms, after ``warmup`` calls; repeats sized to about ``budget_s``."""
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    repeats = max(min_repeats, min(max_repeats, int(budget_s / max(first, 1e-6))))
    times = [first]
    for _ in range(repeats - 1):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


ROUNDS = 3  # peers timed in turn, this many times over: a ratio then sees the same minutes of a noisy host


def rounds_ms(fns: Mapping[str, Callable[[], object]], budget_s: float = 1.0, rounds: int = ROUNDS,
              min_repeats: int = 2) -> dict[str, float]:
    """Each of ``fns``'s median wall time in ms, timed in ``rounds`` rounds that take them in turn: every round
    gives each a median of repeats sized to ``budget_s / rounds`` (after two warm-up calls in the first round and
    one in each later round, its caches having been another's a moment before), and the result is the median of its
    rounds' medians. Timing each fn in a block of its own lets one slow minute of the machine decide a ratio; in
    rounds, every fn sees every minute."""
    if rounds < 1:
        raise ValueError(f"rounds_ms: rounds must be >= 1, got {rounds}")
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            times[name].append(median_ms(fn, budget_s / rounds, min_repeats=min_repeats, warmup=2 if r == 0 else 1))
    return {name: statistics.median(v) for name, v in times.items()}


def gemm_gflops(n: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """The machine's GEMM rate (GFLOP/s) in ``dtype`` on the current torch threads: n×n by n×n, the
    best of ``repeats`` (a peak to measure against; medians of a busy machine understate it)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    out = torch.empty(n, n, dtype=dtype)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9
