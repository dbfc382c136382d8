"""Verdicts follow the measurements: the same rule gives opposite verdicts on opposite numbers."""

import copy

from rnnlab.compare.verdicts import CONFIRMED, OPEN, REFUTED, combine, long_term_memory, performance, training_speed


def _ladder(solved_by_cell):
    """{cell: [solved flags at T=10, seeds...]} -> the measurements' ladder layout."""
    return {"adding": {c: {"10": {"solved": flags}} for c, flags in solved_by_cell.items()}}


def _memory(solved_by_cell):
    lad = _ladder(solved_by_cell)
    return {"memory": {"ladder": lad, "budget": lad, "longest": {"adding": {c: None for c in solved_by_cell}}}}


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
    rows = []
    for cell in ("rnn", "lstm", "gru", "gru-after"):
        row = {"task": "adding", "T": 10, "cell": cell, "native": native[cell]}
        if cell in torch_nn:
            row["torch_nn"] = torch_nn[cell]
        rows.append(row)
    return {"speed": {"rows": rows}, **_memory({"rnn": [0], "lstm": [1], "gru": [1]})}


def test_training_speed_verdict_per_implementation():
    m = _speed({"rnn": 1.0, "lstm": 4.0, "gru": 3.0, "gru-after": 3.0}, {"rnn": 1.0, "lstm": 2.0, "gru-after": 5.0})
    measured, v = training_speed(m)
    assert "rnnlab's native engine (seed's GRU): confirmed" in v
    assert "torch.nn CPU kernels (GRU reset after): partly: RNN fastest confirmed; GRU faster than LSTM refuted" in v
    m2 = _speed({"rnn": 1.0, "lstm": 2.0, "gru": 2.05, "gru-after": 2.0}, {"rnn": 1.0, "lstm": 2.0, "gru-after": 1.0})
    _, v2 = training_speed(m2)
    assert "native engine (seed's GRU): partly: RNN fastest confirmed; GRU faster than LSTM not resolved" in v2


def test_performance_follows_bits_per_char():
    m = {"real": {"charlm": {"cells": {"rnn": [2.5, 2.5], "lstm": [2.0, 2.0], "gru": [2.02, 2.02]},
                             "ngram": {"bpc": 2.3, "order": 5}},
                  "forecast": {"cells": {c: {"mse": [10.0]} for c in ("rnn", "lstm", "gru")},
                               "ar": {"p": 3, "mse": 5.0}, "naive": {"mse": 20.0}}}}
    measured, v = performance(m)
    assert v == CONFIRMED and "AR(p) wins" in measured
    worse = copy.deepcopy(m)
    worse["real"]["charlm"]["cells"] = {"rnn": [1.5, 1.5], "lstm": [2.5, 2.5], "gru": [1.9, 1.9]}
    assert performance(worse)[1] == ("partly: RNN worse than LSTM refuted; GRU within margin of LSTM refuted; "
                                     "LSTM beats the n-gram not resolved at this budget")
