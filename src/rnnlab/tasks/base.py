"""What every task is: a config, a seeded data source, a loss and metrics.

A task hands out batches (``Batch``) with inputs batch-first — symbols ``x`` (B, T) int64 or reals
``x`` (B, T, C) float32 — and says how a model's output is scored. Models are built from its
``ModelSpec``; the trainer only ever calls the methods below, so a new task is one new file.

``Config`` is the strict dataclass every configuration (tasks, model, trainer) derives from:
unknown keys are an error and a value must have its default's type (an int is accepted for a float).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import torch


# -- strict configs --------------------------------------------------------------------------
class Config:
    """Base of the config dataclasses. ``from_dict`` rejects unknown keys and wrong types."""

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = ""):
        if not isinstance(values, dict):
            raise TypeError(f"{where or cls.__name__}: expected a table of settings, got {type(values).__name__}")
        kwargs = {}
        for key, value in values.items():
            label = f"{where}.{key}" if where else key
            kwargs[key] = coerce(label, value, field_type(cls, key, where or cls.__name__))
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, where: str = "", **changes):
        """A copy with ``changes`` applied under the same rules as ``from_dict``."""
        return type(self).from_dict({**self.to_dict(), **changes}, where)


def _default(field: dataclasses.Field) -> Any:
    return field.default if field.default is not dataclasses.MISSING else field.default_factory()


def coerce(label: str, value: Any, kind: type) -> Any:
    """``value`` checked to be of type ``kind`` (the default's type); an int is accepted for a float."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not kind:
        raise TypeError(f"{label}: expected {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def parse(label: str, text: str, kind: type) -> Any:
    """A command-line string read as ``kind`` (bool, int, float or str)."""
    if kind is str:
        return text
    if kind is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
    else:
        try:
            return kind(text)
        except ValueError:
            pass
    raise TypeError(f"{label}: expected {kind.__name__}, got {text!r}")


def field_type(cls: type, key: str, where: str) -> type:
    """The type of setting ``key`` of config class ``cls`` (its default's type)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        raise ValueError(f"{where}.{key}: unknown setting; expected one of {', '.join(sorted(fields))}")
    return type(_default(fields[key]))


def check_positive(label: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{label}: expected a positive int, got {value}")


# -- what a task exchanges with models and the trainer ------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """What a model needs from its task. ``inputs``: "symbols" (an embedding of ``input_size``
    symbols) or "reals" (``input_size`` channels). ``head``: "last" (one output per sequence),
    "every" (one per step) or "flat" (one per sequence, read from every step's output at once:
    a linear map of the (T·D·H) flattened outputs, for sequences of a fixed length ``steps``).
    ``output_size``: logits or values per output."""

    inputs: str
    input_size: int
    output_size: int
    head: str
    steps: int = 0  # the fixed sequence length T, for head "flat" only


@dataclass
class Batch:
    """One batch. ``x`` (B, T) int64 or (B, T, C) float32; ``y`` the targets. ``continues``: the
    batch follows on from the previous one, so a model's final state should be carried over
    (truncated BPTT); False for independent sequences. ``lengths`` (B,) int64: the true lengths of
    sequences padded to T (steps from ``lengths[b]`` on are padding), or None when all are T long."""

    x: torch.Tensor
    y: torch.Tensor
    continues: bool = False
    lengths: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments a model's forward takes besides the input and state (``lengths``)."""
        return {} if self.lengths is None else {"lengths": self.lengths}

    def shard(self, rank: int, world: int) -> "Batch":
        """The rank-th of ``world`` equal contiguous slices of the batch (data parallelism)."""
        b = len(self) // world
        part = slice(rank * b, (rank + 1) * b)
        return Batch(self.x[part], self.y[part], self.continues, None if self.lengths is None else self.lengths[part])

    def to(self, device) -> "Batch":
        return Batch(self.x.to(device), self.y.to(device), self.continues,
                     None if self.lengths is None else self.lengths.to(device))


class Stream(abc.ABC):
    """A seeded, resumable source of training batches."""

    @abc.abstractmethod
    def __next__(self) -> Batch:
        """The next training batch."""

    def __iter__(self) -> Iterator[Batch]:
        return self

    def state_dict(self) -> dict[str, Any]:
        """Tensors and JSON-able values that restore the stream exactly (see ``load_state_dict``)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class SampledStream(Stream):
    """Independent sequences drawn by ``draw(batch_size, generator)`` from a seeded generator."""

    def __init__(self, draw, batch_size: int, seed: int):
        self.draw, self.batch_size = draw, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __next__(self) -> Batch:
        return self.draw(self.batch_size, self.generator)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


# every synthetic task's held-out set comes from this seed, whatever the training seed, so that
# runs with different seeds are scored on the same sequences
EVAL_SEED = 2**31 - 1


class Task(abc.ABC):
    """A seeded data source, a loss and metrics. Subclasses set ``name``, ``Config``, ``spec`` and
    define ``draw`` (synthetic tasks) or ``train_stream``/``eval_batches``, ``loss``, ``sums``,
    ``summarize`` and ``baselines``."""

    name: ClassVar[str]
    Config: ClassVar[type]
    # the metric that says how well the task is solved, and whether lower ("min") or higher is better
    primary: ClassVar[tuple[str, str]]
    spec: ModelSpec

    def __init__(self, config):
        self.config = config

    # -- data ------------------------------------------------------------------------------
    def draw(self, batch_size: int, generator: torch.Generator) -> Batch:
        raise TypeError(f"{type(self).__name__} draws no random batches; use train_stream/eval_batches")

    def train_stream(self, batch_size: int, seed: int) -> Stream:
        return SampledStream(self.draw, batch_size, seed)

    def eval_batches(self, batch_size: int, samples: int) -> list[Batch]:
        """The held-out set: ``samples`` sequences in batches of at most ``batch_size``."""
        g = torch.Generator().manual_seed(EVAL_SEED)
        sizes = [batch_size] * (samples // batch_size) + ([samples % batch_size] if samples % batch_size else [])
        return [self.draw(n, g) for n in sizes]

    # -- scoring -----------------------------------------------------------------------------
    @abc.abstractmethod
    def loss(self, out: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The training objective, a mean over the batch (and over scored steps)."""

    @abc.abstractmethod
    def sums(self, out: torch.Tensor, batch: Batch) -> dict[str, tuple[float, int]]:
        """Per-metric (sum, count) over one batch; ``summarize`` turns totals into metrics."""

    def summarize(self, totals: dict[str, tuple[float, int]]) -> dict[str, float]:
        return {k: s / max(n, 1) for k, (s, n) in totals.items()}

    @abc.abstractmethod
    def baselines(self) -> dict[str, float]:
        """Scores of the task's trivial solution (e.g. always predicting the mean), per metric."""

    def describe(self) -> dict[str, Any]:
        """JSON-able facts a run needs later without the data (vocabulary, normalisation)."""
        return {"name": self.name, "config": self.config.to_dict(), "spec": dataclasses.asdict(self.spec)}


class ClassificationTask(Task):
    """A task with one class per sequence: ``out`` (B, classes) logits, ``y`` (B,) class indices;
    trained on the cross-entropy, scored by it and by accuracy."""

    def loss(self, out, batch):
        return torch.nn.functional.cross_entropy(out, batch.y)

    def sums(self, out, batch):
        ce, right, n = cross_entropy_sums(out, batch.y)
        return {"loss": (ce, n), "accuracy": (right, n)}


def cross_entropy_sums(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None):
    """Summed cross-entropy (nats), correct count and count over the positions in ``mask``."""
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, -2).float(), target.flatten(), reduction="none")
    right = (logits.argmax(-1).flatten() == target.flatten())
    if mask is not None:
        m = mask.flatten()
        ce, right = ce[m], right[m]
    return float(ce.sum()), int(right.sum()), int(ce.numel())


LOG2 = math.log(2.0)
