import math

import pytest

from rnnlab.train import learning_rate


def test_warmup_then_cosine():
    lr = [learning_rate(s, 1.0, 110, 10, "cosine", 0.1) for s in range(110)]
    assert lr[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lr[10] == pytest.approx(1.0)
    assert lr[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))
    assert learning_rate(110, 1.0, 110, 10, "cosine", 0.1) == pytest.approx(0.1)


def test_constant_and_no_warmup():
    assert learning_rate(0, 0.5, 100, 0, "constant", 0.1) == 0.5
    assert learning_rate(99, 0.5, 100, 0, "constant", 0.1) == 0.5
    assert learning_rate(0, 0.5, 100, 0, "cosine", 0.1) == pytest.approx(0.5)
