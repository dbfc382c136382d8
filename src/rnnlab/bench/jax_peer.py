"""The JAX/Flax side of the engine benchmark, run in its own process by ``bench.run_jax``.

Usage: ``python -m rnnlab.bench.jax_peer '{"grid": [[T, B, X, H], ...], "cells": [...], "budget_s": 1.0}'``;
prints one JSON line: a list of ``{"cell", "shape", "train", "infer", "jax"}`` (ms).
A training step is ``jax.jit(jax.grad(loss))`` of ``loss = sum(nn.RNN(cell)(x))`` w.r.t. the
parameters; Flax's GRUCell is the reset="after" form, so it is also gru-before's peer.
"""

from __future__ import annotations

import json
import statistics
import sys
import time


def _median_ms(fn, budget_s: float) -> float:
    for _ in range(2):
        fn()
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = [first]
    for _ in range(max(3, min(25, int(budget_s / max(first, 1e-6)))) - 1):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main(job: dict) -> list[dict]:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    cells = {"rnn": nn.SimpleCell, "lstm": nn.LSTMCell, "gru-before": nn.GRUCell, "gru-after": nn.GRUCell}
    rows = []
    for cell in job["cells"]:
        for T, B, X, H in job["grid"]:
            model = nn.RNN(cells[cell](features=H))
            x = jax.random.normal(jax.random.PRNGKey(0), (B, T, X), jnp.float32)
            params = model.init(jax.random.PRNGKey(1), x)
            grad = jax.jit(jax.grad(lambda p, x: model.apply(p, x).sum()))
            forward = jax.jit(model.apply)
            train = _median_ms(lambda: jax.block_until_ready(grad(params, x)), job["budget_s"])
            infer = _median_ms(lambda: jax.block_until_ready(forward(params, x)), job["budget_s"] / 2)
            rows.append({"cell": cell, "shape": [T, B, X, H], "train": train, "infer": infer, "jax": jax.__version__})
    return rows


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
