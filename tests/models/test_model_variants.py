"""ModelConfig's variant options reach the layer; cells without a variant refuse it by name."""

import pytest
import torch

from rnnlab.models import ModelConfig, SequenceModel
from rnnlab.tasks.base import ModelSpec

SPEC = ModelSpec(inputs="reals", input_size=3, output_size=2, head="last")


def test_variants_reach_the_layer():
    config = ModelConfig(cell="lstm", hidden=4, layer_norm=True, peepholes=True, coupled=True, zoneout=0.1)
    m = SequenceModel(SPEC, config)
    assert m.rnn.variants() == {"layer_norm": True, "peepholes": True, "coupled": True, "zoneout": 0.1}
    assert config.label() == "lstm-ln-peep-cifg-zo0.1"
    y, _ = m(torch.randn(2, 5, 3))
    assert y.shape == (2, 2)
    gru = SequenceModel(SPEC, ModelConfig(cell="gru", hidden=4, layer_norm=True, recurrent_dropout=0.2))
    assert gru.rnn.variants() == {"layer_norm": True, "recurrent_dropout": 0.2}
    assert ModelConfig().label() == "lstm"


def test_variants_a_cell_lacks_are_refused():
    with pytest.raises(ValueError, match="model.peepholes: only for cell 'lstm', got cell 'gru'"):
        ModelConfig(cell="gru", peepholes=True)
    with pytest.raises(ValueError, match="model.layer_norm: only for cell 'lstm' or 'gru', got cell 'rnn'"):
        ModelConfig(cell="rnn", layer_norm=True)
    with pytest.raises(ValueError, match=r"model.zoneout: expected a float in \[0, 1\), got 1.5"):
        ModelConfig(zoneout=1.5)
