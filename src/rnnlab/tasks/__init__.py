"""Tasks: seeded data sources with a loss, metrics and a trivial baseline each.

========================  =============================================================  ===========
name                      what                                                           baseline
========================  =============================================================  ===========
``adding``                sum of two marked values among T (Hochreiter & Schmidhuber     MSE 0.167
                          1997; Le et al. 2015)
``copy``                  reproduce 10 symbols after T blanks (Arjovsky et al. 2016)     10·log 8/(T+20)
``temporal_order``        order of two far-apart marked symbols, 4 classes               25 %
``tagging``               label each step with the symbol ``shift`` steps later          1/V
                          (needs a bidirectional network)
``char_lm``               next character of any UTF-8 text (default: Python stdlib)      unigram bpc
``forecast``              next value of a CSV column (default: yearly sunspots)          last value
``mnist1d``               which of 10 digits a 40-step 1-D signal shows (Greydanus &     10 %
                          Kobak 2024; generated, no download)
``japanese_vowels``       which of 9 speakers said /ae/: 7-29 frames of 12 LPC           largest class
                          cepstra (Kudo et al. 1999; variable lengths)
========================  =============================================================  ===========

``get_task(name, **settings)`` builds one; ``TASKS[name].Config`` is its config dataclass.
"""

from __future__ import annotations

from typing import Any

from .adding import AddingConfig, AddingTask
from .base import Batch, Config, ModelSpec, Stream, Task
from .char_lm import CharLMConfig, CharLMTask, sample
from .copy_memory import CopyMemoryConfig, CopyMemoryTask
from .forecast import ForecastConfig, ForecastTask
from .japanese_vowels import JapaneseVowelsConfig, JapaneseVowelsTask
from .mnist1d import MNIST1DConfig, MNIST1DTask
from .tagging import TaggingConfig, TaggingTask
from .temporal_order import TemporalOrderConfig, TemporalOrderTask

TASKS: dict[str, type[Task]] = {
    t.name: t for t in (AddingTask, CopyMemoryTask, TemporalOrderTask, TaggingTask, CharLMTask, ForecastTask,
                        MNIST1DTask, JapaneseVowelsTask)
}


def task_class(name: str) -> type[Task]:
    if name not in TASKS:
        raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {name!r}")
    return TASKS[name]


def get_task(name: str, **settings: Any) -> Task:
    """The task ``name`` with its config's defaults overridden by ``settings`` (strictly checked)."""
    cls = task_class(name)
    return cls(cls.Config.from_dict(settings, "task"))


__all__ = [
    "TASKS", "get_task", "task_class", "Task", "Batch", "ModelSpec", "Stream", "Config", "sample",
    "AddingTask", "AddingConfig", "CopyMemoryTask", "CopyMemoryConfig", "TemporalOrderTask",
    "TemporalOrderConfig", "TaggingTask", "TaggingConfig", "CharLMTask", "CharLMConfig",
    "ForecastTask", "ForecastConfig", "MNIST1DTask", "MNIST1DConfig", "JapaneseVowelsTask", "JapaneseVowelsConfig",
]
