"""The benchmarks' timing helpers: a median of repeats sized to a time budget, and the machine's GEMM rate."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence

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


def rounds_of(fns: Mapping[str, Callable[[], object]], budget_s: float = 1.0, rounds: int = ROUNDS,
              min_repeats: int = 2) -> dict[str, list[float]]:
    """Each of ``fns``'s wall time in ms, round by round: ``rounds`` rounds that take them in turn, every round giving
    each a median of repeats sized to ``budget_s / rounds`` (after two warm-up calls in the first round and one in
    each later round, its caches having been another's a moment before). Timing each fn in a block of its own lets
    one slow minute of the machine decide a ratio; in rounds, every fn sees every minute, and round r's times of two
    fns make a ratio of their own (``round_ratios``)."""
    if rounds < 1:
        raise ValueError(f"rounds_of: rounds must be >= 1, got {rounds}")
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            times[name].append(median_ms(fn, budget_s / rounds, min_repeats=min_repeats, warmup=2 if r == 0 else 1))
    return times


def medians(rounds: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Each entry's median over its rounds (``rounds_of``'s result, or any name -> times)."""
    return {name: statistics.median(v) for name, v in rounds.items()}


def rounds_ms(fns: Mapping[str, Callable[[], object]], budget_s: float = 1.0, rounds: int = ROUNDS,
              min_repeats: int = 2) -> dict[str, float]:
    """Each of ``fns``'s median wall time in ms: the median of its rounds' medians (``rounds_of``)."""
    return medians(rounds_of(fns, budget_s, rounds, min_repeats))


def round_ratios(ours: Sequence[float], peers: Mapping[str, float | Sequence[float]]) -> list[float]:
    """Per round r, ``ours[r]`` over the fastest peer in that round: a peer given as a list of per-round times (timed
    in the same rounds) counts with its round r, one given as a single time (timed elsewhere, as JAX in its own
    process) with that time in every round. Empty without ours or a peer."""
    if not ours or not peers:
        return []
    def at(v, r):
        return v[r] if isinstance(v, Sequence) else v
    if any(isinstance(v, Sequence) and len(v) != len(ours) for v in peers.values()):
        raise ValueError(f"round_ratios: every peer's rounds must number {len(ours)}, as ours do; got "
                         f"{ {k: len(v) for k, v in peers.items() if isinstance(v, Sequence)} }")
    return [t / min(at(v, r) for v in peers.values()) for r, t in enumerate(ours)]


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
