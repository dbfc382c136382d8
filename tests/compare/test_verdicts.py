"""Verdicts follow the measurements: the same rule gives opposite verdicts on opposite numbers."""

from types import SimpleNamespace as NS

import pytest

from rnnlab.compare.measure import SpeedRow, Stat, speed_ratios
from rnnlab.compare.verdicts import CONFIRMED, OPEN, REFUTED, combine, long_term_memory, performance, training_speed
from rnnlab.compare.yardsticks import BETTER, MATCHES, WORSE, verdict


def _memory(solved_by_cell):
    """{cell: [solved flags at one rung, one per seed]} -> the memory section's solve counts."""
    counts = {c: sum(flags) for c, flags in solved_by_cell.items()}
    runs = len(next(iter(solved_by_cell.values())))
    mem = NS(solved_runs=counts, budget_solved_runs=counts, runs_per_cell=runs, budget_runs_per_cell=runs,
             longest={"adding": {c: None for c in solved_by_cell}})
    return NS(memory=mem)


def test_combine():
    assert combine([("a", CONFIRMED), ("b", CONFIRMED)]) == CONFIRMED
    assert combine([("a", REFUTED), ("b", REFUTED)]) == REFUTED
    assert combine([("a", OPEN)]) == OPEN
    assert combine([("a", CONFIRMED), ("b", REFUTED)]) == "partly: a confirmed; b refuted"


def test_long_term_memory_follows_solve_counts():
    _, v = long_term_memory(_memory({"rnn": [0] * 6, "lstm": [1] * 6, "gru": [1, 1, 1, 1, 0, 0]}))
    assert v == CONFIRMED
    _, v = long_term_memory(_memory({"rnn": [0] * 6, "lstm": [1] * 6, "gru": [1, 1, 1, 1, 1, 0]}))
    assert v == "partly: RNN poorer than both gated cells confirmed; LSTM better than GRU not resolved at this budget"
    _, v = long_term_memory(_memory({"rnn": [1, 1, 1], "lstm": [0, 0, 0], "gru": [1, 1, 1]}))
    assert v == REFUTED
    _, v = long_term_memory(_memory({"rnn": [0, 0, 0], "lstm": [0, 0, 0], "gru": [0, 0, 0]}))
    assert v == OPEN  # nothing solved: the budget decides nothing
    measured, v = long_term_memory(_memory({"rnn": [0, 0, 0], "lstm": [0, 0, 0], "gru": [1, 1, 1]}))
    assert v.startswith("partly") and "LSTM better than GRU refuted" in v and "GRU 3" in measured


def _speed(native, torch_nn):
    rows = [SpeedRow("adding", 10, cell, "x", 10, native[cell], native[cell], torch_nn.get(cell))
            for cell in ("rnn", "lstm", "gru", "gru-after")]
    ratios = {impl: speed_ratios(rows, impl) for impl in ("native", "torch_nn")}
    return NS(speed=NS(ratios=ratios), memory=_memory({"rnn": [0], "lstm": [1], "gru": [1]}).memory)


def test_speed_ratios_are_relative_to_the_lstm():
    rows = [SpeedRow("adding", T, cell, "x", 10, t * (1 + T), t * (1 + T), None)
            for T in (10, 20) for cell, t in (("rnn", 1.0), ("lstm", 4.0), ("gru", 3.0), ("gru-after", 3.0))]
    assert speed_ratios(rows, "native") == pytest.approx({"rnn": 0.25, "lstm": 1.0, "gru": 0.75})
    assert speed_ratios(rows, "torch_nn") is None  # nothing timed on torch.nn


def test_training_speed_verdict_per_implementation():
    m = _speed({"rnn": 1.0, "lstm": 4.0, "gru": 3.0, "gru-after": 3.0}, {"rnn": 1.0, "lstm": 2.0, "gru-after": 5.0})
    measured, v = training_speed(m)
    assert "rnnlab's native engine (seed's GRU): confirmed" in v
    assert "torch.nn CPU kernels (GRU reset after): partly: RNN fastest confirmed; GRU faster than LSTM refuted" in v
    m2 = _speed({"rnn": 1.0, "lstm": 2.0, "gru": 2.05, "gru-after": 2.0}, {"rnn": 1.0, "lstm": 2.0, "gru-after": 1.0})
    _, v2 = training_speed(m2)
    assert "native engine (seed's GRU): partly: RNN fastest confirmed; GRU faster than LSTM not resolved" in v2


def _real(bpc, ngram=2.3):
    lm = NS(bpc={c: Stat.of(v) for c, v in bpc.items()}, ngram_bpc=ngram, ngram_order=5, hidden=8)
    fc = NS(mse={c: Stat.of([10.0]) for c in ("rnn", "lstm", "gru")}, best="lstm", ar_p=3, ar_mse=5.0, naive_mse=20.0)
    return NS(real=NS(charlm=lm, forecast=fc))


def test_performance_follows_bits_per_char():
    measured, v = performance(_real({"rnn": [2.5, 2.5], "lstm": [2.0, 2.0], "gru": [2.02, 2.02]}))
    assert v == CONFIRMED and "AR(p) wins" in measured
    worse = _real({"rnn": [1.5, 1.5], "lstm": [2.5, 2.5], "gru": [1.9, 1.9]})
    assert performance(worse)[1] == ("partly: RNN worse than LSTM refuted; GRU within margin of LSTM refuted; "
                                     "LSTM beats the n-gram not resolved at this budget")
    # beating the n-gram must clear the margin too: 2.29 against 2.30 decides nothing
    close = _real({"rnn": [2.5, 2.5], "lstm": [2.29, 2.29], "gru": [2.3, 2.3]})
    assert "LSTM beats the n-gram not resolved" in performance(close)[1]


def test_yardstick_verdict_rule():
    # margin = max(2 sd, tolerance)
    assert verdict([0.90, 0.92, 0.91], 0.91, True, 0.02) == (MATCHES, pytest.approx(0.02))
    assert verdict([0.95, 0.95, 0.95], 0.91, True, 0.02)[0] == BETTER
    assert verdict([0.80, 0.80, 0.80], 0.91, True, 0.02)[0] == WORSE
    v, margin = verdict([0.70, 0.90, 1.10], 0.91, True, 0.02)  # seeds that scatter widely: a wide margin
    assert v == MATCHES and margin == pytest.approx(0.4)
    assert verdict([0.17, 0.17], 5.3e-5, False, 0.01)[0] == WORSE  # lower is better: a larger loss is worse
    assert verdict([1e-4, 1e-4], 0.164, False, 0.01)[0] == BETTER
    with pytest.raises(ValueError, match="ours"):
        verdict([], 0.5, True, 0.01)


def test_stat_ignores_missing_values():
    s = Stat.of([1.0, None, float("nan"), 3.0])
    assert s.values == [1.0, 3.0] and s.mean == 2.0 and s.sd == pytest.approx(2 ** 0.5)
    assert Stat.of([2.0]).sd == 0.0 and Stat.of([]).text() == "—"
