"""The adding problem (Hochreiter & Schmidhuber 1997, experiment 4; in the form of Le et al. 2015).

Each input step carries two channels: a value drawn uniformly from [0, 1] and a marker. Exactly two
markers are 1 — one at a uniformly drawn step of the first half, one in the second half (``placement
= "halves"``, Le et al.'s form), or at two distinct steps drawn uniformly from all T (``"anywhere"``,
the form of Bai, Kolter & Koltun 2018's code) — and the target is the sum of the two marked values.
The answer needs a memory spanning up to T steps.

Always predicting 1 (the target's mean) scores MSE = Var(u_1 + u_2) = 2/12 ≈ 0.167, the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Batch, Config, ModelSpec, Task


PLACEMENTS = ("halves", "anywhere")


@dataclass
class AddingConfig(Config):
    seq_len: int = 100  # T, the number of steps
    placement: str = "halves"  # "halves": one marker in each half; "anywhere": two distinct steps of all T

    def __post_init__(self):
        if self.seq_len < 2:
            raise ValueError(f"task.seq_len: the adding problem needs T >= 2 (one marker per half), got {self.seq_len}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"task.placement: expected one of {', '.join(PLACEMENTS)}, got {self.placement!r}")


class AddingTask(Task):
    name = "adding"
    Config = AddingConfig
    primary = ("mse", "min")

    def __init__(self, config: AddingConfig):
        super().__init__(config)
        self.spec = ModelSpec(inputs="reals", input_size=2, output_size=1, head="last")

    def draw(self, batch_size: int, generator: torch.Generator) -> Batch:
        B, T = batch_size, self.config.seq_len
        half = T // 2
        values = torch.rand(B, T, generator=generator)  # (B, T)
        if self.config.placement == "halves":
            first = torch.randint(0, half, (B,), generator=generator)
            second = torch.randint(half, T, (B,), generator=generator)
        else:  # two distinct steps, uniformly: the second drawn from the T - 1 steps other than the first
            first = torch.randint(0, T, (B,), generator=generator)
            second = torch.randint(0, T - 1, (B,), generator=generator)
            second = second + (second >= first).long()
        rows = torch.arange(B)
        markers = torch.zeros(B, T)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        x = torch.stack([values, markers], dim=-1)  # (B, T, 2)
        y = values[rows, first] + values[rows, second]  # (B,)
        return Batch(x, y)

    def loss(self, out: torch.Tensor, batch: Batch) -> torch.Tensor:
        # out (B, 1)
        return (out.squeeze(-1) - batch.y).pow(2).mean()

    def sums(self, out, batch):
        err = (out.squeeze(-1) - batch.y).float()
        n = err.numel()
        se = float(err.pow(2).sum())
        return {"loss": (se, n), "mse": (se, n)}

    def baselines(self) -> dict[str, float]:
        return {"mse": 1.0 / 6.0, "loss": 1.0 / 6.0}
