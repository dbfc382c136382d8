"""Every config shipped in configs/ loads under the strict rules and builds its task."""

from pathlib import Path

import pytest

from rnnlab.tasks import get_task
from rnnlab.train import load_config

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.toml"))


def test_there_are_configs():
    assert len(CONFIGS) >= 6


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads(path):
    c = load_config(path)
    assert c.run_name() == c.name == path.stem.replace("_", "-")
    if c.task_name != "char_lm":  # the default corpus is read in test_data_tasks
        get_task(c.task_name, **c.task.to_dict())
