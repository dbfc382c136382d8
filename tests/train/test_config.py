"""Run configs: TOML files, overrides, strict keys and types, the round trip through config.toml."""

import pytest

from rnnlab.tasks import AddingConfig, CharLMConfig
from rnnlab.train import RunConfig, load_config, resolve, to_toml


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_file_then_overrides(tmp_path):
    p = write(tmp_path, 'name = "x"\n[task]\nname = "adding"\nseq_len = 30\n[model]\ncell = "gru"\n[train]\nlr = 1\n')
    c = load_config(p, {"model.hidden": "64", "train.clip": 0.5, "train.progress": "false"})
    assert c.task == AddingConfig(seq_len=30) and c.name == "x"
    assert (c.model.cell, c.model.hidden) == ("gru", 64)
    assert c.train.lr == 1.0 and isinstance(c.train.lr, float)  # an int is accepted for a float
    assert c.train.clip == 0.5 and c.train.progress is False


def test_defaults_and_run_name():
    c = load_config()
    assert c.task_name == "adding" and c.model.cell == "lstm"
    assert c.run_name() == "adding-lstm-s0"
    assert c.replace(**{"model.bidirectional": True, "train.seed": 3}).run_name() == "adding-bi-lstm-s3"


def test_switching_task_starts_from_its_defaults(tmp_path):
    p = write(tmp_path, '[task]\nname = "adding"\nseq_len = 30\n')
    c = load_config(p, {"task.name": "char_lm", "task.seq_len": "50"})
    assert c.task == CharLMConfig(seq_len=50)


def test_toml_round_trip(tmp_path):
    c = RunConfig().replace(**{"task.name": "char_lm", "task.path": 'a "quoted" p\u00e4th\\x \U0001F600\t', "train.lr": 1e-4,
                              "name": "r", "model.bidirectional": True})
    p = write(tmp_path, to_toml(c))
    assert load_config(p) == c


@pytest.mark.parametrize(
    "text, overrides, error, words",
    [
        ("[model]\nwidth = 3\n", {}, ValueError, "model.width: unknown setting"),
        ('[model]\nhidden = "128"\n', {}, TypeError, "model.hidden: expected int, got str"),
        ("[train]\nprogress = 1\n", {}, TypeError, "train.progress: expected bool"),
        ("[training]\nsteps = 3\n", {}, ValueError, "unknown key"),
        ("", {"train.steps": "many"}, TypeError, "train.steps: expected int, got 'many'"),
        ("", {"train.step": "3"}, ValueError, "train.step: unknown setting"),
        ("", {"optimizer.lr": "3"}, ValueError, "optimizer.lr: unknown setting"),
        ("", {"task.name": "sorting"}, ValueError, "task: expected one of"),
        ("", {"task.alphabet": "4"}, ValueError, "task.alphabet: unknown setting"),
        ("", {"train.lr": "-1"}, ValueError, "train.lr"),
        ("", {"train.schedule": "step"}, ValueError, "train.schedule"),
        ("", {"model.hidden": True}, TypeError, "model.hidden: expected int, got bool"),
        ("[task\n", {}, ValueError, "not valid TOML"),
    ],
)
def test_errors(tmp_path, text, overrides, error, words):
    with pytest.raises(error, match=words):
        load_config(write(tmp_path, text), overrides)


def test_missing_file():
    with pytest.raises(ValueError, match="no such file"):
        load_config("/nonexistent/c.toml")


def test_resolve_rejects_a_non_table():
    with pytest.raises(TypeError, match="model: expected a table"):
        resolve({"model": 3})
