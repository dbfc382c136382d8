"""Classical forecasting baselines: the naive forecast and an autoregressive AR(p) model by least squares.

AR(p): x_t = c + Σ_{j=1..p} φ_j x_{t-j} + ε_t, with (c, φ) minimising Σ_t ε_t² over the training
series (ordinary least squares on the lagged design matrix).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def _series(name: str, x, min_len: int = 1) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D series, got shape {arr.shape}")
    if arr.size < min_len:
        raise ValueError(f"{name}: expected at least {min_len} values, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected finite values, got NaN or inf")
    return arr


def lagged(x, p: int) -> np.ndarray:
    """The (N - p, p) matrix whose row t holds x[t + p - 1], ..., x[t] (most recent first)."""
    x = _series("x", x, p + 1)
    return np.stack([x[p - j : x.size - j] for j in range(1, p + 1)], axis=1)


class ARModel(NamedTuple):
    """A fitted AR(p): ``intercept`` c and ``coef`` (φ_1, ..., φ_p), φ_1 the weight of the latest value."""

    intercept: float
    coef: np.ndarray

    @property
    def order(self) -> int:
        return self.coef.size

    def predict_next(self, history) -> np.ndarray:
        """One-step forecasts: for windows (N, p) of the p latest values (oldest first), x̂ (N,)."""
        w = np.asarray(history, dtype=np.float64)
        if w.ndim != 2 or w.shape[1] != self.order:
            raise ValueError(f"history: expected shape (N, {self.order}) (windows of the {self.order} latest values), got {w.shape}")
        return self.intercept + w[:, ::-1] @ self.coef

    def forecast(self, history, steps: int) -> np.ndarray:
        """Iterated forecast of the ``steps`` values after ``history`` (1-D, at least p values)."""
        h = list(_series("history", history, self.order)[-self.order :])
        out = []
        for _ in range(steps):
            nxt = self.intercept + float(np.dot(self.coef, h[::-1][: self.order]))
            out.append(nxt)
            h.append(nxt)
        return np.asarray(out)


def fit_ar(x, p: int) -> ARModel:
    """Least-squares AR(p) on the series x (1-D)."""
    if isinstance(p, bool) or not isinstance(p, int) or p < 1:
        raise ValueError(f"p: expected a positive int, got {p!r}")
    x = _series("x", x, 2 * p + 2)
    design = np.concatenate([np.ones((x.size - p, 1)), lagged(x, p)], axis=1)
    sol, *_ = np.linalg.lstsq(design, x[p:], rcond=None)
    return ARModel(float(sol[0]), sol[1:])


def naive_forecast(history, steps: int) -> np.ndarray:
    """The naive forecast: the last observed value, repeated ``steps`` times."""
    h = _series("history", history, 1)
    return np.full(steps, h[-1])
