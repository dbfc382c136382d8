"""One training run under the comparison's protocol, and the run cache.

The loop is the comparison's own rather than ``rnnlab.train``'s because the report needs things a
general trainer has no reason to keep: the pre-clipping gradient norm at every step, a stop at the
first evaluation that meets the task's threshold ("solved within the step budget"), and a
deterministic schedule (the same batches, in the same order, for every cell of a seed).

A run is described by a :class:`RunSpec`; its result (JSON) and final weights (safetensors) are kept
under ``runs/compare/<key>`` where the key hashes the spec, so a rerun trains only what is missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..analysis import count_parameters
from ..models import ModelConfig, SequenceModel
from ..tasks import get_task

CACHE_VERSION = 1  # bump when the loop's meaning changes, so old results are not reused


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


@torch.no_grad()
def evaluate(task, model, batches) -> dict[str, float]:
    was = model.training
    model.eval()
    totals: dict[str, list] = {}
    state = None
    for batch in batches:
        out, state = model(batch.x, state if batch.continues else None)
        for k, (s, n) in task.sums(out, batch).items():
            t = totals.setdefault(k, [0.0, 0])
            t[0] += s
            t[1] += n
    model.train(was)
    return task.summarize({k: (s, n) for k, (s, n) in totals.items()})


def _detach(state):
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def engine_path(layer, x: torch.Tensor) -> str:
    """Which code the layer's engine runs for a time-major input x, e.g. "native-cpp" or "torch-onednn"."""
    engine = layer.select_engine(x)  # the layer's own choice: variants may move it to another engine
    try:
        return engine.path(layer, x) if engine.name == "auto" else engine.path(x)
    except (AttributeError, TypeError):
        return engine.name


def train(spec: RunSpec) -> tuple[RunResult, SequenceModel, Any]:
    """Train one model; returns the result, the trained model and its task."""
    task, model = build(spec)
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    stream = task.train_stream(spec.batch, spec.seed)
    held_out = task.eval_batches(spec.batch * 4, spec.eval_samples)
    probe = held_out[0].x[:1]
    with torch.no_grad():
        engine = engine_path(model.rnn, model.input_map(probe.expand(spec.batch, *probe.shape[1:])).transpose(0, 1))
    res = RunResult(spec=dataclasses.asdict(spec), key=spec.key(), params=count_parameters(model), engine=engine,
                    baselines=task.baselines())
    state = None
    for step in range(1, spec.steps + 1):
        batch = next(stream)
        t0 = time.perf_counter()
        out, new_state = model(batch.x, _detach(state) if batch.continues else None)
        loss = task.loss(out, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), spec.clip))  # the norm before clipping
        opt.step()
        res.step_seconds.append(time.perf_counter() - t0)
        state = new_state
        res.grad_norms.append(norm if math.isfinite(norm) else float("nan"))
        res.steps_run = step
        if step % spec.eval_every == 0 or step == spec.steps:
            metrics = evaluate(task, model, held_out)
            res.history.append({"step": step, **metrics})
            if spec.solve is not None and spec.solve.met(metrics):
                res.solved_at = step
                break
    res.final = {k: v for k, v in res.history[-1].items() if k != "step"}
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
