"""The temporal order problem (Hochreiter & Schmidhuber 1997, experiment 6a).

A sequence of T symbols: the start marker B, distractors drawn uniformly from {a, b, c, d}, the end
marker E — and two relevant symbols, each X or Y, at a step t1 drawn from [0.1·T, 0.2·T] and a step
t2 from [0.5·T, 0.6·T] (the paper: T = 100..110, t1 in [10, 20], t2 in [50, 60]). The class is
the order of the two: XX, XY, YX or YY. The answer depends on symbols far apart and far from the
end; chance is 25 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Batch, ClassificationTask, Config, ModelSpec

SYMBOLS = ("a", "b", "c", "d", "X", "Y", "B", "E")
CLASSES = ("XX", "XY", "YX", "YY")
_X, _B, _E = SYMBOLS.index("X"), SYMBOLS.index("B"), SYMBOLS.index("E")


@dataclass
class TemporalOrderConfig(Config):
    seq_len: int = 100  # T

    def __post_init__(self):
        if self.seq_len < 10:
            raise ValueError(f"task.seq_len: temporal order needs T >= 10 (so that t1 and t2 fall apart), got {self.seq_len}")


class TemporalOrderTask(ClassificationTask):
    name = "temporal_order"
    Config = TemporalOrderConfig
    primary = ("accuracy", "max")

    def __init__(self, config: TemporalOrderConfig):
        super().__init__(config)
        self.spec = ModelSpec(inputs="symbols", input_size=len(SYMBOLS), output_size=len(CLASSES), head="last")

    def windows(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The inclusive step ranges of t1 and t2."""
        T = self.config.seq_len
        return (T // 10, T // 5), (T // 2, (6 * T) // 10)

    def draw(self, batch_size: int, generator: torch.Generator) -> Batch:
        B, T = batch_size, self.config.seq_len
        (a1, b1), (a2, b2) = self.windows()
        x = torch.randint(0, 4, (B, T), generator=generator)
        x[:, 0], x[:, -1] = _B, _E
        t1 = torch.randint(a1, b1 + 1, (B,), generator=generator)
        t2 = torch.randint(a2, b2 + 1, (B,), generator=generator)
        s1 = torch.randint(0, 2, (B,), generator=generator)  # 0: X, 1: Y
        s2 = torch.randint(0, 2, (B,), generator=generator)
        rows = torch.arange(B)
        x[rows, t1] = _X + s1
        x[rows, t2] = _X + s2
        return Batch(x, 2 * s1 + s2)  # class index into CLASSES

    def baselines(self):
        return {"loss": math.log(len(CLASSES)), "accuracy": 1.0 / len(CLASSES)}
