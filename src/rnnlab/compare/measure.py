"""From finished runs to numbers: one dataclass per report section, every statistic computed here.

The report's renderers (``report.py``) only lay these out; the verdicts (``verdicts.py``) only
compare them. ``Measurements`` holds one of each section; ``measurements.json`` is its
``dataclasses.asdict`` (minus the text view's per-character traces), so the schema is this file.

Sections: parameters, memory (solve shares over the ladders, both size views), gradients
(‖∂L/∂h_t‖ profiles, decay rates, pre-clipping norms), speed (time per step on rnnlab's engine and
on torch.nn, tokens per second, time to solve), gates (saturation on the char-LM, histograms, the
text view's traces), real data (char-LM against n-grams, forecasting against naive and AR(p)),
variants (depth and direction on the tagging task; the LSTM variants) and yardsticks (published
protocols, our mean ± sd beside the published numbers).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..analysis import (NGramLM, best_order, closed_form_parameters, count_parameters, fit_ar, fit_decay_rate,
                        gate_saturation, hidden_gradient_norms)
from ..layers import GRU, LSTM, RNN
from ..tasks import Batch, get_task
from .protocol import CELL_OPTIONS, CELLS, PROFILES, SOLVE, Profile, memory_specs, yardstick_spec
from .training import RunCache, RunSpec, build, engine_path
from .unrolled import UnrolledSection, measure_unrolled
from .yardsticks import Published, Yardstick, verdict

LAYERS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
GRADIENT_BATCH = 16
TEXT_VIEW_CHARS = 480
HIST_BINS = 40


@dataclass
class Stat:
    """Values over seeds with their mean and sample sd (sd 0 for one value; NaN-free values only)."""

    values: list[float]
    mean: float
    sd: float

    @classmethod
    def of(cls, values) -> "Stat":
        xs = [float(x) for x in values if x is not None and x == x]
        if not xs:
            return cls([], float("nan"), float("nan"))
        return cls(xs, statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)

    def text(self, digits: int = 3) -> str:
        if not self.values:
            return "—"
        if len(self.values) == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}"


def _median(xs) -> float:
    xs = [x for x in xs if x is not None and x == x]
    return statistics.median(xs) if xs else float("nan")


# -- parameters -------------------------------------------------------------------------------------
@dataclass
class CellCount:
    counted: int
    closed_form: int
    ratio_to_rnn: float


@dataclass
class BudgetSize:
    hidden: int
    params: int


@dataclass
class ParametersSection:
    X: int
    H: int
    cells: dict[str, CellCount]
    budget: dict[str, dict[str, BudgetSize]]  # task -> cell -> size

    @property
    def exact(self) -> bool:
        return all(c.counted == c.closed_form for c in self.cells.values())


def parameters(p: Profile, sched) -> ParametersSection:
    X, H = p.embedding, p.hidden
    counts = {}
    for cell in CELLS:
        opts = dict(CELL_OPTIONS[cell])
        counts[cell] = (count_parameters(LAYERS[cell](X, H, **opts)),
                        closed_form_parameters(cell, X, H, reset=opts.get("reset", "before")))
    cells = {c: CellCount(n, cf, n / counts["rnn"][0]) for c, (n, cf) in counts.items()}
    budget: dict = {}
    for info, spec in sched["budget"]:
        if info["seed"] == p.seeds[0]:
            _, model = build(spec)
            budget.setdefault(info["task"], {})[info["cell"]] = BudgetSize(info["hidden"], count_parameters(model))
    return ParametersSection(X, H, cells, budget)


# -- long-term memory --------------------------------------------------------------------------------
@dataclass
class LadderEntry:
    """One (task, cell, T) rung over seeds."""

    hidden: int
    solved: list[bool] = field(default_factory=list)
    solved_at: list = field(default_factory=list)  # step or None, per seed
    final: list[float] = field(default_factory=list)
    curves: list = field(default_factory=list)  # per seed: (steps, metric values)

    @property
    def share(self) -> float:
        return sum(self.solved) / len(self.solved)

    @property
    def share_text(self) -> str:
        return f"{sum(self.solved)}/{len(self.solved)}"


@dataclass
class MemorySection:
    ladder: dict[str, dict[str, dict[int, LadderEntry]]]  # task -> cell -> T -> entry (same H)
    budget: dict[str, dict[str, dict[int, LadderEntry]]]  # equal parameters, at each task's second rung
    longest: dict[str, dict[str, int | None]]  # longest T solved by a majority of seeds
    solved_runs: dict[str, int]  # per cell, over every ladder
    budget_solved_runs: dict[str, int]
    runs_per_cell: int
    budget_runs_per_cell: int
    baselines: dict[str, float]  # the memoryless score of each task's solve metric
    thresholds: dict[str, str]  # e.g. "mse < 0.01"
    metric: dict[str, str]
    threshold_value: dict[str, float]
    lengths: dict[str, list[int]]
    steps: dict[str, int]
    lr: dict[str, float]
    settings: dict[str, dict]


def _ladder(p: Profile, runs, cache: RunCache) -> dict:
    out: dict = {}
    for info, spec in runs:
        r = cache.result(spec)
        metric = SOLVE[info["task"]].metric
        entry = out.setdefault(info["task"], {}).setdefault(info["cell"], {}).setdefault(
            int(info["T"]), LadderEntry(info.get("hidden", p.hidden)))
        entry.solved.append(r["solved_at"] is not None)
        entry.solved_at.append(r["solved_at"])
        entry.final.append(r["final"][metric])
        entry.curves.append(([h["step"] for h in r["history"]], [h[metric] for h in r["history"]]))
    return out


def _solved_runs(ladder) -> dict[str, int]:
    out = {c: 0 for c in CELLS}
    for by_cell in ladder.values():
        for cell, by_T in by_cell.items():
            out[cell] += sum(sum(e.solved) for e in by_T.values())
    return out


def memory(p: Profile, sched, cache: RunCache) -> MemorySection:
    ladder, budget = _ladder(p, sched["memory"], cache), _ladder(p, sched["budget"], cache)
    longest = {task: {cell: max((T for T, e in by_T.items() if e.share > 0.5), default=None)  # a majority of seeds
                      for cell, by_T in by_cell.items()} for task, by_cell in ladder.items()}
    baselines = {}
    for info, spec in sched["memory"]:
        baselines.setdefault(info["task"], cache.result(spec)["baselines"][SOLVE[info["task"]].metric])
    per_cell = lambda lad: sum(len(e.solved) for by_cell in lad.values() for e in by_cell.get("lstm", {}).values())
    return MemorySection(
        ladder=ladder, budget=budget, longest=longest, solved_runs=_solved_runs(ladder),
        budget_solved_runs=_solved_runs(budget), runs_per_cell=per_cell(ladder), budget_runs_per_cell=per_cell(budget),
        baselines=baselines, thresholds={t: SOLVE[t].text() for t in ladder}, metric={t: SOLVE[t].metric for t in ladder},
        threshold_value={t: SOLVE[t].threshold for t in ladder}, lengths={m.name: list(m.lengths) for m in p.memory},
        steps={m.name: m.steps for m in p.memory}, lr={m.name: m.lr for m in p.memory},
        settings={m.name: dict(m.settings) for m in p.memory})


# -- gradients -----------------------------------------------------------------------------------------
@dataclass
class GradientEntry:
    init: list  # per seed: ‖∂L/∂h_t‖ for t = 1..T at initialisation
    trained: list  # the same after training
    rate_init: list[float]  # per seed: the fitted per-step factor γ
    rate_trained: list[float]
    clip_norms: list  # per seed: the pre-clipping gradient norm at every training step
    solved: list[bool]
    rate_init_mean: float
    rate_trained_mean: float
    ratio_init: float  # median over seeds of ‖∂L/∂h_1‖ / ‖∂L/∂h_T‖
    ratio_trained: float

    @property
    def solved_text(self) -> str:
        return f"{sum(self.solved)}/{len(self.solved)}"


@dataclass
class GradientsSection:
    task: str
    T: int
    batch: int
    cells: dict[str, GradientEntry]


def _profile_norms(model, task, batch) -> np.ndarray:
    """‖∂L/∂h_t‖ of a "last"-head model on one batch, in float64 (so that tiny norms do not underflow)."""
    model = model.double()
    as64 = lambda t: t.double() if t.is_floating_point() else t
    batch = Batch(as64(batch.x), as64(batch.y))
    loss_fn = lambda out: task.loss(model.head(out[:, -1]), batch)  # out (B, T, H)
    return hidden_gradient_norms(model.rnn, model.input_map(batch.x), loss_fn).numpy()


def _first_over_last(norms) -> float:
    return norms[0] / norms[-1] if norms[-1] > 0 else float("nan")


def gradients(p: Profile, cache: RunCache) -> GradientsSection:
    task_cfg = p.memory_task("adding")
    T = max(task_cfg.lengths)
    cells = {}
    for cell in CELLS:
        per = {"init": [], "trained": [], "rate_init": [], "rate_trained": [], "clip_norms": [], "solved": []}
        for seed in p.seeds:
            spec = memory_specs(p, task_cfg, T, cell, seed)
            task, fresh = build(spec)
            batch = task.eval_batches(GRADIENT_BATCH, GRADIENT_BATCH)[0]
            trained, _ = cache.model(spec)
            for stage, model in (("init", fresh), ("trained", trained)):
                norms = _profile_norms(model, task, batch)
                per[stage].append(norms.tolist())
                try:
                    per[f"rate_{stage}"].append(fit_decay_rate(norms))
                except ValueError:  # every norm underflowed to zero
                    per[f"rate_{stage}"].append(0.0)
            r = cache.result(spec)
            per["clip_norms"].append(r["grad_norms"])
            per["solved"].append(r["solved_at"] is not None)
        cells[cell] = GradientEntry(**per, rate_init_mean=statistics.fmean(per["rate_init"]),
                                    rate_trained_mean=statistics.fmean(per["rate_trained"]),
                                    ratio_init=_median(_first_over_last(n) for n in per["init"]),
                                    ratio_trained=_median(_first_over_last(n) for n in per["trained"]))
    return GradientsSection("adding", T, GRADIENT_BATCH, cells)


# -- speed ------------------------------------------------------------------------------------------------
@dataclass
class SpeedRow:
    task: str
    T: int
    cell: str  # "rnn", "lstm", "gru" (the seed's) or "gru-after" (cuDNN's form)
    auto_path: str
    tokens: int
    native: float  # seconds per training step
    auto: float
    torch_nn: float | None  # None: no torch.nn twin (the seed's GRU)


@dataclass
class SolveTime:
    task: str
    T: int
    cell: str
    seeds: int
    median_steps: float
    median_seconds_native: float
    median_seconds_torch_nn: float | None


@dataclass
class SpeedSection:
    rows: list[SpeedRow]
    solve: list[SolveTime]
    ratios: dict[str, dict[str, float] | None]  # implementation -> cell -> median time relative to the LSTM
    auto_paths: list[str]
    threads: int
    cpus: int
    load_before: float
    load_after: float
    batch: int
    hidden: int
    timing_steps: int

    @property
    def disturbed(self) -> bool:
        return max(self.load_before, self.load_after) > 1.2 * self.threads

    def timing_note(self) -> str:
        return (f"taken with {self.threads} thread(s) on {self.cpus} CPUs; the 1-minute load average was "
                f"{self.load_before:.1f} before and {self.load_after:.1f} after the timing runs"
                + (" — the machine was busy with other work, so timings are disturbed." if self.disturbed else "."))


def _time_steps(model, task, batch, steps: int) -> float:
    """Median seconds of one training step (forward, backward, Adam) on a fixed batch, after warm-up."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        out, _ = model(batch.x)
        loss = task.loss(out, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def speed_ratios(rows: list[SpeedRow], impl: str) -> dict[str, float] | None:
    """Median over the timed configurations of each cell's time per step relative to the LSTM's
    (the GRU is the seed's on the native engine, cuDNN's form on torch.nn)."""
    gru = "gru" if impl == "native" else "gru-after"
    by = {}
    for cell in ("rnn", "lstm", gru):
        ratios = []
        for r in rows:
            if r.cell != cell or getattr(r, impl) is None:
                continue
            lstm = next(x for x in rows if x.task == r.task and x.T == r.T and x.cell == "lstm")
            if getattr(lstm, impl) is not None:
                ratios.append(getattr(r, impl) / getattr(lstm, impl))
        if not ratios:
            return None
        by[cell.split("-")[0]] = statistics.median(ratios)
    return by


def speed(p: Profile, cache: RunCache, sched) -> SpeedSection:
    """Time per training step of each cell on rnnlab's own engine (native), on what engine="auto"
    picks, and on torch.nn (the same model with ``layer.to_torch()``), at every ladder length."""
    load_before = os.getloadavg()[0]
    variants = [("rnn", CELL_OPTIONS["rnn"]), ("lstm", ()), ("gru", CELL_OPTIONS["gru"]), ("gru-after", (("reset", "after"),))]
    rows = []
    for task_cfg in p.memory:
        for T in task_cfg.lengths:
            for name, opts in variants:
                cell = name.split("-")[0]
                base = memory_specs(p, task_cfg, T, cell, p.seeds[0])
                spec = RunSpec(**{**base.__dict__, "model": tuple(kv for kv in base.model if kv[0] != "reset") + tuple(opts)})
                task, model = build(spec)
                batch = next(task.train_stream(p.batch, 0))
                with torch.no_grad():
                    auto_path = engine_path(model.rnn, model.input_map(batch.x).transpose(0, 1))
                timed = {}
                for impl in ("native", "auto"):
                    _, m = build(RunSpec(**{**spec.__dict__, "model": spec.model + (("engine", impl),)}))
                    timed[impl] = _time_steps(m, task, batch, p.timing_steps)
                torch_nn = None
                if name != "gru":  # the seed's GRU (reset before W_h) has no torch.nn twin
                    _, m = build(spec)
                    m.rnn = m.rnn.to_torch()
                    torch_nn = _time_steps(m, task, batch, p.timing_steps)
                rows.append(SpeedRow(task_cfg.name, T, name, auto_path, int(batch.x.shape[0] * batch.x.shape[1]),
                                     timed["native"], timed["auto"], torch_nn))
    # time to solve: steps to solve (the same for any implementation of the same function) × time per step
    solved: dict = {}
    for info, spec in sched["memory"]:
        r = cache.result(spec)
        if r["solved_at"] is not None:
            solved.setdefault((info["task"], info["T"], info["cell"]), []).append(r["solved_at"])
    solve = []
    for (task, T, cell), steps in sorted(solved.items()):
        row = next(x for x in rows if x.task == task and x.T == T and x.cell == cell)
        solve.append(SolveTime(task, T, cell, len(steps), _median(steps), _median(s * row.native for s in steps),
                               None if row.torch_nn is None else _median(s * row.torch_nn for s in steps)))
    return SpeedSection(rows, solve, {impl: speed_ratios(rows, impl) for impl in ("native", "torch_nn")},
                        sorted({f"{r.cell}: {r.auto_path}" for r in rows}), torch.get_num_threads(), os.cpu_count() or 1,
                        load_before, os.getloadavg()[0], p.batch, p.hidden, p.timing_steps)


# -- gates on the char-LM ------------------------------------------------------------------------------------
@dataclass
class GateSaturation:
    left: Stat  # over seeds: the mean (over units) fraction of steps below 0.1
    right: Stat  # ... above 0.9
    left_units: list[float]  # seed 0, per unit
    right_units: list[float]
    units_left_mostly: int  # seed 0: units left-saturated more than half the time
    units_right_mostly: int


@dataclass
class CellGates:
    saturation: dict[str, GateSaturation]
    hist: dict[str, list[int]]  # seed 0: counts of activations in HIST_BINS equal bins of [0, 1]
    cell_state_max_abs: float | None  # LSTM only: the largest |C_t| over seeds
    cell_state_beyond_1: float | None  # LSTM only: the mean share of |C_t| > 1


@dataclass
class GatesSection:
    cells: dict[str, CellGates]
    text: str | None  # the held-out passage of the text view
    text_traces: dict = field(default_factory=dict)  # cell -> gate -> (T, H) values, seed 0 (not in the JSON)


def gates(p: Profile, sched, cache: RunCache) -> GatesSection:
    raw: dict = {}
    text, traces_out = None, {}
    for info, spec in sched["charlm"]:
        cell, seed = info["cell"], info["seed"]
        model, task = cache.model(spec)
        model.eval()
        ids = task.val_ids
        T = min(256, ids.numel() // 8)
        block = ids[: 8 * T].view(8, T)  # (B, T) eight held-out passages
        with torch.no_grad():
            _, _, traces = model.rnn(model.input_map(block), return_gates=True)
        level = traces["l0"]
        e = raw.setdefault(cell, {"left": {}, "right": {}, "units": {}, "hist": {}, "c_max": [], "c_beyond": []})
        for g, s in gate_saturation(level).items():
            e["left"].setdefault(g, []).append(float(s.left.mean()))
            e["right"].setdefault(g, []).append(float(s.right.mean()))
            if seed == p.seeds[0]:
                e["units"][g] = (s.left.tolist(), s.right.tolist())
                e["hist"][g] = np.histogram(level[g].numpy().ravel(), bins=HIST_BINS, range=(0.0, 1.0))[0].tolist()
        if "c" in level:
            c = level["c"]
            e["c_max"].append(float(c.abs().max()))
            e["c_beyond"].append(float((c.abs() > 1).double().mean()))
        if seed == p.seeds[0]:
            n = min(TEXT_VIEW_CHARS, ids.numel())
            passage = ids[:n].view(1, n)
            with torch.no_grad():
                _, _, tr = model.rnn(model.input_map(passage), return_gates=True)
            text = "".join(task.vocab[i] for i in passage[0].tolist())
            traces_out[cell] = {g: v[:, 0].numpy() for g, v in tr["l0"].items()}  # (T, B=1, H) -> (T, H)
    cells = {}
    for cell, e in raw.items():
        sat = {}
        for g in e["left"]:
            left_u, right_u = e["units"][g]
            sat[g] = GateSaturation(Stat.of(e["left"][g]), Stat.of(e["right"][g]), left_u, right_u,
                                    int((np.asarray(left_u) > 0.5).sum()), int((np.asarray(right_u) > 0.5).sum()))
        cells[cell] = CellGates(sat, e["hist"], max(e["c_max"]) if e["c_max"] else None,
                                statistics.fmean(e["c_beyond"]) if e["c_beyond"] else None)
    return GatesSection(cells, text, traces_out)


# -- real data --------------------------------------------------------------------------------------------------
@dataclass
class CharLMSection:
    bpc: dict[str, Stat]  # per cell, held-out bits per character over seeds
    params: dict[str, int]
    hidden: int
    ngram_order: int
    ngram_dev_bpc: float
    ngram_bpc: float
    ngram_by_order: dict[int, float]
    unigram_bpc: float
    train_chars: int
    val_chars: int
    vocab: int
    best: str  # the cell with the lowest mean
    best_beats_ngram: bool


@dataclass
class ForecastSection:
    mse: dict[str, Stat]
    mae: dict[str, Stat]
    naive_mse: float
    naive_mae: float
    ar_p: int
    ar_mse: float
    ar_mae: float
    length: int
    held_out: int
    seq_len: int
    best: str
    losers: list[str]  # cells whose mean MSE is not below AR(p)'s


@dataclass
class RealDataSection:
    charlm: CharLMSection
    forecast: ForecastSection


def real_data(p: Profile, sched, cache: RunCache) -> RealDataSection:
    bpc: dict = {}
    params: dict = {}
    for info, spec in sched["charlm"]:
        r = cache.result(spec)
        bpc.setdefault(info["cell"], []).append(r["final"]["bpc"])
        params[info["cell"]] = r["params"]
    task = get_task(p.charlm.task, **dict(p.charlm.settings))
    decode = lambda ids: "".join(task.vocab[i] for i in ids.tolist())
    train_text, val_text = decode(task.train_ids), decode(task.val_ids)
    cut = int(len(train_text) * 0.9)
    order, dev_bpc = best_order(train_text[:cut], train_text[cut:], task.vocab)
    ngram = NGramLM(order, task.vocab).fit(train_text).bits_per_char(val_text)
    stats = {c: Stat.of(v) for c, v in bpc.items()}
    best = min(stats, key=lambda c: stats[c].mean)
    lm = CharLMSection(stats, params, p.charlm.hidden, order, dev_bpc, ngram,
                       {n: NGramLM(n, task.vocab).fit(train_text).bits_per_char(val_text) for n in range(1, 7)},
                       task.baselines()["bpc"], len(train_text), len(val_text), len(task.vocab), best,
                       stats[best].mean < ngram)

    mse: dict = {}
    mae: dict = {}
    for info, spec in sched["forecast"]:
        r = cache.result(spec)
        mse.setdefault(info["cell"], []).append(r["final"]["mse"])
        mae.setdefault(info["cell"], []).append(r["final"]["mae"])
    ftask = get_task(p.forecast.task, **dict(p.forecast.settings))
    series, split = ftask.series.numpy(), ftask.split
    naive = ftask.baselines()
    seq_len = dict(p.forecast.settings)["seq_len"]
    ar = _ar_baseline(series, split, seq_len)
    mse_s = {c: Stat.of(v) for c, v in mse.items()}
    fc = ForecastSection(mse_s, {c: Stat.of(v) for c, v in mae.items()}, naive["mse"], naive["mae"], ar["p"], ar["mse"],
                         ar["mae"], int(series.size), int(series.size - split), seq_len,
                         min(mse_s, key=lambda c: mse_s[c].mean), [c for c, s in mse_s.items() if s.mean >= ar["mse"]])
    return RealDataSection(lm, fc)


def _ar_baseline(series: np.ndarray, split: int, max_p: int) -> dict:
    """AR(p) with p chosen on the last 20 % of the training part, refitted on the whole training part,
    scored by one-step forecasts of the held-out targets (each from the true values before it)."""
    train = series[:split]
    dev = int(train.size * 0.8)

    def score(model, part_start, part_end, p):
        windows = np.stack([series[t - p:t] for t in range(part_start, part_end)])
        err = model.predict_next(windows) - series[part_start:part_end]
        return float(np.mean(err ** 2)), float(np.mean(np.abs(err)))

    best = min(range(1, max_p + 1), key=lambda p: score(fit_ar(train[:dev], p), max(dev, p), split, p)[0])
    mse, mae = score(fit_ar(train, best), split, series.size, best)
    return {"p": best, "mse": mse, "mae": mae}


# -- variants ------------------------------------------------------------------------------------------------------
@dataclass
class VariantsSection:
    configs: list[str]  # "uni-1", "bi-2", ...
    accuracy: dict[str, dict[str, Stat]]  # cell -> config -> held-out accuracy over seeds
    params: dict[str, dict[str, int]]
    chance: float
    settings: dict
    solved: dict[str, bool]  # config -> every cell and seed above 0.99
    forward_at_chance: bool  # every forward-only mean within 0.05 of chance


@dataclass
class CellVariantRow:
    params: int
    engine: str
    solved: list[bool]
    final: Stat
    mean_solve_step: float | None

    @property
    def solved_text(self) -> str:
        return f"{sum(self.solved)}/{len(self.solved)}"


@dataclass
class CellVariantsSection:
    task: str
    T: int
    threshold: str
    rows: dict[str, CellVariantRow]  # "plain", "layer norm", ...


def variants(p: Profile, sched, cache: RunCache) -> VariantsSection:
    acc: dict = {}
    params: dict = {}
    for info, spec in sched["variants"]:
        r = cache.result(spec)
        key = f"{'bi' if info['bidirectional'] else 'uni'}-{info['layers']}"
        acc.setdefault(info["cell"], {}).setdefault(key, []).append(r["final"]["accuracy"])
        params.setdefault(info["cell"], {})[key] = r["params"]
    configs = [f"{'bi' if b else 'uni'}-{n}" for n, b in p.variants]
    chance = get_task(p.tagging.task, **dict(p.tagging.settings)).baselines()["accuracy"]
    stats = {c: {k: Stat.of(v) for k, v in by.items()} for c, by in acc.items()}
    return VariantsSection(configs, stats, params, chance, dict(p.tagging.settings),
                           {k: all(min(acc[c][k]) > 0.99 for c in acc) for k in configs},
                           all(abs(stats[c][k].mean - chance) < 0.05 for c in stats for k in configs if k.startswith("uni")))


def cell_variants(p: Profile, sched, cache: RunCache) -> CellVariantsSection:
    """The LSTM variants beside the plain LSTM on the adding problem's longest rung."""
    T = max(p.memory_task("adding").lengths)
    runs = [("plain", spec) for info, spec in sched["memory"]
            if info["task"] == "adding" and info["T"] == T and info["cell"] == "lstm"]
    runs += [(info["variant"], spec) for info, spec in sched["cell_variants"]]
    raw: dict = {}
    for name, spec in runs:
        r = cache.result(spec)
        e = raw.setdefault(name, {"params": r["params"], "engine": r["engine"], "solved_at": [], "final": []})
        e["solved_at"].append(r["solved_at"])
        e["final"].append(r["final"]["mse"])
    rows = {}
    for name, e in raw.items():
        steps = [s for s in e["solved_at"] if s is not None]
        rows[name] = CellVariantRow(e["params"], e["engine"], [s is not None for s in e["solved_at"]], Stat.of(e["final"]),
                                    statistics.fmean(steps) if steps else None)
    return CellVariantsSection("adding", T, SOLVE["adding"].text(), rows)


# -- yardsticks ------------------------------------------------------------------------------------------------------
@dataclass
class YardstickCell:
    """One cell under one yardstick's protocol, beside the published number for that cell (if any)."""

    cell: str
    hidden: int
    params: int
    result: Stat  # the yardstick's metric at the end of training, over seeds
    median_step_seconds: float  # over every step of every seed
    published: Published | None
    verdict: str | None  # yardsticks.verdict's rule; None without a published number
    margin: float | None
    difference: float | None  # ours (mean) - published
    missing: int = 0  # runs of this cell not in the cache (a report written with --no-train): no verdict


@dataclass
class YardstickResult:
    yardstick: Yardstick
    cells: list[YardstickCell]
    others: list[Published]  # published numbers of other models (context, no verdict)
    baseline: float  # the task's trivial score on the same metric
    seeds: int
    paper_hours_per_run: float | None  # the source's budget at our measured median step time, per run


@dataclass
class YardsticksSection:
    results: list[YardstickResult]
    full_hours: float | None  # the full profile's yardstick runs at our measured step times, on ``jobs`` cores
    full_seeds: int
    jobs: int


def yardsticks(p: Profile, sched, cache: RunCache, full: Profile | None = None) -> YardsticksSection:
    """Our results beside the published ones; with ``full``, also the time that profile's yardstick runs
    (the sources' budgets) would take at the step times measured here."""
    by: dict = {}
    missing: dict = {}
    for info, spec in sched["yardsticks"]:
        key = (info["yardstick"], info["cell"])
        if cache.has(spec):
            by.setdefault(key, []).append(cache.result(spec))
        else:
            missing[key] = missing.get(key, 0) + 1
    results = []
    for y in p.yardsticks:
        cells, slowest, baseline = [], 0.0, float("nan")
        for cell in CELLS:
            runs, gone = by.get((y.key, cell), []), missing.get((y.key, cell), 0)
            stat = Stat.of(r["final"][y.metric] for r in runs)
            step = _median([s for r in runs for s in r["step_seconds"]])
            if step == step:
                slowest = max(slowest, step)
            if runs:
                baseline = runs[0]["baselines"].get(y.metric, float("nan"))
            params = runs[0]["params"] if runs else count_parameters(build(yardstick_spec(y, cell, p.seeds[0], 1))[1])
            pub = y.published_for(cell)
            v = margin = diff = None
            if pub is not None and runs and not gone:
                v, margin = verdict(stat.values, pub.value, y.higher_is_better, y.tolerance)
                diff = stat.mean - pub.value
            cells.append(YardstickCell(cell, y.hidden_of(cell), params, stat, step, pub, v, margin, diff, gone))
        others = [q for q in y.published if q.model not in CELLS and q.model != y.reference]
        hours = y.paper_steps * slowest / 3600 if y.paper_steps and not any(c.missing for c in cells) else None
        results.append(YardstickResult(y, cells, others, baseline, len(p.seeds), hours))
    full_hours = None
    if full is not None and full.yardsticks:
        step = {(r.yardstick.key, c.cell): c.median_step_seconds for r in results for c in r.cells}
        if all((y.key, c) in step for y in full.yardsticks for c in CELLS):
            full_hours = sum(y.steps * step[(y.key, c)] for y in full.yardsticks for c in CELLS) * len(full.seeds) / 3600 / full.jobs
            full_hours = full_hours if full_hours == full_hours else None  # a yardstick never timed
    return YardsticksSection(results, full_hours, len(full.seeds) if full is not None else 0,
                             full.jobs if full is not None else 1)


# -- all of it ------------------------------------------------------------------------------------------------------
@dataclass
class Measurements:
    profile: str
    seeds: list[int]
    hidden: int
    embedding: int
    batch: int
    clip: float
    parameters: ParametersSection
    memory: MemorySection
    gradients: GradientsSection
    gates: GatesSection
    real: RealDataSection
    variants: VariantsSection
    cell_variants: CellVariantsSection
    yardsticks: YardsticksSection
    unrolled: UnrolledSection
    speed: SpeedSection


def measure_all(p: Profile, sched, cache: RunCache, log=None) -> Measurements:
    """Every section's measurements (speed last, so that its timings run with no training beside them)."""
    out = {}
    for name, fn in (("parameters", lambda: parameters(p, sched)), ("memory", lambda: memory(p, sched, cache)),
                     ("gradients", lambda: gradients(p, cache)), ("gates", lambda: gates(p, sched, cache)),
                     ("real", lambda: real_data(p, sched, cache)), ("variants", lambda: variants(p, sched, cache)),
                     ("cell_variants", lambda: cell_variants(p, sched, cache)),
                     ("yardsticks", lambda: yardsticks(p, sched, cache, PROFILES["full"])),
                     ("unrolled", lambda: measure_unrolled(p, cache)),
                     ("speed", lambda: speed(p, cache, sched))):
        t0 = time.perf_counter()
        out[name] = fn()
        if log is not None:
            print(f"compare: measured {name} in {time.perf_counter() - t0:.1f} s", file=log, flush=True)
    return Measurements(p.name, list(p.seeds), p.hidden, p.embedding, p.batch, p.clip, **out)
