"""MNIST-1D (Greydanus & Kobak 2024): ten 1-D digit templates, randomly padded, scaled, shifted,
sheared and noised into sequences of 40 values; classify the digit.

The data is the dataset's default (``mnist1d.data.make_dataset(get_dataset_args())``: 5000
sequences, seed 42, the first 4000 for training and the last 1000 held out), generated here by
``make_dataset``, a numpy transcription of the ``mnist1d`` package's generator that draws the same
random numbers in the same order, so it needs neither that package nor scipy (the tests compare the
two arrays when ``mnist1d`` is installed). The generator's steps, per sequence:

    x  = template (12 values) + 1e-8, then p ~ U{36..60} zeros appended       pad
    x  = x linearly interpolated to 72 points                                 dilate
    x *= 1 + 0.4 (u - ½)                                                      scale
    x  = roll(x, k), k ~ U{0..47}                                             translate
    x  = x where x ≠ 0, else Gaussian-smoothed (σ = 2) noise of scale 0.25    correlated noise
    x += 0.02 · N(0, 1)                                                       iid noise
    x -= 0.75 (u - ½) · linspace(-½, ½, 72)                                   shear
    x  = x linearly interpolated to 40 points                                 subsample

then all sequences are shuffled and standardised (over the whole set) to mean 0, sd 1.

Training follows the dataset authors' own loop (``notebooks/train.py`` in the mnist1d repository):
batches of consecutive training sequences in a fixed order, wrapping around; so ``train.seed``
changes only the model's initialisation. Chance is 10 %.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .base import Batch, ClassificationTask, Config, ModelSpec, Stream

TEMPLATE_ROWS = (
    (5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5),
    (5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5),
    (5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5),
    (5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5),
    (5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5),
    (5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5),
    (5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5),
    (5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5),
    (5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5),
    (5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5),
)
# the dataset's defaults (mnist1d.data.get_dataset_args)
NUM_SAMPLES, TRAIN_SPLIT, TEMPLATE_LEN, PADDING = 5000, 0.8, 12, (36, 60)
SCALE_COEFF, MAX_TRANSLATION, CORR_NOISE, IID_NOISE, SHEAR = 0.4, 48, 0.25, 2e-2, 0.75
FINAL_LENGTH, SEED = 40, 42


def templates() -> np.ndarray:
    """The ten templates (10, 12), whitened and shifted to start at 0, divided by 6 (as the dataset does)."""
    x = np.asarray(TEMPLATE_ROWS, dtype=np.float64)
    x -= x.mean(1, keepdims=True)
    x /= x.std(1, keepdims=True)
    x -= x[:, :1]
    return x / 6.0


def _interpolate(x: np.ndarray, n: int) -> np.ndarray:
    return np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(x)), x)


def _gaussian_filter(x: np.ndarray, sigma: float) -> np.ndarray:
    """1-D Gaussian smoothing with scipy.ndimage's defaults: radius 4σ, edges mirrored ("reflect")."""
    radius = int(4.0 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.concatenate([x[:radius][::-1], x, x[-radius:][::-1]])
    return np.convolve(padded, k, mode="valid")


def _transform(x: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    p = PADDING[0] + int(rng.rand() * (PADDING[1] - PADDING[0] + 1))
    x = np.concatenate([x + 1e-8, np.zeros(p)])  # pad
    x = _interpolate(x, TEMPLATE_LEN + PADDING[1])  # dilate
    x = x * (1 + SCALE_COEFF * (rng.rand() - 0.5))  # scale
    k = rng.choice(MAX_TRANSLATION)
    x = np.concatenate([x[-k:], x[:-k]])  # translate (k = 0 leaves x as it is)
    mask = x != 0
    x = mask * x + (1 - mask) * _gaussian_filter(CORR_NOISE * rng.randn(*x.shape), 2)  # correlated noise
    x = x + IID_NOISE * rng.randn(*x.shape)  # iid noise
    x = x - SHEAR * (rng.rand() - 0.5) * np.linspace(-0.5, 0.5, len(x))  # shear
    return _interpolate(x, FINAL_LENGTH)  # subsample


def make_dataset() -> dict[str, np.ndarray]:
    """The default MNIST-1D dataset: ``x`` (4000, 40), ``y`` (4000,), ``x_test`` (1000, 40), ``y_test`` (1000,)."""
    rng = np.random.RandomState(SEED)  # the legacy global generator np.random.seed(42) sets up
    t = templates()
    xs, ys = [], []
    for label in range(10):
        for _ in range(NUM_SAMPLES // 10):
            xs.append(_transform(t[label], rng))
            ys.append(label)
    order = rng.permutation(len(ys))
    xs, ys = np.stack(xs)[order], np.asarray(ys)[order]
    xs = (xs - xs.mean()) / xs.std()
    split = int(len(ys) * TRAIN_SPLIT)
    return {"x": xs[:split], "y": ys[:split], "x_test": xs[split:], "y_test": ys[split:]}


HEADS = ("flat", "last")


@dataclass
class MNIST1DConfig(Config):
    """The data is always the dataset's default; only how a model reads the sequence can change."""

    head: str = "flat"  # "flat": a linear map of all 40 steps' outputs (the authors' GRU); "last": the last step's

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"task.head: expected one of {', '.join(HEADS)}, got {self.head!r}")


class OrderedStream(Stream):
    """Consecutive batches of a fixed training set, wrapping around (the dataset authors' loop)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.position = 0

    def __next__(self) -> Batch:
        start = (self.position * self.batch_size) % len(self.x)
        self.position += 1
        return Batch(self.x[start:start + self.batch_size], self.y[start:start + self.batch_size])

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


class MNIST1DTask(ClassificationTask):
    name = "mnist1d"
    Config = MNIST1DConfig
    primary = ("accuracy", "max")

    def __init__(self, config: MNIST1DConfig):
        super().__init__(config)
        data = make_dataset()
        as_x = lambda a: torch.from_numpy(a).float().unsqueeze(-1)  # (N, 40, 1)
        self.x, self.y = as_x(data["x"]), torch.from_numpy(data["y"]).long()
        self.x_test, self.y_test = as_x(data["x_test"]), torch.from_numpy(data["y_test"]).long()
        self.spec = ModelSpec(inputs="reals", input_size=1, output_size=10, head=config.head, steps=FINAL_LENGTH)

    def train_stream(self, batch_size: int, seed: int) -> Stream:
        return OrderedStream(self.x, self.y, batch_size)

    def eval_batches(self, batch_size: int, samples: int) -> list[Batch]:
        """The 1000 held-out sequences, in batches of at most ``batch_size`` (``samples`` is not used)."""
        return [Batch(self.x_test[i:i + batch_size], self.y_test[i:i + batch_size])
                for i in range(0, len(self.x_test), batch_size)]

    def baselines(self):
        return {"accuracy": 0.1, "loss": float(np.log(10.0))}
