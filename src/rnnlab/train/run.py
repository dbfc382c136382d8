"""A finished (or interrupted) run brought back from ``runs/<name>/``: its config, task and model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models import SequenceModel
from ..tasks import Task, get_task
from ..tasks.base import ModelSpec
from . import checkpoint
from .config import RunConfig, resolve
from .trainer import resolve_device

TAGS = ("best", "last")


@dataclass
class Run:
    config: RunConfig
    model: SequenceModel  # in eval mode
    meta: dict[str, Any]  # the checkpoint's JSON: step, task description, best evaluation, ...
    directory: Path

    @property
    def step(self) -> int:
        return self.meta["step"]

    def task(self) -> Task:
        """The run's task, rebuilt from its config (reads its data files again)."""
        return get_task(self.config.task_name, **self.config.task.to_dict())


def load_run(run_dir: str | Path, tag: str = "best", device: str = "cpu") -> Run:
    """The model of checkpoint ``tag`` ("best": lowest held-out loss; "last": where training stopped)."""
    if tag not in TAGS:
        raise ValueError(f"checkpoint: expected one of {', '.join(TAGS)}, got {tag!r}")
    d = Path(run_dir)
    if not d.is_dir():
        raise ValueError(f"run: expected a run directory (runs/<name>), got {str(run_dir)!r} (no such directory)")
    tensors, meta = checkpoint.load(d / "checkpoints", tag)
    try:
        config = resolve(meta["config"])
        spec = ModelSpec(**meta["task"]["spec"])
    except KeyError as e:
        raise ValueError(f"checkpoint: the record of {tag!r} in {str(d)!r} lacks {e}; it was not written by rnnlab's trainer") from None
    model = SequenceModel(spec, config.model)
    weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    checkpoint.check_tensors(model.state_dict(), weights, f"model its record describes ({config.model.label()}, "
                             f"H={config.model.hidden}, layers={config.model.layers})")
    model.load_state_dict(weights)
    model.to(resolve_device(device)).eval()
    return Run(config, model, meta, d)
