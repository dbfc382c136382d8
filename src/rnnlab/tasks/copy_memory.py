"""The copy memory problem (Hochreiter & Schmidhuber 1997; in the form of Arjovsky et al. 2016).

Symbols: 0 is blank, 1..A are data (A = 8), A+1 is the delimiter. The input, T + 2L steps long
(L = 10), is L data symbols drawn uniformly, T - 1 blanks, the delimiter, then L blanks. The target
is T + L blanks followed by the L data symbols: after the delimiter, reproduce what was seen T
steps before. Outputs are logits over the A + 1 classes {blank, 1..A} at every step.

A memoryless strategy — blanks until the delimiter, then a uniform guess among the A symbols —
scores a cross-entropy of L·log A / (T + 2L) per step and an accuracy of 1/A on the copied symbols.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Batch, Config, ModelSpec, Task, check_positive, cross_entropy_sums


@dataclass
class CopyMemoryConfig(Config):
    seq_len: int = 100  # T, the delay between a symbol and its copy
    length: int = 10  # L, how many symbols to copy
    alphabet: int = 8  # A, how many data symbols

    def __post_init__(self):
        check_positive("task.seq_len", self.seq_len)
        check_positive("task.length", self.length)
        if self.alphabet < 2:
            raise ValueError(f"task.alphabet: expected at least 2 data symbols, got {self.alphabet}")


class CopyMemoryTask(Task):
    name = "copy"
    Config = CopyMemoryConfig
    primary = ("accuracy", "max")

    def __init__(self, config: CopyMemoryConfig):
        super().__init__(config)
        A = config.alphabet
        self.blank, self.delimiter = 0, A + 1
        self.spec = ModelSpec(inputs="symbols", input_size=A + 2, output_size=A + 1, head="every")

    def draw(self, batch_size: int, generator: torch.Generator) -> Batch:
        B, T, L, A = batch_size, self.config.seq_len, self.config.length, self.config.alphabet
        data = torch.randint(1, A + 1, (B, L), generator=generator)
        x = torch.zeros(B, T + 2 * L, dtype=torch.int64)
        x[:, :L] = data
        x[:, T + L - 1] = self.delimiter
        y = torch.zeros(B, T + 2 * L, dtype=torch.int64)
        y[:, T + L:] = data
        return Batch(x, y)

    def loss(self, out, batch):
        # out (B, T + 2L, A + 1)
        return torch.nn.functional.cross_entropy(out.flatten(0, 1), batch.y.flatten())

    def sums(self, out, batch):
        L = self.config.length
        ce, _, n = cross_entropy_sums(out, batch.y)
        _, right, m = cross_entropy_sums(out[:, -L:], batch.y[:, -L:])
        return {"loss": (ce, n), "accuracy": (right, m)}

    def baselines(self):
        T, L, A = self.config.seq_len, self.config.length, self.config.alphabet
        return {"loss": L * math.log(A) / (T + 2 * L), "accuracy": 1.0 / A}
