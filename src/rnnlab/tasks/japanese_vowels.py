"""Japanese vowels (Kudo, Toyama & Shimbo 1999; UCI): which of nine male speakers said /ae/.

Each utterance is a sequence of 7 to 29 frames of 12 LPC-cepstrum coefficients; the split is the
original one, 270 training utterances (30 per speaker) and 370 held out (24 to 88 per speaker). The
data is read from the UEA archive's ``.ts`` files (``JapaneseVowels_TRAIN.ts``, ``_TEST.ts``), which
ship inside the ``aeon`` wheel (``pip install --no-deps aeon`` brings them without aeon's
dependencies; rnnlab never imports aeon, it only finds the folder), or from any folder given as
``task.path``. ``read_ts`` is rnnlab's own parser of that format.

Sequences of different lengths are padded to the batch's longest and passed with ``lengths``, so
the recurrent layer never reads the padding and the model's "last" head reads each utterance's own
last frame. Inputs are standardised per channel by the training frames' mean and sd. Training draws
batches of utterances at random (seeded); the held-out set is all 370. Chance is the largest class's
share of the held-out set (88 / 370).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from .base import Batch, ClassificationTask, Config, ModelSpec, Stream

FILES = ("JapaneseVowels_TRAIN.ts", "JapaneseVowels_TEST.ts")


def read_ts(path: str | Path) -> tuple[list[torch.Tensor], list[str], list[str]]:
    """A ``.ts`` file (sktime/aeon's time-series format) with class labels: the series, each (T, C)
    float64, their labels, and the class names its ``@classLabel`` header declares.

    Header lines start with ``@`` (``@data`` ends the header), comments with ``#``. Each data line is
    C dimensions separated by ``:``, each a comma-separated list of T values, then the label. All
    dimensions of a series must have the same length; missing values (``?``) are refused."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"path: expected a .ts file, got {str(path)!r} (no such file)")
    series, labels, classes = [], [], None
    in_data = False
    for number, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{p.name} line {number}"
        if not in_data:
            if line.lower().startswith("@classlabel"):
                words = line.split()
                if len(words) < 3 or words[1].lower() != "true":
                    raise ValueError(f"{where}: expected '@classLabel true <labels...>', got {line[:60]!r}")
                classes = words[2:]
            elif line.lower() == "@data":
                in_data = True
            elif not line.startswith("@"):
                raise ValueError(f"{where}: expected a header line (@...) before @data, got {line[:60]!r}")
            continue
        if classes is None:
            raise ValueError(f"{p.name}: expected a '@classLabel true ...' header before @data, found none")
        *dims, label = line.split(":")
        if not dims:
            raise ValueError(f"{where}: expected dimensions separated by ':' and a label, got {line[:60]!r}")
        if label not in classes:
            raise ValueError(f"{where}: expected a label among {classes}, got {label!r}")
        try:
            values = [[float(v) for v in d.split(",")] for d in dims]
        except ValueError:
            raise ValueError(f"{where}: expected comma-separated numbers in every dimension, got {line[:60]!r}") from None
        if len({len(v) for v in values}) != 1:
            raise ValueError(f"{where}: expected every dimension to have the same length, got lengths "
                             f"{sorted({len(v) for v in values})}")
        x = torch.tensor(values, dtype=torch.float64).T  # (T, C)
        if not torch.isfinite(x).all():
            raise ValueError(f"{where}: expected finite values, got a missing or non-finite one")
        series.append(x)
        labels.append(label)
    if not series:
        raise ValueError(f"{p.name}: expected at least one series after @data, found none")
    if len({s.shape[1] for s in series}) != 1:
        raise ValueError(f"{p.name}: expected every series to have the same number of dimensions")
    return series, labels, classes


def default_folder() -> Path | None:
    """``aeon/datasets/data/JapaneseVowels`` of an installed aeon (found without importing aeon), or None."""
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "JapaneseVowels"
    return folder if all((folder / f).is_file() for f in FILES) else None


def pad(series: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences (T_i, C) -> zero-padded (B, max T, C) float32 and lengths (B,) int64."""
    lengths = torch.tensor([len(s) for s in series], dtype=torch.int64)
    out = torch.zeros(len(series), int(lengths.max()), series[0].shape[1])
    for i, s in enumerate(series):
        out[i, :len(s)] = s.float()
    return out, lengths


@dataclass
class JapaneseVowelsConfig(Config):
    path: str = ""  # a folder holding JapaneseVowels_TRAIN.ts and _TEST.ts; "" for the one in aeon's wheel


class SampledUtterances(Stream):
    """Batches of training utterances drawn at random without replacement within an epoch (seeded)."""

    def __init__(self, series: list[torch.Tensor], y: torch.Tensor, batch_size: int, seed: int):
        self.series, self.y, self.batch_size = series, y, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(len(series), generator=self.generator)
        self.position = 0

    def __next__(self) -> Batch:
        if self.position + self.batch_size > len(self.order):
            self.order = torch.randperm(len(self.series), generator=self.generator)
            self.position = 0
        idx = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        x, lengths = pad([self.series[i] for i in idx.tolist()])
        return Batch(x, self.y[idx], lengths=lengths)

    def state_dict(self):
        return {"generator": self.generator.get_state(), "order": self.order, "position": self.position}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"], int(state["position"])


class JapaneseVowelsTask(ClassificationTask):
    name = "japanese_vowels"
    Config = JapaneseVowelsConfig
    primary = ("accuracy", "max")

    def __init__(self, config: JapaneseVowelsConfig):
        super().__init__(config)
        folder = Path(config.path) if config.path else default_folder()
        if folder is None:
            raise ValueError("task.path: the Japanese vowels data was not found; install it with "
                             "'pip install --no-deps aeon' (its wheel carries the .ts files) or pass the folder "
                             "holding JapaneseVowels_TRAIN.ts and JapaneseVowels_TEST.ts as task.path")
        missing = [f for f in FILES if not (folder / f).is_file()]
        if missing:
            raise ValueError(f"task.path: expected a folder holding {' and '.join(FILES)}, got {str(folder)!r} "
                             f"(no {', '.join(missing)} there)")
        train, train_labels, classes = read_ts(folder / FILES[0])
        test, test_labels, _ = read_ts(folder / FILES[1])
        frames = torch.cat(train)  # (frames, C) every training frame, for the standardisation
        mean, sd = frames.mean(0), frames.std(0)
        self.classes = classes
        index = {c: i for i, c in enumerate(classes)}
        self.train = [(s - mean) / sd for s in train]
        self.test = [(s - mean) / sd for s in test]
        self.y = torch.tensor([index[c] for c in train_labels])
        self.y_test = torch.tensor([index[c] for c in test_labels])
        self.spec = ModelSpec(inputs="reals", input_size=frames.shape[1], output_size=len(classes), head="last")

    def train_stream(self, batch_size: int, seed: int) -> Stream:
        return SampledUtterances(self.train, self.y, batch_size, seed)

    def eval_batches(self, batch_size: int, samples: int) -> list[Batch]:
        """All held-out utterances, in batches of at most ``batch_size`` (``samples`` is not used)."""
        out = []
        for i in range(0, len(self.test), batch_size):
            x, lengths = pad(self.test[i:i + batch_size])
            out.append(Batch(x, self.y_test[i:i + batch_size], lengths=lengths))
        return out

    def baselines(self):
        counts = torch.bincount(self.y_test, minlength=len(self.classes)).double()
        p = counts / counts.sum()
        return {"accuracy": float(p.max()), "loss": float(-(p[p > 0] * p[p > 0].log()).sum())}

    def describe(self):
        return {**super().describe(), "classes": self.classes}
