import pytest

from rnnlab.analysis import closed_form_parameters


def test_seed_ratios():
    X, H = 10, 20
    rnn, lstm, gru = (closed_form_parameters(c, X, H) for c in ("rnn", "lstm", "gru"))
    assert rnn == H * (X + H) + H
    assert lstm == 4 * rnn and gru == 3 * rnn  # "Fewest", "Most", "Fewer than LSTMs"


def test_unknown_cell():
    with pytest.raises(ValueError, match="cell: expected one of"):
        closed_form_parameters("transformer", 3, 4)
