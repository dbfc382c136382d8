"""The sequence model: shapes per head, the bidirectional "last" head, config checks."""

import pytest
import torch

from rnnlab import GRU, LSTM, RNN
from rnnlab.models import ModelConfig, SequenceModel
from rnnlab.tasks.base import ModelSpec


@pytest.mark.parametrize("head", ["last", "every"])
@pytest.mark.parametrize("inputs", ["symbols", "reals"])
def test_shapes(head, inputs):
    spec = ModelSpec(inputs=inputs, input_size=5, output_size=3, head=head)
    m = SequenceModel(spec, ModelConfig(hidden=8, layers=2, bidirectional=True, engine="reference"))
    x = torch.randint(0, 5, (4, 6)) if inputs == "symbols" else torch.randn(4, 6, 5)
    y, (h, c) = m(x)
    assert y.shape == ((4, 3) if head == "last" else (4, 6, 3))
    assert h.shape == c.shape == (4, 4, 8)


@pytest.mark.parametrize("cell, cls", [("rnn", RNN), ("lstm", LSTM), ("gru", GRU)])
def test_last_head_reads_each_direction_at_its_end(cell, cls):
    spec = ModelSpec(inputs="reals", input_size=3, output_size=2, head="last")
    m = SequenceModel(spec, ModelConfig(cell=cell, hidden=6, layers=2, bidirectional=True, engine="reference"))
    assert isinstance(m.rnn, cls) and m.rnn.batch_first
    x = torch.randn(5, 7, 3)
    y, state = m(x)
    h_n = state[0] if cell == "lstm" else state
    # h_n's last two rows are the top level's forward and reverse final states
    expected = m.head(torch.cat([h_n[-2], h_n[-1]], dim=-1))
    assert torch.allclose(y, expected, atol=1e-6)


def test_state_continues_a_sequence():
    spec = ModelSpec(inputs="symbols", input_size=4, output_size=4, head="every")
    m = SequenceModel(spec, ModelConfig(cell="gru", hidden=8, engine="reference"))
    x = torch.randint(0, 4, (2, 10))
    whole, _ = m(x)
    first, s = m(x[:, :6])
    second, _ = m(x[:, 6:], s)
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-6)


def test_cell_options_reach_the_layer():
    spec = ModelSpec(inputs="reals", input_size=1, output_size=1, head="last")
    assert SequenceModel(spec, ModelConfig(cell="rnn", nonlinearity="relu")).rnn.nonlinearity == "relu"
    assert SequenceModel(spec, ModelConfig(cell="gru", reset="after")).rnn.reset == "after"
    assert SequenceModel(spec, ModelConfig(engine="reference")).rnn.engine == "reference"
    assert ModelConfig(cell="gru", reset="after", bidirectional=True, layers=2).label() == "bi-2x-gru-after"


@pytest.mark.parametrize(
    "settings, error, words",
    [
        ({"cell": "transformer"}, ValueError, "model.cell"),
        ({"hidden": 0}, ValueError, "model.hidden"),
        ({"dropout": 1.0}, ValueError, "model.dropout"),
        ({"reset": "middle"}, ValueError, "model.reset"),
        ({"hidden": 8.0}, TypeError, "model.hidden: expected int"),
        ({"bidirectional": 1}, TypeError, "expected bool"),
        ({"width": 3}, ValueError, "unknown setting"),
    ],
)
def test_config_errors(settings, error, words):
    with pytest.raises(error, match=words):
        ModelConfig.from_dict(settings, "model")
