"""What rnnlab.nn's per-call weight conversion costs: ``python benchmarks/bench_nn.py``.

rnnlab.nn keeps torch.nn's parameter layout and converts it to the seed's layout on every call
(``rnnlab.nn.stack``). This times, per shape, (a) the conversion alone (its forward; its backward is a
copy of each gradient block, paid inside the step) and (b) one training step (forward + backward) of ``rnnlab.nn.X``
against ``rnnlab.X`` holding the same function in its own layout, both on engine="native", and of
torch.nn.X. Medians of repeated runs (the three steps timed in turn), float32, on the CPU threads torch is given.
"""

from __future__ import annotations

import statistics
import time

import torch

import rnnlab
import rnnlab.nn
from rnnlab.nn.stack import TorchStack, flat

SHAPES = [("lstm", 100, 32, 64, 128, 2), ("gru", 100, 32, 64, 128, 2), ("lstm", 50, 64, 256, 256, 2)]
CLASSES = {"lstm": (torch.nn.LSTM, rnnlab.nn.LSTM, rnnlab.LSTM), "gru": (torch.nn.GRU, rnnlab.nn.GRU, rnnlab.GRU)}


def median_ms(fn, repeats: int = 30) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def interleaved_ms(fns, repeats: int = 30) -> list[float]:
    """Median milliseconds of each of ``fns``, timed in turn (so a change in the machine's load hits all alike)."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for t, fn in zip(times, fns):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    return [1e3 * statistics.median(t) for t in times]


def conversion(module) -> None:
    """What a call adds before the engine runs: the stack view and every level's converted weights."""
    levels = [[flat(module, k, 0)] for k in range(module.num_layers)]
    stack = TorchStack(module._cell, module._cell.SPEC.torch.options(module), levels, module.hidden_size,
                       dropout=0.0, training=True, engine="native")
    for k in range(module.num_layers):
        stack.weights(k, 0)


def step(module, x) -> None:
    out = module(x)[0]
    out.sum().backward()


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| cell | T, B, X, H, levels | conversion (forward) | rnnlab.nn step | rnnlab step | torch.nn step |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for kind, T, B, X, H, L in SHAPES:
        ref_cls, nn_cls, own_cls = CLASSES[kind]
        ref = ref_cls(X, H, num_layers=L)
        twin = nn_cls(X, H, num_layers=L)
        twin.engine = "native"
        own = own_cls.from_torch(ref, engine="native")
        x = torch.randn(T, B, X)
        times = [median_ms(lambda: conversion(twin), 100)] + interleaved_ms([lambda m=m: step(m, x) for m in (twin, own, ref)])
        print(f"| {kind} | {T}, {B}, {X}, {H}, {L} | " + " | ".join(f"{t:.3f} ms" for t in times) + " |")


if __name__ == "__main__":
    main()
