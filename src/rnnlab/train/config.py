"""A run's configuration: task, model and trainer sections, from TOML files and overrides.

    name = "adding-lstm"          # the run directory is runs/<name>
    [task]
    name = "adding"               # one of rnnlab.tasks.TASKS; the other keys are its Config's
    seq_len = 100
    [model]                       # rnnlab.models.ModelConfig
    cell = "lstm"
    [train]                       # TrainConfig below
    steps = 2000

Every key is checked: an unknown key is an error, and a value must have its default's type.
Overrides are dotted keys (``train.lr``) and win over the file; an override of ``task.name`` with
another task starts the task section from that task's defaults (the file's task settings were
written for the other task).
"""

from __future__ import annotations

import copy
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models import ModelConfig
from ..tasks import TASKS, task_class
from ..tasks.base import Config, check_positive, field_type, parse

SCHEDULES = ("cosine", "constant")


@dataclass
class TrainConfig(Config):
    steps: int = 2000  # optimiser steps
    batch_size: int = 64  # the global batch (split across processes under torchrun)
    lr: float = 3e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.01  # AdamW's decoupled decay, on weight matrices only
    clip: float = 1.0  # clip gradients to this global norm; 0 disables (the norm is logged either way)
    warmup: int = 50  # steps of linear warm-up from 0 to lr
    schedule: str = "cosine"  # after warm-up: "cosine" decay to min_lr·lr, or "constant"
    min_lr: float = 0.1  # the cosine schedule's floor, as a fraction of lr
    eval_every: int = 100  # steps between held-out evaluations (and checkpoints)
    eval_samples: int = 1024  # held-out sequences of synthetic tasks
    patience: int = 0  # stop after this many evaluations without improvement; 0 never stops early
    log_every: int = 10  # steps between training-metric records
    max_bad_steps: int = 10  # a step with a non-finite loss or gradient is skipped; this many in a row stop the run
    seed: int = 0  # seeds model initialisation, data and dropout
    device: str = "cpu"  # "cpu", "cuda" or "auto"
    progress: bool = True  # tqdm progress bar
    tensorboard: bool = True  # also write TensorBoard scalars when tensorboard is installed

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "eval_samples", "log_every", "max_bad_steps"):
            check_positive(f"train.{name}", getattr(self, name))
        for name in ("lr", "weight_decay", "clip", "min_lr"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"train.{name}: expected a non-negative float, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"train.lr: expected a positive float, got {self.lr}")
        for name in ("warmup", "patience", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name}: expected a non-negative int, got {getattr(self, name)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule: expected one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.device not in ("cpu", "cuda", "auto") and not self.device.startswith("cuda:"):
            raise ValueError(f"train.device: expected 'cpu', 'cuda', 'cuda:N' or 'auto', got {self.device!r}")


@dataclass
class RunConfig:
    """Everything that defines a run. ``task`` is the task's own config dataclass."""

    task: Config = field(default_factory=lambda: TASKS["adding"].Config())
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = ""  # the run's directory name; "" for "<task>-<model label>-s<seed>"

    @property
    def task_name(self) -> str:
        return next(n for n, t in TASKS.items() if isinstance(self.task, t.Config))

    def run_name(self) -> str:
        return self.name or f"{self.task_name}-{self.model.label()}-s{self.train.seed}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": {"name": self.task_name, **self.task.to_dict()},
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        return resolve(values)

    def replace(self, **overrides: Any) -> "RunConfig":
        """A copy with dotted-key ``overrides`` applied, e.g. ``replace(**{"train.lr": 1e-3})``."""
        return resolve(self.to_dict(), overrides)


SECTIONS = {"model": ModelConfig, "train": TrainConfig}


def _section_class(section: str, task: str) -> type:
    return task_class(task).Config if section == "task" else SECTIONS[section]


def resolve(raw: dict[str, Any], overrides: dict[str, Any] | None = None) -> RunConfig:
    """A checked ``RunConfig`` from a nested table (a parsed TOML file) and dotted-key overrides.

    Override values may be typed, or strings (from a command line) parsed as the setting's type.
    """
    if not isinstance(raw, dict):
        raise TypeError(f"config: expected a table, got {type(raw).__name__}")
    merged = copy.deepcopy(raw)
    unknown = set(merged) - {"name", "task", "model", "train"}
    if unknown:
        raise ValueError(f"config: unknown key(s) {', '.join(sorted(unknown))}; expected name, [task], [model], [train]")
    for section in ("task", "model", "train"):
        if not isinstance(merged.setdefault(section, {}), dict):
            raise TypeError(f"{section}: expected a table of settings, got {type(merged[section]).__name__}")
    overrides = dict(overrides or {})
    for key in ("name", "task.name"):
        if key in overrides:
            value = overrides.pop(key)
            if not isinstance(value, str):
                raise TypeError(f"{key}: expected str, got {type(value).__name__} {value!r}")
            if key == "name":
                merged["name"] = value
            elif value != merged["task"].get("name", "adding"):
                # the table's task settings belong to the task being replaced: start from the new one's defaults
                merged["task"] = {"name": value}
    task = merged["task"].pop("name", "adding")
    if not isinstance(task, str):
        raise TypeError(f"task.name: expected str, got {type(task).__name__} {task!r}")
    task_class(task)  # names the allowed tasks when it is not one
    for key, value in overrides.items():
        section, _, setting = key.partition(".")
        if section not in ("task", "model", "train") or not setting:
            raise ValueError(f"{key}: unknown setting; expected name, task.name or task.*, model.*, train.* keys")
        kind = field_type(_section_class(section, task), setting, section)
        merged[section][setting] = parse(key, value, kind) if isinstance(value, str) else value
    name = merged.get("name", "")
    if not isinstance(name, str):
        raise TypeError(f"name: expected str, got {type(name).__name__} {name!r}")
    return RunConfig(
        task=_section_class("task", task).from_dict(merged["task"], "task"),
        model=ModelConfig.from_dict(merged["model"], "model"),
        train=TrainConfig.from_dict(merged["train"], "train"),
        name=name,
    )


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """``resolve`` on a TOML file (or on the defaults when ``path`` is None)."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"config: expected a TOML file, got {str(path)!r} (no such file)")
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"config: {str(path)!r} is not valid TOML: {e}") from None
    return resolve(raw, overrides)


def to_toml(config: RunConfig) -> str:
    """The config as TOML that ``load_config`` reads back to an equal config."""
    d = config.to_dict()

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            # a TOML basic string: JSON's escapes are TOML's, once non-ASCII stays literal (TOML has
            # no surrogate-pair escapes)
            return json.dumps(v, ensure_ascii=False)
        return repr(v)

    lines = [f"name = {value(d['name'])}"]
    for section in ("task", "model", "train"):
        lines += ["", f"[{section}]"] + [f"{k} = {value(v)}" for k, v in d[section].items()]
    return "\n".join(lines) + "\n"
