"""Training on a small budget beats each task's trivial baseline (and bidirectionality matters
where the labels depend on later inputs)."""

import pytest

from rnnlab.train import RunConfig, train

FOX = "the quick brown fox jumps over the lazy dog. " * 40

BASE = {
    "train.progress": False, "train.tensorboard": False, "model.engine": "reference", "train.eval_samples": 256,
    "train.batch_size": 32, "model.hidden": 16, "model.embedding": 8, "train.lr": 0.01, "train.eval_every": 1000,
}


def run(**settings):
    return train(RunConfig().replace(**{**BASE, **settings}))


def test_adding_lstm():
    r = run(**{"task.seq_len": 10, "train.steps": 300})
    assert r.final["mse"] < 0.05 < r.baselines["mse"]


def test_copy_memory_gru():
    r = run(**{"task.name": "copy", "task.seq_len": 5, "task.length": 3, "task.alphabet": 4, "model.cell": "gru",
               "train.steps": 250})
    assert r.final["accuracy"] > 0.4 > r.baselines["accuracy"]
    assert r.final["loss"] < r.baselines["loss"]


def test_temporal_order_lstm():
    r = run(**{"task.name": "temporal_order", "task.seq_len": 10, "train.steps": 200})
    assert r.final["accuracy"] > 0.9 and r.baselines["accuracy"] == 0.25


@pytest.mark.parametrize("bidirectional", [True, False])
def test_tagging_needs_the_reverse_direction(bidirectional):
    r = run(**{"task.name": "tagging", "task.seq_len": 8, "task.vocab": 4, "task.shift": 2, "model.cell": "gru",
               "model.bidirectional": bidirectional, "train.steps": 150})
    if bidirectional:
        assert r.final["accuracy"] > 0.8
    else:  # the future symbol is unknowable: chance, whatever the training
        assert r.final["accuracy"] < 0.35 and r.final["loss"] > 0.9 * r.baselines["loss"]


def test_char_lm_rnn(tmp_path):
    p = tmp_path / "fox.txt"
    p.write_text(FOX)
    r = run(**{"task.name": "char_lm", "task.path": str(p), "task.seq_len": 16, "train.batch_size": 8,
               "model.cell": "rnn", "train.steps": 100})
    assert r.final["bpc"] < 0.6 * r.baselines["bpc"]


def test_forecast_sunspots_beats_last_value():
    r = run(**{"task.name": "forecast", "task.seq_len": 10, "train.steps": 200})
    assert r.final["mse"] < 0.8 * r.baselines["mse"]
    assert r.final["naive_mse"] == pytest.approx(r.baselines["mse"])
