"""Time-series forecasting: predict the next value of a series from the ``seq_len`` before it.

The series is a numeric column of a CSV file (``task.path``, ``task.column``), by default the
yearly sunspot numbers 1700-2008 shipped in ``data/sunspots.csv``. The last ``val_fraction`` of
the targets is held out; the network sees values standardised by the training part's mean and
standard deviation, and is trained on MSE in those units. Metrics are in the series' own units.

Baseline: the naive forecast "next value = last value", scored on the same held-out targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Batch, Config, ModelSpec, Task, check_positive
from .corpus import DEFAULT_COLUMN, DEFAULT_SERIES, read_column


@dataclass
class ForecastConfig(Config):
    path: str = ""  # a CSV file with a header row; "" for the bundled sunspots series
    column: str = ""  # the column to forecast; "" for SUNACTIVITY of the bundled series
    seq_len: int = 20  # how many past values the network reads
    val_fraction: float = 0.2  # the held-out tail of the targets

    def __post_init__(self):
        check_positive("task.seq_len", self.seq_len)
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"task.val_fraction: expected a float in (0, 1), got {self.val_fraction}")


class ForecastTask(Task):
    name = "forecast"
    Config = ForecastConfig
    primary = ("mse", "min")

    def __init__(self, config: ForecastConfig):
        super().__init__(config)
        if config.path:
            if not config.column:
                raise ValueError(f"task.column: expected the name of the column of {config.path!r} to forecast, got ''")
            values = read_column(config.path, config.column)
        else:
            values = read_column(str(DEFAULT_SERIES), config.column or DEFAULT_COLUMN)
        series = torch.tensor(values, dtype=torch.float64)
        T, N = config.seq_len, series.numel()
        targets = N - T  # one target per step with T values before it
        n_val = int(targets * config.val_fraction)
        if targets < 2 or n_val < 1 or targets - n_val < 1:
            raise ValueError(
                f"task.seq_len: a series of {N} values with seq_len = {T} leaves {max(targets, 0)} targets, "
                f"too few to hold out {config.val_fraction:.0%} and train on the rest; use a shorter seq_len or a longer series"
            )
        self.split = N - n_val  # targets at steps >= split are held out
        train_part = series[:self.split]
        self.mean, self.std = float(train_part.mean()), float(train_part.std())
        if not self.std > 0:
            raise ValueError(f"task.column: the training part of the series is constant ({self.mean}); nothing to forecast")
        self.series = series
        self.z = ((series - self.mean) / self.std).float()  # standardised, (N,)
        self.spec = ModelSpec(inputs="reals", input_size=1, output_size=1, head="last")
        held_out = self._windows(torch.arange(self.split, N))
        naive = held_out.x[:, -1, 0].double() * self.std + self.mean
        truth = self.series[self.split:]
        self._naive = {"mse": float((naive - truth).pow(2).mean()), "mae": float((naive - truth).abs().mean())}

    def _windows(self, targets: torch.Tensor) -> Batch:
        """Inputs (B, T, 1) of the T values before each target step, and the targets (B,)."""
        T = self.config.seq_len
        steps = targets.unsqueeze(1) - T + torch.arange(T)  # (B, T)
        return Batch(self.z[steps].unsqueeze(-1), self.z[targets])

    def draw(self, batch_size, generator):
        targets = torch.randint(self.config.seq_len, self.split, (batch_size,), generator=generator)
        return self._windows(targets)

    def eval_batches(self, batch_size: int, samples: int) -> list[Batch]:
        """Every held-out target once, in order (``samples`` is not used)."""
        steps = torch.arange(self.split, self.series.numel())
        return [self._windows(chunk) for chunk in steps.split(batch_size)]

    def loss(self, out, batch):
        # out (B, 1), standardised units
        return (out.squeeze(-1) - batch.y).pow(2).mean()

    def sums(self, out, batch):
        pred = out.squeeze(-1).double()
        err = (pred - batch.y.double()) * self.std  # series units
        naive = (batch.x[:, -1, 0].double() - batch.y.double()) * self.std
        n = err.numel()
        return {
            "loss": (float(((pred - batch.y.double()) ** 2).sum()), n),
            "mse": (float(err.pow(2).sum()), n), "mae": (float(err.abs().sum()), n),
            "naive_mse": (float(naive.pow(2).sum()), n), "naive_mae": (float(naive.abs().sum()), n),
        }

    def baselines(self):
        return {"mse": self._naive["mse"], "mae": self._naive["mae"], "loss": self._naive["mse"] / self.std**2}

    def describe(self):
        return {**super().describe(), "mean": self.mean, "std": self.std, "length": self.series.numel(), "split": self.split}

    def to_units(self, z: torch.Tensor) -> torch.Tensor:
        return z.double() * self.std + self.mean

    @torch.no_grad()
    def forecast(self, model, horizon: int) -> list[float]:
        """``horizon`` values after the series' end, each predicted from the ``seq_len`` before it
        (earlier predictions fed back in as inputs), in the series' units."""
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon: expected a positive int, got {horizon!r}")
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        window = self.z[-self.config.seq_len:].tolist()
        out = []
        for _ in range(horizon):
            x = torch.tensor(window[-self.config.seq_len:], device=device).view(1, -1, 1)
            z, _ = model(x)
            window.append(float(z.view(-1)[0]))
            out.append(float(self.to_units(z.view(-1)[:1].cpu())[0]))
        model.train(was_training)
        return out
