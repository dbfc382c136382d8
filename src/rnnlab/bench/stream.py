"""Per-step latency at batch 1 (the Streamer's path): timing helpers shared by ``benchmarks/bench_stream.py``
and the engine benchmark's streaming rows."""

from __future__ import annotations

import time

import torch


def torch_stack_step(cells, lstm: bool):
    """A step function over a stack of torch.nn cells, state kept in a closure."""
    state = [None] * len(cells)

    def step(x):
        for k, cell in enumerate(cells):
            s = cell(x, state[k])
            state[k] = s
            x = s[0] if lstm else s
        return x

    return step


def per_step_us(fns: list, x, steps: int, repeats: int) -> list[float]:
    """Best-of-``repeats`` µs per step of each step function, timed in interleaved rounds."""
    best = [float("inf")] * len(fns)
    with torch.inference_mode():
        for step in fns:
            for _ in range(min(200, steps)):  # warm-up: first-call checks, allocator, caches
                step(x)
        for _ in range(repeats):
            for i, step in enumerate(fns):
                t0 = time.perf_counter()
                for _ in range(steps):
                    step(x)
                best[i] = min(best[i], (time.perf_counter() - t0) / steps * 1e6)
    return best
