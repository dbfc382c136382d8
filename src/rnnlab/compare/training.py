"""One training run under the comparison's protocol, and the run cache.

Every run trains through ``rnnlab.train.Trainer`` (the one training loop), with two of its hooks:
a per-step hook that keeps the pre-clipping gradient norm and the wall time of every step, and a
stop rule that ends a run at the first evaluation meeting the task's threshold ("solved within the
step budget"). The schedule is deterministic: the same batches, in the same order, for every cell
of a seed.

A run is described by a :class:`RunSpec`; its result (JSON) and final weights (safetensors) are kept
under ``runs/compare/<key>`` where the key hashes the spec, so a rerun trains only what is missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..analysis import count_parameters
from ..models import ModelConfig, SequenceModel
from ..tasks import get_task
from ..train import RunConfig, Trainer, resolve

CACHE_VERSION = 2  # bump when the loop's meaning changes, so old results are not reused


@dataclass(frozen=True)
class Solve:
    """A task counts as solved when ``metric`` is below (``"<"``) or above (``">"``) ``threshold``."""

    metric: str
    op: str
    threshold: float

    def met(self, metrics: dict[str, float]) -> bool:
        v = metrics[self.metric]
        return v < self.threshold if self.op == "<" else v > self.threshold

    def text(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run's result."""

    task: str
    task_settings: tuple  # ((name, value), ...) overriding the task config's defaults
    model: tuple  # ((name, value), ...) overriding ModelConfig's defaults
    steps: int
    batch: int
    lr: float
    clip: float
    eval_every: int
    eval_samples: int
    seed: int
    solve: Solve | None = None

    def task_kwargs(self) -> dict[str, Any]:
        return dict(self.task_settings)

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(dict(self.model), "model")

    def key(self) -> str:
        blob = json.dumps({"v": CACHE_VERSION, **dataclasses.asdict(self)}, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    def cost(self) -> float:
        """A rough relative cost (for progress estimates): steps × steps per sequence × gates × levels."""
        m = self.model_config()
        T = dict(self.task_settings).get("seq_len", 50) + (2 * dict(self.task_settings).get("length", 0))
        gates = {"rnn": 1.5, "lstm": 4, "gru": 3}[m.cell]
        return self.steps * T * gates * m.layers * (2 if m.bidirectional else 1) * max(m.hidden / 32, 1) ** 1.5


@dataclass
class RunResult:
    spec: dict
    key: str
    params: int
    history: list = field(default_factory=list)  # [{"step": s, metric: value, ...}] at every evaluation
    grad_norms: list = field(default_factory=list)  # pre-clipping global gradient norm at every step
    step_seconds: list = field(default_factory=list)  # wall time of every training step
    solved_at: int | None = None  # the first evaluated step that met the threshold
    steps_run: int = 0
    final: dict = field(default_factory=dict)
    engine: str = ""
    baselines: dict = field(default_factory=dict)


def build(spec: RunSpec):
    """The task and a freshly initialised model for ``spec`` (initialisation seeded by spec.seed)."""
    task = get_task(spec.task, **spec.task_kwargs())
    torch.manual_seed(spec.seed)
    model = SequenceModel(task.spec, spec.model_config())
    return task, model


def run_config(spec: RunSpec) -> RunConfig:
    """The trainer's config for ``spec``: Adam at a constant learning rate (AdamW without decay, no
    warm-up), clipping at ``spec.clip`` (0: none), no files, no progress bar."""
    return resolve({
        "task": {"name": spec.task, **spec.task_kwargs()},
        "model": dict(spec.model),
        "train": {"steps": spec.steps, "batch_size": spec.batch, "lr": spec.lr, "weight_decay": 0.0, "clip": spec.clip,
                  "warmup": 0, "schedule": "constant", "eval_every": spec.eval_every, "eval_samples": spec.eval_samples,
                  "seed": spec.seed, "log_every": spec.steps, "progress": False, "tensorboard": False},
    })


def engine_path(layer, x: torch.Tensor) -> str:
    """Which code the layer's engine runs for a time-major input x, e.g. "native-cpp" or "torch-onednn"."""
    engine = layer.select_engine(x)  # the layer's own choice: variants may move it to another engine
    try:
        return engine.path(layer, x) if engine.name == "auto" else engine.path(x)
    except (AttributeError, TypeError):
        return engine.name


def train(spec: RunSpec) -> tuple[RunResult, SequenceModel, Any]:
    """Train one model with ``rnnlab.train.Trainer``; returns the result, the trained model and its task.

    The trainer's per-step hook records the pre-clipping gradient norm and the wall time of every
    step; its stop rule ends the run at the first evaluation that meets ``spec.solve``."""
    trainer = Trainer(run_config(spec))
    model, task = trainer.model, trainer.task
    probe = trainer.eval_set[0].x[:1]
    with torch.no_grad():
        engine = engine_path(model.rnn, model.input_map(probe.expand(spec.batch, *probe.shape[1:])).transpose(0, 1))
    res = RunResult(spec=dataclasses.asdict(spec), key=spec.key(), params=count_parameters(model), engine=engine,
                    baselines=task.baselines())

    def on_step(record: dict) -> None:
        norm = record["grad_norm"]
        res.grad_norms.append(norm if math.isfinite(norm) else float("nan"))
        res.step_seconds.append(record["seconds"])

    try:
        out = trainer.fit(on_step=on_step, stop_when=spec.solve.met if spec.solve is not None else None)
    finally:
        trainer.close()
    res.history = [{k: v for k, v in r.items() if k not in ("kind", "improved")} for r in out.evals()]
    res.steps_run = out.step
    if spec.solve is not None and spec.solve.met(res.history[-1]):
        res.solved_at = res.history[-1]["step"]
    res.final = dict(out.final)
    return res, model, task


class RunCache:
    """Results and weights of finished runs under ``root``, one folder per spec key."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _dir(self, spec: RunSpec) -> Path:
        return self.root / spec.key()

    def has(self, spec: RunSpec) -> bool:
        d = self._dir(spec)
        return (d / "result.json").is_file() and (d / "model.safetensors").is_file()

    def save(self, spec: RunSpec, result: RunResult, model) -> None:
        d = self._dir(spec)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
        tmp = d / "result.json.tmp"
        tmp.write_text(json.dumps(dataclasses.asdict(result)), encoding="utf-8")
        tmp.replace(d / "result.json")

    def result(self, spec: RunSpec) -> dict:
        return json.loads((self._dir(spec) / "result.json").read_text(encoding="utf-8"))

    def model(self, spec: RunSpec):
        """The trained model of a finished run (and its task)."""
        task, model = build(spec)
        model.load_state_dict(load_file(str(self._dir(spec) / "model.safetensors")))
        return model, task
