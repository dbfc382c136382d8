"""Look-ahead tagging: a sequence-labelling task whose labels depend on inputs after them.

Inputs are T symbols drawn uniformly from V; the label of step t is the input symbol at step t + k
(k = ``shift``); the last k steps have no label and are not scored. A forward-only network has not
seen x_{t+k} when it must label step t, so it can do no better than chance (accuracy 1/V,
cross-entropy log V); a bidirectional network reads it from its reverse direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Batch, Config, ModelSpec, Task, check_positive, cross_entropy_sums

IGNORE = -100  # torch's ignore_index: steps without a label


@dataclass
class TaggingConfig(Config):
    seq_len: int = 20  # T
    vocab: int = 8  # V
    shift: int = 3  # k

    def __post_init__(self):
        check_positive("task.shift", self.shift)
        if self.vocab < 2:
            raise ValueError(f"task.vocab: expected at least 2 symbols, got {self.vocab}")
        if self.seq_len <= self.shift:
            raise ValueError(f"task.seq_len: expected T > shift = {self.shift} (so some step has a label), got {self.seq_len}")


class TaggingTask(Task):
    name = "tagging"
    Config = TaggingConfig
    primary = ("accuracy", "max")

    def __init__(self, config: TaggingConfig):
        super().__init__(config)
        self.spec = ModelSpec(inputs="symbols", input_size=config.vocab, output_size=config.vocab, head="every")

    def draw(self, batch_size, generator):
        T, V, k = self.config.seq_len, self.config.vocab, self.config.shift
        x = torch.randint(0, V, (batch_size, T), generator=generator)
        y = torch.full_like(x, IGNORE)
        y[:, :T - k] = x[:, k:]  # label_t = x_{t+k}
        return Batch(x, y)

    def loss(self, out, batch):
        # out (B, T, V)
        return torch.nn.functional.cross_entropy(out.flatten(0, 1), batch.y.flatten(), ignore_index=IGNORE)

    def sums(self, out, batch):
        mask = batch.y != IGNORE
        ce, right, n = cross_entropy_sums(out, batch.y.clamp(min=0), mask)
        return {"loss": (ce, n), "accuracy": (right, n)}

    def baselines(self):
        V = self.config.vocab
        return {"loss": math.log(V), "accuracy": 1.0 / V}
