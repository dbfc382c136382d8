"""The comparison's protocol: which runs, at which sizes, under which budget — one ``Profile`` per
scale ("tiny" for the tests, "quick" a short check, "standard" the project's report, "full" the
larger ladder and the yardsticks' published budgets, for bigger machines).

Every cell gets the same task data, optimiser (Adam, one learning rate per task), gradient clipping,
step budget, evaluation schedule and seeds. Two views of size: the same hidden size H for every
cell, and (second view) an equal parameter budget — each cell's H chosen so that its whole model
has as nearly as possible as many parameters as the LSTM's model at H.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..analysis import closed_form_parameters
from ..tasks import get_task
from . import yardsticks as ys
from .training import RunSpec, Solve
from .yardsticks import Yardstick

CELLS = ("rnn", "lstm", "gru")
# the seed's cells as the seed writes them: tanh RNN, LSTM, GRU with the reset gate before W_h
CELL_OPTIONS = {"rnn": (("nonlinearity", "tanh"),), "lstm": (), "gru": (("reset", "before"),)}

# the LSTM variants set beside the plain LSTM on the adding problem's longest rung (report: Variants)
LSTM_VARIANTS = (("layer norm", (("layer_norm", True),)), ("peepholes", (("peepholes", True),)),
                 ("coupled (CIFG)", (("coupled", True),)))

SOLVE = {
    "adding": Solve("mse", "<", 0.01),  # 6 % of the 0.167 baseline of always answering 1
    "copy": Solve("accuracy", ">", 0.99),  # of the copied symbols
    "temporal_order": Solve("accuracy", ">", 0.99),
}


@dataclass(frozen=True)
class MemoryTask:
    """A long-term-memory task climbed over a ladder of sequence lengths T."""

    name: str
    settings: tuple  # task settings other than seq_len
    lengths: tuple
    lr: float
    steps: int


@dataclass(frozen=True)
class Stage:
    """A fixed-budget training stage on one task (char-LM, forecasting, tagging)."""

    task: str
    settings: tuple
    hidden: int
    embedding: int
    steps: int
    lr: float
    eval_every: int


@dataclass(frozen=True)
class Profile:
    name: str
    seeds: tuple
    hidden: int
    embedding: int
    batch: int
    clip: float
    eval_every: int
    eval_samples: int
    memory: tuple  # of MemoryTask
    charlm: Stage
    forecast: Stage
    tagging: Stage
    variants: tuple  # ((layers, bidirectional), ...) on the tagging task
    timing_steps: int  # timed training steps per (cell, implementation, length), after warm-up
    jobs: int  # training processes at once
    yardsticks: tuple = ()  # of Yardstick: published protocols, each run for every cell and seed

    def memory_task(self, name: str) -> MemoryTask:
        return next(m for m in self.memory if m.name == name)


def _profile(name, seeds, hidden, embedding, lengths, steps, copy_settings, charlm, forecast, tagging, variants,
             timing_steps, jobs, eval_samples=256, eval_every=50, yardsticks=()):
    add_len, copy_len, order_len = lengths
    return Profile(
        name=name, seeds=seeds, hidden=hidden, embedding=embedding, batch=32, clip=1.0, eval_every=eval_every,
        eval_samples=eval_samples,
        memory=(
            MemoryTask("adding", (), add_len, 1e-2, steps),
            MemoryTask("copy", copy_settings, copy_len, 3e-3, steps),
            MemoryTask("temporal_order", (), order_len, 1e-2, steps),
        ),
        charlm=charlm, forecast=forecast, tagging=tagging, variants=variants, timing_steps=timing_steps, jobs=jobs,
        yardsticks=yardsticks,
    )


PROFILES = {
    "tiny": _profile(
        "tiny", (0, 1, 2), 8, 8, ((5, 10), (4, 8), (10, 12)), 20, (("length", 2), ("alphabet", 3)),
        Stage("char_lm", (("seq_len", 20), ("max_chars", 20_000)), 16, 8, 20, 1e-2, 10),
        Stage("forecast", (("seq_len", 10),), 8, 8, 20, 1e-2, 10),
        Stage("tagging", (("seq_len", 10), ("vocab", 4), ("shift", 2)), 8, 8, 10, 1e-2, 5),
        ((1, False), (1, True), (2, True)), 3, 2, eval_samples=64, eval_every=10,
        yardsticks=(replace(ys.mnist1d(20), eval_every=10), replace(ys.bai_copy(4), settings=(("seq_len", 12), ("length", 3),
                                                                                             ("alphabet", 4)), eval_every=2)),
    ),
    "quick": _profile(
        "quick", (0, 1, 2), 32, 16, ((10, 30, 100, 200), (10, 20, 40), (10, 30, 100, 200)), 1500,
        (("length", 3), ("alphabet", 4)),
        Stage("char_lm", (("seq_len", 50), ("max_chars", 200_000)), 64, 32, 1000, 1e-2, 250),
        Stage("forecast", (("seq_len", 20),), 32, 16, 1000, 3e-3, 100),
        Stage("tagging", (("seq_len", 20), ("vocab", 8), ("shift", 3)), 32, 16, 300, 1e-2, 100),
        ((1, False), (2, False), (3, False), (1, True), (2, True), (3, True)), 30, 2,
    ),
    # the project's report: quick's sections, a char-LM trained long enough to answer the Performance
    # row, and the yardsticks (about 60 minutes on 2 quiet cores from an empty cache)
    "standard": _profile(
        "standard", (0, 1, 2), 32, 16, ((10, 30, 100, 200), (10, 20, 40), (10, 30, 100, 200)), 1500,
        (("length", 3), ("alphabet", 4)),
        Stage("char_lm", (("seq_len", 100), ("max_chars", 0)), 256, 32, 1000, 3e-3, 200),
        Stage("forecast", (("seq_len", 20),), 32, 16, 1000, 3e-3, 100),
        Stage("tagging", (("seq_len", 20), ("vocab", 8), ("shift", 3)), 32, 16, 300, 1e-2, 100),
        ((1, False), (2, False), (3, False), (1, True), (2, True), (3, True)), 30, 2,
        yardsticks=(ys.mnist1d(), ys.japanese_vowels(), ys.bai_adding(100), ys.bai_copy(200)),
    ),
    "full": _profile(
        "full", (0, 1, 2, 3, 4), 64, 32, ((10, 30, 100, 200, 400, 750), (10, 20, 40, 80, 160), (10, 30, 100, 200, 400)),
        6000, (("length", 5), ("alphabet", 4)),
        Stage("char_lm", (("seq_len", 100), ("max_chars", 0)), 128, 32, 5000, 3e-3, 500),
        Stage("forecast", (("seq_len", 20),), 64, 16, 3000, 3e-3, 100),
        Stage("tagging", (("seq_len", 40), ("vocab", 8), ("shift", 5)), 64, 16, 2000, 1e-2, 200),
        ((1, False), (2, False), (3, False), (1, True), (2, True), (3, True)), 50, 2,
        yardsticks=(ys.mnist1d(), ys.japanese_vowels(), ys.bai_adding(15_625), ys.bai_copy(15_625)),
    ),
}


def model_settings(cell: str, hidden: int, embedding: int, layers: int = 1, bidirectional: bool = False) -> tuple:
    return (("cell", cell), ("hidden", hidden), ("embedding", embedding), ("layers", layers),
            ("bidirectional", bidirectional)) + CELL_OPTIONS[cell]


def model_parameters(task: str, task_settings: tuple, cell: str, hidden: int, embedding: int) -> int:
    """Whole-model parameter count (input map + one recurrent level + head), by closed form."""
    spec = get_task(task, **dict(task_settings)).spec
    inp = spec.input_size * embedding + (embedding if spec.inputs == "reals" else 0)
    reset = dict(CELL_OPTIONS[cell]).get("reset", "before")
    return inp + closed_form_parameters(cell, embedding, hidden, reset=reset) + hidden * spec.output_size + spec.output_size


def budget_hidden(task: str, task_settings: tuple, hidden: int, embedding: int) -> dict[str, int]:
    """For each cell, the H whose model comes nearest the LSTM model's count at ``hidden``."""
    target = model_parameters(task, task_settings, "lstm", hidden, embedding)
    out = {}
    for cell in CELLS:
        out[cell] = min(range(1, 8 * hidden + 1),
                        key=lambda h: abs(model_parameters(task, task_settings, cell, h, embedding) - target))
    return out


def memory_specs(p: Profile, task: MemoryTask, length: int, cell: str, seed: int, hidden: int | None = None) -> RunSpec:
    return RunSpec(task.name, task.settings + (("seq_len", length),),
                   model_settings(cell, hidden or p.hidden, p.embedding), task.steps, p.batch, task.lr, p.clip,
                   p.eval_every, p.eval_samples, seed, SOLVE[task.name])


def stage_spec(p: Profile, stage: Stage, cell: str, seed: int, layers: int = 1, bidirectional: bool = False) -> RunSpec:
    return RunSpec(stage.task, stage.settings, model_settings(cell, stage.hidden, stage.embedding, layers, bidirectional),
                   stage.steps, p.batch, stage.lr, p.clip, stage.eval_every, p.eval_samples, seed, None)


def yardstick_spec(y: Yardstick, cell: str, seed: int, eval_samples: int) -> RunSpec:
    """One cell's run under a yardstick's protocol: the seed's cell, with the yardstick's model settings
    (a GRU "reset" setting applies to the GRU only)."""
    model = dict(model_settings(cell, y.hidden_of(cell), 32))
    model.update((k, v) for k, v in y.model if k != "reset" or cell == "gru")
    return RunSpec(y.task, y.settings, tuple(model.items()), y.steps, y.batch, y.lr, y.clip, y.eval_every, eval_samples,
                   seed, None)


def schedule(p: Profile) -> dict[str, list[tuple[dict, RunSpec]]]:
    """Every training run of the profile, by section, each with a label dict saying what it is."""
    out: dict[str, list] = {"memory": [], "budget": [], "charlm": [], "forecast": [], "variants": [],
                            "cell_variants": [], "yardsticks": []}
    for task in p.memory:
        for T in task.lengths:
            for cell in CELLS:
                for seed in p.seeds:
                    out["memory"].append(({"task": task.name, "T": T, "cell": cell, "seed": seed},
                                          memory_specs(p, task, T, cell, seed)))
        T = task.lengths[min(1, len(task.lengths) - 1)]  # the second rung: hard for the RNN, cheap to run
        sizes = budget_hidden(task.name, task.settings + (("seq_len", T),), p.hidden, p.embedding)
        for cell in CELLS:
            for seed in p.seeds:
                out["budget"].append(({"task": task.name, "T": T, "cell": cell, "seed": seed, "hidden": sizes[cell]},
                                      memory_specs(p, task, T, cell, seed, sizes[cell])))
    adding = p.memory_task("adding")
    for name, options in LSTM_VARIANTS:
        for seed in p.seeds:
            spec = memory_specs(p, adding, max(adding.lengths), "lstm", seed)
            out["cell_variants"].append(({"variant": name, "T": max(adding.lengths), "seed": seed},
                                         replace(spec, model=spec.model + options)))
    for cell in CELLS:
        for seed in p.seeds:
            out["charlm"].append(({"cell": cell, "seed": seed}, stage_spec(p, p.charlm, cell, seed)))
            out["forecast"].append(({"cell": cell, "seed": seed}, stage_spec(p, p.forecast, cell, seed)))
            for layers, bi in p.variants:
                out["variants"].append(({"cell": cell, "seed": seed, "layers": layers, "bidirectional": bi},
                                        stage_spec(p, p.tagging, cell, seed, layers, bi)))
    for y in p.yardsticks:
        for cell in CELLS:
            for seed in p.seeds:
                out["yardsticks"].append(({"yardstick": y.key, "cell": cell, "seed": seed},
                                          yardstick_spec(y, cell, seed, 1000)))
    return out
