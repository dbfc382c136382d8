"""The JAX/Flax side of the engine benchmark, run in its own process by ``bench.run_jax``.

Usage: ``python -m rnnlab.bench.jax_peer '{"grid": [[T, B, X, H], ...], "cells": [...], "budget_s": 1.0,
"bf16": false, "infer_grid": [[T, B, X, H], ...]}'``; prints one JSON line: a list of ``{"cell", "shape",
"train", "infer", "jax"}`` (ms) — with ``"bf16"`` also ``"train_bf16"`` (parameters, inputs and the cell's
computation in bfloat16), and for the ``infer_grid`` shapes (optional) ``"infer"`` alone.
A training step is ``jax.jit(jax.grad(loss))`` of ``loss = sum(nn.RNN(cell)(x))`` w.r.t. the
parameters, inference ``jax.jit(model.apply)``; Flax's GRUCell is the reset="after" form, so it is also
gru-before's peer.
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


def _model(cell: str, H: int, dtype):
    import flax.linen as nn

    cells = {"rnn": nn.SimpleCell, "lstm": nn.LSTMCell, "gru-before": nn.GRUCell, "gru-after": nn.GRUCell}
    return nn.RNN(cells[cell](features=H, dtype=dtype, param_dtype=dtype))


def _init(cell: str, shape):
    """(float32 parameters, x (B, T, X)) of one layer."""
    import jax

    T, B, X, H = shape
    x = jax.random.normal(jax.random.PRNGKey(0), (B, T, X))
    return _model(cell, H, x.dtype).init(jax.random.PRNGKey(1), x), x


def _train_ms(model, params, x, budget_s: float) -> float:
    """Median ms of ``jax.jit(jax.grad(sum(model(x))))`` w.r.t. the parameters."""
    import jax

    grad = jax.jit(jax.grad(lambda p, x: model.apply(p, x).sum()))
    return _median_ms(lambda: jax.block_until_ready(grad(params, x)), budget_s)


def _infer_ms(model, params, x, budget_s: float) -> float:
    import jax

    forward = jax.jit(model.apply)
    return _median_ms(lambda: jax.block_until_ready(forward(params, x)), budget_s)


def _bf16_train_ms(cell: str, H: int, params, x, budget_s: float) -> float:
    """The training step with the parameters and inputs cast to bfloat16 and the cell computing in it (cast
    from float32: the orthogonal initialiser's QR has no bfloat16 kernel)."""
    import jax
    import jax.numpy as jnp

    cast = lambda t: t.astype(jnp.bfloat16)  # noqa: E731
    return _train_ms(_model(cell, H, jnp.bfloat16), jax.tree.map(cast, params), cast(x), budget_s)


def main(job: dict) -> list[dict]:
    import jax
    import jax.numpy as jnp

    rows = []
    for cell in job["cells"]:
        for shape in job["grid"]:
            model, (params, x) = _model(cell, shape[3], jnp.float32), _init(cell, shape)
            row = {"cell": cell, "shape": shape, "jax": jax.__version__,
                   "train": _train_ms(model, params, x, job["budget_s"]),
                   "infer": _infer_ms(model, params, x, job["budget_s"] / 2)}
            if job.get("bf16"):
                row["train_bf16"] = _bf16_train_ms(cell, shape[3], params, x, job["budget_s"])
            rows.append(row)
        for shape in job.get("infer_grid", ()):
            model, (params, x) = _model(cell, shape[3], jnp.float32), _init(cell, shape)
            rows.append({"cell": cell, "shape": shape, "jax": jax.__version__,
                         "infer": _infer_ms(model, params, x, job["budget_s"] / 2)})
    return rows


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
