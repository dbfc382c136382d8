"""From finished runs to numbers: every measurement the report shows, as one JSON-able dict.

Sections: parameters, memory (solve shares over the ladders, both size views), gradients
(‖∂L/∂h_t‖ profiles, decay rates, pre-clipping norms), speed (time per step on rnnlab's engine and
on torch.nn, tokens per second, time to solve), gates (saturation on the char-LM, histograms, the
text view's traces), real data (char-LM against n-grams, forecasting against naive and AR(p)) and
variants (depth and direction on the tagging task).
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch

from ..analysis import (NGramLM, best_order, closed_form_parameters, count_parameters, fit_ar, fit_decay_rate,
                        gate_saturation, hidden_gradient_norms)
from ..analysis.autoregressive import lagged
from ..layers import GRU, LSTM, RNN
from ..tasks import Batch
from .protocol import CELL_OPTIONS, CELLS, SOLVE, Profile, memory_specs
from .training import RunCache, RunSpec, build, engine_path

LAYERS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
GRADIENT_BATCH = 16
TEXT_VIEW_CHARS = 480


def _mean(xs):
    xs = [x for x in xs if x is not None and x == x]
    return statistics.fmean(xs) if xs else float("nan")


def _sd(xs):
    xs = [x for x in xs if x is not None and x == x]
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


# -- parameters -------------------------------------------------------------------------------------
def parameters(p: Profile, schedule) -> dict:
    X, H = p.embedding, p.hidden
    cells = {}
    for cell in CELLS:
        opts = dict(CELL_OPTIONS[cell])
        layer = LAYERS[cell](X, H, **opts)
        cells[cell] = {"counted": count_parameters(layer),
                       "closed_form": closed_form_parameters(cell, X, H, reset=opts.get("reset", "before"))}
    for cell in CELLS:
        cells[cell]["ratio_to_rnn"] = cells[cell]["counted"] / cells["rnn"]["counted"]
    budget: dict = {}
    for info, spec in schedule["budget"]:
        if info["seed"] == p.seeds[0]:
            task, model = build(spec)
            budget.setdefault(info["task"], {})[info["cell"]] = {"hidden": info["hidden"], "params": count_parameters(model)}
    return {"X": X, "H": H, "cells": cells, "budget": budget}


# -- long-term memory --------------------------------------------------------------------------------
def _ladder(p: Profile, runs, cache: RunCache) -> dict:
    out: dict = {}
    for info, spec in runs:
        r = cache.result(spec)
        metric = SOLVE[info["task"]].metric
        entry = out.setdefault(info["task"], {}).setdefault(info["cell"], {}).setdefault(str(info["T"]), {
            "solved": [], "solved_at": [], "final": [], "curves": [], "hidden": info.get("hidden", p.hidden)})
        entry["solved"].append(r["solved_at"] is not None)
        entry["solved_at"].append(r["solved_at"])
        entry["final"].append(r["final"][metric])
        entry["curves"].append([[h["step"] for h in r["history"]], [h[metric] for h in r["history"]]])
    for task in out.values():
        for cell in task.values():
            for e in cell.values():
                e["share"] = sum(e["solved"]) / len(e["solved"])
    return out


def memory(p: Profile, schedule, cache: RunCache) -> dict:
    ladder = _ladder(p, schedule["memory"], cache)
    longest = {}
    for task, by_cell in ladder.items():
        for cell, by_T in by_cell.items():
            ok = [int(T) for T, e in by_T.items() if e["share"] > 0.5]  # a majority of seeds
            longest.setdefault(task, {})[cell] = max(ok) if ok else None
    baselines = {}
    for info, spec in schedule["memory"]:
        baselines.setdefault(info["task"], cache.result(spec)["baselines"][SOLVE[info["task"]].metric])
    return {"ladder": ladder, "longest": longest, "budget": _ladder(p, schedule["budget"], cache), "baselines": baselines,
            "thresholds": {t: SOLVE[t].text() for t in ladder},
            "steps": {m.name: m.steps for m in p.memory}, "lr": {m.name: m.lr for m in p.memory},
            "settings": {m.name: dict(m.settings) for m in p.memory}}


# -- gradients -----------------------------------------------------------------------------------------
def _profile_norms(model, task, batch) -> np.ndarray:
    """‖∂L/∂h_t‖ of a "last"-head model on one batch, in float64 (so that tiny norms do not underflow)."""
    model = model.double()
    as64 = lambda t: t.double() if t.is_floating_point() else t
    batch = Batch(as64(batch.x), as64(batch.y))
    loss_fn = lambda out: task.loss(model.head(out[:, -1]), batch)  # out (B, T, H)
    return hidden_gradient_norms(model.rnn, model.input_map(batch.x), loss_fn).numpy()


def gradients(p: Profile, cache: RunCache) -> dict:
    task_cfg = p.memory_task("adding")
    T = max(task_cfg.lengths)
    out = {"task": "adding", "T": T, "cells": {}}
    for cell in CELLS:
        entry = {"init": [], "trained": [], "rate_init": [], "rate_trained": [], "clip_norms": [], "solved": []}
        for seed in p.seeds:
            spec = memory_specs(p, task_cfg, T, cell, seed)
            task, fresh = build(spec)
            batch = task.eval_batches(GRADIENT_BATCH, GRADIENT_BATCH)[0]
            trained, _ = cache.model(spec)
            for stage, model in (("init", fresh), ("trained", trained)):
                norms = _profile_norms(model, task, batch)
                entry[stage].append(norms.tolist())
                try:
                    entry[f"rate_{stage}"].append(fit_decay_rate(norms))
                except ValueError:  # every norm underflowed to zero
                    entry[f"rate_{stage}"].append(0.0)
            r = cache.result(spec)
            entry["clip_norms"].append(r["grad_norms"])
            entry["solved"].append(r["solved_at"] is not None)
        out["cells"][cell] = entry
    return out


# -- speed ------------------------------------------------------------------------------------------------
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


def speed(p: Profile, cache: RunCache, schedule) -> dict:
    """Time per training step of each cell on rnnlab's own engine (native), on what engine="auto"
    picks, and on torch.nn (the same model with ``layer.to_torch()``), at every ladder length."""
    load_before = os.getloadavg()
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
                row = {"task": task_cfg.name, "T": T, "cell": name, "auto_path": auto_path,
                       "tokens": int(batch.x.shape[0] * batch.x.shape[1])}
                for impl, engine in (("native", "native"), ("auto", "auto")):
                    _, m = build(RunSpec(**{**spec.__dict__, "model": spec.model + (("engine", engine),)}))
                    row[impl] = _time_steps(m, task, batch, p.timing_steps)
                if name != "gru":  # the seed's GRU (reset before W_h) has no torch.nn twin
                    _, m = build(spec)
                    m.rnn = m.rnn.to_torch()
                    row["torch_nn"] = _time_steps(m, task, batch, p.timing_steps)
                rows.append(row)
    # time to solve: steps to solve (the same for any implementation of the same function) × time per step
    solve = []
    for info, spec in schedule["memory"]:
        r = cache.result(spec)
        if r["solved_at"] is None:
            continue
        row = next(x for x in rows if x["task"] == info["task"] and x["T"] == info["T"] and x["cell"] == info["cell"])
        solve.append({**info, "steps": r["solved_at"], "seconds_native": r["solved_at"] * row["native"],
                      "seconds_torch_nn": r["solved_at"] * row["torch_nn"] if "torch_nn" in row else None})
    return {"rows": rows, "solve": solve, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "load_before": list(load_before), "load_after": list(os.getloadavg()), "batch": p.batch,
            "hidden": p.hidden, "timing_steps": p.timing_steps}


# -- gates on the char-LM ------------------------------------------------------------------------------------
def gates(p: Profile, schedule, cache: RunCache) -> dict:
    out = {"cells": {}, "text": None, "text_traces": {}}
    for info, spec in schedule["charlm"]:
        cell, seed = info["cell"], info["seed"]
        model, task = cache.model(spec)
        model.eval()
        ids = task.val_ids
        T = min(256, ids.numel() // 8)
        block = ids[: 8 * T].view(8, T)  # (B, T) eight held-out passages
        with torch.no_grad():
            _, _, traces = model.rnn(model.input_map(block), return_gates=True)
        level = traces["l0"]
        sat = gate_saturation(level)
        e = out["cells"].setdefault(cell, {"saturation": {}, "hist": {}, "cell_state": []})
        for g, s in sat.items():
            e["saturation"].setdefault(g, {"left": [], "right": [], "left_units": None, "right_units": None})
            e["saturation"][g]["left"].append(float(s.left.mean()))
            e["saturation"][g]["right"].append(float(s.right.mean()))
            if seed == p.seeds[0]:
                e["saturation"][g]["left_units"] = s.left.tolist()
                e["saturation"][g]["right_units"] = s.right.tolist()
                hist, _ = np.histogram(level[g].numpy().ravel(), bins=40, range=(0.0, 1.0))
                e["hist"][g] = hist.tolist()
        if "c" in level:
            c = level["c"]
            e["cell_state"].append({"max_abs": float(c.abs().max()), "share_beyond_1": float((c.abs() > 1).double().mean())})
        if seed == p.seeds[0]:
            n = min(TEXT_VIEW_CHARS, ids.numel())
            passage = ids[:n].view(1, n)
            with torch.no_grad():
                _, _, tr = model.rnn(model.input_map(passage), return_gates=True)
            out["text"] = "".join(task.vocab[i] for i in passage[0].tolist())
            out["text_traces"][cell] = {g: v[:, 0].tolist() for g, v in tr["l0"].items()}  # (T, B=1, H) -> (T, H)
    return out


# -- real data --------------------------------------------------------------------------------------------------
def real_data(p: Profile, schedule, cache: RunCache) -> dict:
    from ..tasks import get_task

    lm = {"cells": {}}
    for info, spec in schedule["charlm"]:
        r = cache.result(spec)
        lm["cells"].setdefault(info["cell"], []).append(r["final"]["bpc"])
        lm.setdefault("params", {})[info["cell"]] = r["params"]
    task = get_task(p.charlm.task, **dict(p.charlm.settings))
    decode = lambda ids: "".join(task.vocab[i] for i in ids.tolist())
    train_text, val_text = decode(task.train_ids), decode(task.val_ids)
    cut = int(len(train_text) * 0.9)
    order, dev_bpc = best_order(train_text[:cut], train_text[cut:], task.vocab)
    lm["ngram"] = {"order": order, "dev_bpc": dev_bpc,
                   "bpc": NGramLM(order, task.vocab).fit(train_text).bits_per_char(val_text),
                   "by_order": {n: NGramLM(n, task.vocab).fit(train_text).bits_per_char(val_text) for n in range(1, 7)}}
    lm["unigram_bpc"] = task.baselines()["bpc"]
    lm["chars"] = {"train": len(train_text), "val": len(val_text), "vocab": len(task.vocab)}

    fc = {"cells": {}}
    for info, spec in schedule["forecast"]:
        r = cache.result(spec)
        fc["cells"].setdefault(info["cell"], {"mse": [], "mae": []})
        fc["cells"][info["cell"]]["mse"].append(r["final"]["mse"])
        fc["cells"][info["cell"]]["mae"].append(r["final"]["mae"])
    ftask = get_task(p.forecast.task, **dict(p.forecast.settings))
    series, split = ftask.series.numpy(), ftask.split
    fc["naive"] = ftask.baselines()
    fc["ar"] = _ar_baseline(series, split, dict(p.forecast.settings)["seq_len"])
    fc["length"], fc["held_out"] = int(series.size), int(series.size - split)
    return {"charlm": lm, "forecast": fc}


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
def variants(p: Profile, schedule, cache: RunCache) -> dict:
    out: dict = {}
    params: dict = {}
    for info, spec in schedule["variants"]:
        r = cache.result(spec)
        key = f"{'bi' if info['bidirectional'] else 'uni'}-{info['layers']}"
        out.setdefault(info["cell"], {}).setdefault(key, []).append(r["final"]["accuracy"])
        params.setdefault(info["cell"], {})[key] = r["params"]
    from ..tasks import get_task

    return {"accuracy": out, "params": params, "chance": get_task(p.tagging.task, **dict(p.tagging.settings)).baselines()["accuracy"],
            "settings": dict(p.tagging.settings), "configs": [f"{'bi' if b else 'uni'}-{l}" for l, b in p.variants]}


def cell_variants(p: Profile, schedule, cache: RunCache) -> dict:
    """The LSTM variants beside the plain LSTM on the adding problem's longest rung."""
    T = max(p.memory_task("adding").lengths)
    runs = [("plain", spec) for info, spec in schedule["memory"]
            if info["task"] == "adding" and info["T"] == T and info["cell"] == "lstm"]
    runs += [(info["variant"], spec) for info, spec in schedule["cell_variants"]]
    rows: dict = {}
    for name, spec in runs:
        r = cache.result(spec)
        row = rows.setdefault(name, {"solved": [], "solved_at": [], "final": [], "params": r["params"],
                                     "engine": r["engine"]})
        row["solved"].append(r["solved_at"] is not None)
        row["solved_at"].append(r["solved_at"])
        row["final"].append(r["final"]["mse"])
    return {"task": "adding", "T": T, "threshold": SOLVE["adding"].text(), "rows": rows}


def measure_all(p: Profile, schedule, cache: RunCache, log=None) -> dict:
    """Every section's measurements (speed last, so that its timings run with no training beside them)."""
    out = {"profile": p.name, "seeds": list(p.seeds), "hidden": p.hidden, "embedding": p.embedding, "batch": p.batch,
           "clip": p.clip}
    for name, fn in (("parameters", lambda: parameters(p, schedule)), ("memory", lambda: memory(p, schedule, cache)),
                     ("gradients", lambda: gradients(p, cache)), ("gates", lambda: gates(p, schedule, cache)),
                     ("real", lambda: real_data(p, schedule, cache)), ("variants", lambda: variants(p, schedule, cache)),
                     ("cell_variants", lambda: cell_variants(p, schedule, cache)),
                     ("speed", lambda: speed(p, cache, schedule))):
        t0 = time.perf_counter()
        out[name] = fn()
        if log is not None:
            print(f"compare: measured {name} in {time.perf_counter() - t0:.1f} s", file=log, flush=True)
    return out
