"""AR(p) least squares: exact recovery of a noiseless process, consistency on a noisy one,
and the forecasts against hand-written recursions."""

import numpy as np
import pytest

from rnnlab.analysis import fit_ar, naive_forecast
from rnnlab.analysis.autoregressive import lagged


def _simulate(c, phi, n, noise, seed=0):
    rng = np.random.default_rng(seed)
    x = list(rng.normal(size=len(phi)))
    for _ in range(n):
        x.append(c + sum(p * x[-1 - j] for j, p in enumerate(phi)) + noise * rng.normal())
    return np.array(x)


def test_noiseless_process_is_recovered_exactly():
    x = _simulate(0.3, [0.6, -0.2, 0.1], 60, noise=0.0)
    model = fit_ar(x, 3)
    assert model.intercept == pytest.approx(0.3, abs=1e-9)
    np.testing.assert_allclose(model.coef, [0.6, -0.2, 0.1], atol=1e-9)


def test_noisy_process_matches_normal_equations():
    x = _simulate(-0.5, [0.5, 0.3], 5000, noise=1.0, seed=1)
    model = fit_ar(x, 2)
    # the normal equations, solved independently of lstsq
    X = np.column_stack([np.ones(x.size - 2), x[1:-1], x[:-2]])
    beta = np.linalg.solve(X.T @ X, X.T @ x[2:])
    np.testing.assert_allclose([model.intercept, *model.coef], beta, rtol=1e-8)
    np.testing.assert_allclose(model.coef, [0.5, 0.3], atol=0.05)


def test_forecasts_follow_the_recursion():
    x = _simulate(0.1, [0.9, -0.4], 200, noise=0.5, seed=2)
    model = fit_ar(x, 2)
    c, (p1, p2) = model.intercept, model.coef
    windows = np.array([[x[t - 2], x[t - 1]] for t in range(2, 10)])
    np.testing.assert_allclose(model.predict_next(windows), [c + p1 * x[t - 1] + p2 * x[t - 2] for t in range(2, 10)])
    f = model.forecast(x[:50], 3)
    a = c + p1 * x[49] + p2 * x[48]
    b = c + p1 * a + p2 * x[49]
    np.testing.assert_allclose(f, [a, b, c + p1 * b + p2 * a])
    np.testing.assert_array_equal(naive_forecast(x[:50], 4), np.full(4, x[49]))
    np.testing.assert_array_equal(lagged(np.arange(5.0), 2), [[1, 0], [2, 1], [3, 2]])


def test_bad_arguments():
    with pytest.raises(ValueError, match="p: expected a positive int"):
        fit_ar(np.ones(10), 0)
    with pytest.raises(ValueError, match="x: expected at least"):
        fit_ar(np.ones(3), 2)
    with pytest.raises(ValueError, match="x: expected a 1-D"):
        fit_ar(np.ones((5, 2)), 1)
    with pytest.raises(ValueError, match="history"):
        fit_ar(np.arange(20.0) ** 1.5, 2).predict_next(np.ones((3, 3)))
