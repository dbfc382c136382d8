"""The engine benchmark: one training step of one layer per cell, rnnlab against its peers.

Run it as ``rnnlab bench`` or ``python benchmarks/bench_engine.py`` (same code). For each cell
(rnn, lstm, gru-before, gru-after) and shape (T, B, X, H) it times, in float32 on ``threads``
threads, the median of repeats after warm-up of:

* a training step (forward + backward of ``out.sum()`` into the parameters) for rnnlab's native
  engine, rnnlab's torch engine (where torch can compute the cell), torch.nn (default settings)
  and JAX/Flax ``nn.RNN`` under ``jax.jit(jax.grad(...))`` — JAX in a subprocess, because XLA's
  thread pool sharing a process with torch slows torch down 10–100×;
* inference (forward only) for rnnlab and torch.nn;
* the bytes saved for backward by one training step (activations: rnnlab and torch.nn);
* training time against T for the sequential cells beside minGRU/minLSTM (native loop and parallel scan), and a
  training step of each cell variant (layer norm, peepholes, CIFG, recurrent dropout, zoneout) on the
  native engine against the reference engine.

rnnlab's number is the engine "auto" picks (the ``path`` column says which). GFLOP/s counts
6·G·T·B·H·(X+H) per step (forward 2, backward 4 multiply-adds per weight and row) and is set
against the SGEMM rate measured on the machine. torch.nn and Flax have no GRU of the seed's
form (reset="before"): gru-before is set against their GRU (reset="after").
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import torch

from ..cells.spec import SPECS
from ..engine import get_engine, ops, unsupported
from ..layers import GRU, LSTM, RNN, MinGRU, MinLSTM

GRID = ((200, 4, 32, 64), (100, 32, 64, 128), (100, 64, 256, 256), (1000, 8, 16, 32), (50, 128, 256, 512))
QUICK_GRID = ((20, 2, 4, 8), (10, 4, 8, 16))
CELLS = ("rnn", "lstm", "gru-before", "gru-after")
# training time against T: the seed's gated cells (a sequential loop) beside minGRU/minLSTM, on their native
# loop (engine "auto" on CPU) and on the parallel scan
SCALING_CELLS = ("lstm", "gru-before", "mingru", "minlstm", "mingru-scan", "minlstm-scan")
SCALING_LENGTHS = (100, 1000, 10000)
QUICK_SCALING_LENGTHS = (10, 40)
SCALING_SHAPE = (8, 64, 64)  # B, X, H
# the cell variants: a training step on the native engine against the reference engine
VARIANT_SHAPE = (200, 64, 64, 64)  # T, B, X, H
QUICK_VARIANT_SHAPE = (10, 2, 4, 8)
VARIANTS = (("lstm", {}), ("lstm", {"peepholes": True}), ("lstm", {"coupled": True}), ("lstm", {"layer_norm": True}),
            ("lstm", {"recurrent_dropout": 0.25}), ("lstm", {"zoneout": 0.1}),
            ("lstm", {"layer_norm": True, "peepholes": True, "recurrent_dropout": 0.25, "zoneout": 0.1}),
            ("gru", {}), ("gru", {"layer_norm": True}), ("gru", {"recurrent_dropout": 0.25}), ("gru", {"zoneout": 0.1}),
            ("gru", {"layer_norm": True, "recurrent_dropout": 0.25, "zoneout": 0.1}))


@dataclass
class Row:
    cell: str
    shape: tuple[int, int, int, int]
    train_ms: dict[str, float] = field(default_factory=dict)  # native, rnnlab-torch, torch.nn, jax
    infer_ms: dict[str, float] = field(default_factory=dict)  # rnnlab, torch.nn
    saved_mb: dict[str, float] = field(default_factory=dict)  # rnnlab, torch.nn
    path: str = ""
    rnnlab_ms: float = float("nan")

    @property
    def flops(self) -> float:
        T, B, X, H = self.shape
        G = len(SPECS[self.cell.split("-")[0]].gates)  # "gru-before" -> the GRU's
        return 6.0 * G * T * B * H * (X + H)


def flops(cell: str, shape) -> float:
    """Multiply-adds ×2 of one training step: 6·G·T·B·H·(X+H)."""
    return Row(cell, tuple(shape)).flops


def median_ms(fn, budget_s: float = 1.0, min_repeats: int = 3, max_repeats: int = 25, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in ms, after ``warmup`` calls; repeats sized to about ``budget_s``."""
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    repeats = max(min_repeats, min(max_repeats, int(budget_s / max(first, 1e-6))))
    times = [first]
    for _ in range(repeats - 1):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def sgemm_gflops(n: int = 2048, repeats: int = 10) -> float:
    """The machine's float32 GEMM rate (GFLOP/s) on the current torch threads: n×n by n×n, the
    best of ``repeats`` (a peak to measure against; medians of a busy machine understate it)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def _rnnlab_layer(cell: str, X: int, H: int, engine: str):
    if cell == "rnn":
        return RNN(X, H, engine=engine)
    if cell == "lstm":
        return LSTM(X, H, engine=engine)
    return GRU(X, H, reset=cell.split("-")[1], engine=engine)


def _scaling_layer(cell: str, X: int, H: int):
    if cell.startswith("min"):
        kind, _, engine = cell.partition("-")
        return (MinGRU if kind == "mingru" else MinLSTM)(X, H, engine=engine or "auto")
    return _rnnlab_layer(cell, X, H, "auto")


def scaling(lengths=SCALING_LENGTHS, shape=SCALING_SHAPE, budget_s: float = 1.0) -> dict:
    """Median ms of one training step of each ``SCALING_CELLS`` layer at each sequence length."""
    B, X, H = shape
    out: dict = {}
    for cell in SCALING_CELLS:
        layer = _scaling_layer(cell, X, H)
        for T in lengths:
            out.setdefault(cell, {})[T] = median_ms(_train_step(layer, torch.randn(T, B, X)), budget_s)
    return out


def variant_name(cell: str, opts: dict) -> str:
    """"lstm layer_norm, zoneout=0.1" — a VARIANTS row's label."""
    words = [k if v is True else f"{k}={v}" for k, v in opts.items()]
    return f"{cell} " + (", ".join(words) if words else "(plain)")


def variants(shape=VARIANT_SHAPE, budget_s: float = 1.0) -> dict:
    """Median ms of one training step of each ``VARIANTS`` layer (training mode: dropouts on) on the
    native engine and on the reference engine: {label: {"native": ms, "reference": ms}}."""
    T, B, X, H = shape
    out: dict = {}
    x = torch.randn(T, B, X)
    for cell, opts in VARIANTS:
        cls = LSTM if cell == "lstm" else GRU
        row = out.setdefault(variant_name(cell, opts), {})
        for engine in ("native", "reference"):
            row[engine] = median_ms(_train_step(cls(X, H, engine=engine, **opts), x), budget_s)
    return out


def _torch_layer(cell: str, X: int, H: int):
    return {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM}.get(cell, torch.nn.GRU)(X, H)


def _train_step(module, x):
    def step():
        module.zero_grad(set_to_none=True)
        out, _ = module(x)
        out.sum().backward()

    return step


def _infer(module, x):
    def forward():
        with torch.inference_mode():
            module(x)

    return forward


def saved_mb(module, x) -> float:
    """MB of tensors saved for backward by one forward pass (the training step's activations)."""
    total = [0]
    seen: set[int] = set()

    def pack(t):
        key = t.untyped_storage().data_ptr() if t.device.type != "meta" else id(t)
        if key not in seen:
            seen.add(key)
            total[0] += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return total[0] / 2**20


def measure(cell: str, shape, budget_s: float = 1.0) -> Row:
    """Time one cell at one shape in this process (torch only; JAX is ``run_jax``)."""
    T, B, X, H = shape
    row = Row(cell, tuple(shape))
    torch.manual_seed(0)
    x = torch.randn(T, B, X)
    on_native = _rnnlab_layer(cell, X, H, "native")
    row.train_ms["native"] = median_ms(_train_step(on_native, x), budget_s)
    if unsupported(on_native, False) is None:
        on_torch = _rnnlab_layer(cell, X, H, "torch")
        row.train_ms["rnnlab-torch"] = median_ms(_train_step(on_torch, x), budget_s)
    peer = _torch_layer(cell, X, H)
    row.train_ms["torch.nn"] = median_ms(_train_step(peer, x), budget_s)
    auto = _rnnlab_layer(cell, X, H, "auto")
    row.path = get_engine("auto", auto, x).path(auto, x)
    row.rnnlab_ms = row.train_ms["rnnlab-torch" if row.path.startswith("torch") else "native"]
    row.infer_ms["rnnlab"] = median_ms(_infer(auto, x), budget_s / 2)
    row.infer_ms["torch.nn"] = median_ms(_infer(peer, x), budget_s / 2)
    row.saved_mb["rnnlab"] = saved_mb(auto, x)
    row.saved_mb["torch.nn"] = saved_mb(peer, x)
    return row


def run_jax(grid, cells, threads: int, budget_s: float = 1.0, timeout_s: float = 1800) -> tuple[dict, str]:
    """JAX/Flax timings from a subprocess: ({(cell, shape): {"train": ms, "infer": ms}}, note)."""
    try:
        import flax  # noqa: F401
        import jax  # noqa: F401
    except ImportError as e:
        return {}, f"JAX/Flax not installed ({e.name})"
    env = dict(os.environ)
    if threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    job = json.dumps({"grid": [list(s) for s in grid], "cells": list(cells), "budget_s": budget_s})
    try:
        proc = subprocess.run([sys.executable, "-m", "rnnlab.bench.jax_peer", job], capture_output=True, text=True,
                              env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {}, f"JAX run timed out after {timeout_s:.0f} s"
    if proc.returncode != 0:
        return {}, "JAX run failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    return {(r["cell"], tuple(r["shape"])): r for r in rows}, f"JAX {rows[0]['jax'] if rows else '?'} (subprocess)"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, torch {torch.__version__}"


def _load() -> str:
    """The 1-minute load average: other processes on the machine make timings noisy."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def run(grid=GRID, cells=CELLS, threads: int = 2, jax: bool = True, budget_s: float = 1.0, progress=None,
        scaling_lengths=SCALING_LENGTHS, variant_shape=VARIANT_SHAPE) -> dict:
    """Time everything; returns a report dict (``to_markdown`` renders it)."""
    torch.set_num_threads(threads)
    report = {
        "machine": machine(),
        "threads": threads,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "sgemm_gflops": sgemm_gflops(),
        "native_path": "native-cpp" if ops.available() else "reference",
        "load_before": _load(),
        "rows": [],
    }
    for cell in cells:
        for shape in grid:
            row = measure(cell, shape, budget_s)
            report["rows"].append(row)
            if progress:
                progress(f"{cell:10s} {shape}: rnnlab {row.rnnlab_ms:.2f} ms ({row.path}), torch.nn {row.train_ms['torch.nn']:.2f} ms")
    if scaling_lengths:
        report["scaling"] = scaling(scaling_lengths, SCALING_SHAPE, budget_s)
        report["scaling_shape"] = SCALING_SHAPE
    if variant_shape:
        report["variants"] = variants(variant_shape, budget_s)
        report["variant_shape"] = variant_shape
    report["jax_note"] = "JAX not run"
    if jax:
        jax_rows, report["jax_note"] = run_jax(grid, cells, threads, budget_s)
        for row in report["rows"]:
            r = jax_rows.get((row.cell, row.shape))
            if r:
                row.train_ms["jax"] = r["train"]
                row.infer_ms["jax"] = r["infer"]
    report["load_after"] = _load()
    return report


def peers(row: Row) -> dict[str, float]:
    return {k: v for k, v in row.train_ms.items() if k in ("torch.nn", "jax")}


def ratio(row: Row) -> float:
    """rnnlab / the fastest peer (training step)."""
    p = peers(row)
    return row.rnnlab_ms / min(p.values()) if p else float("nan")


# the targets: rnnlab ≤ 1.0 × the fastest peer (≤ 1.05 where it runs the peer's own kernel, ≤ 1.1 for
# gru-before, whose peers compute reset="after"); ≥ 60 % of the SGEMM rate at the two largest shapes
LARGEST = ((100, 64, 256, 256), (50, 128, 256, 512))


def target(row: Row) -> float:
    if row.cell == "gru-before":
        return 1.1
    return 1.05 if row.path.startswith("torch") else 1.0


def misses(report: dict) -> list[str]:
    """Each target the report misses, in words."""
    out = []
    for row in report["rows"]:
        shape = ", ".join(map(str, row.shape))
        r = ratio(row)
        if r == r and r > target(row):
            fastest = min(peers(row), key=peers(row).get)
            out.append(f"{row.cell} ({shape}): {r:.2f} × {fastest} (target ≤ {target(row):.2f})")
        if row.shape in LARGEST:
            share = row.flops / (row.rnnlab_ms * 1e-3) / 1e9 / report["sgemm_gflops"]
            if share < 0.6:
                out.append(f"{row.cell} ({shape}): {100 * share:.0f} % of the SGEMM rate (target ≥ 60 %)")
    return out


def to_markdown(report: dict) -> str:
    f = lambda v: "–" if v is None or v != v else (f"{v:.3g}" if v < 10 else f"{v:.0f}" if v >= 100 else f"{v:.1f}")
    lines = [
        "# Engine benchmark",
        "",
        "Written by `rnnlab bench --out BENCHMARKS.md` (the same code: `python benchmarks/bench_engine.py`); "
        "see `src/rnnlab/bench/engine.py` for what is timed.",
        "",
        f"Machine: {report['machine']}; {report['threads']} threads; measured {report['when']} "
        f"(load average {report['load_before']} before, {report.get('load_after', '?')} after).",
        f"SGEMM rate measured here: {report['sgemm_gflops']:.0f} GFLOP/s (2048×2048 float32, best of 10). Native loops: "
        f"{report['native_path']}. {report['jax_note']}.",
        "",
        "Training step (forward + backward, float32), median ms; `ratio` = rnnlab / fastest peer; "
        "GFLOP/s from 6·G·T·B·H·(X+H).",
        "",
        "| cell | T, B, X, H | rnnlab | path | native | rnnlab-torch | torch.nn | JAX | ratio | GFLOP/s | % SGEMM |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report["rows"]:
        gf = row.flops / (row.rnnlab_ms * 1e-3) / 1e9
        t = row.train_ms
        lines.append(
            f"| {row.cell} | {', '.join(map(str, row.shape))} | {f(row.rnnlab_ms)} | {row.path} | {f(t.get('native'))} | "
            f"{f(t.get('rnnlab-torch'))} | {f(t.get('torch.nn'))} | {f(t.get('jax'))} | {ratio(row):.2f} | {gf:.1f} | "
            f"{100 * gf / report['sgemm_gflops']:.0f} % |"
        )
    lines += [
        "",
        "Inference (forward only, no autograd), median ms, and memory saved for backward by one training step (MB):",
        "",
        "| cell | T, B, X, H | rnnlab | torch.nn | JAX | rnnlab MB | torch.nn MB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report["rows"]:
        i, m = row.infer_ms, row.saved_mb
        lines.append(
            f"| {row.cell} | {', '.join(map(str, row.shape))} | {f(i.get('rnnlab'))} | {f(i.get('torch.nn'))} | "
            f"{f(i.get('jax'))} | {f(m.get('rnnlab'))} | {f(m.get('torch.nn'))} |"
        )
    if report.get("scaling"):
        B, X, H = report["scaling_shape"]
        Ts = sorted(next(iter(report["scaling"].values())))
        lines += [
            "",
            f"Training step against sequence length (B = {B}, X = {X}, H = {H}; median ms; `engine=\"auto\"`): the seed's "
            "gated cells run a sequential loop over T with a GEMM per step; minGRU and minLSTM (Feng et al. 2024), whose "
            "gates see x_t alone, a loop of one multiply-add per unit and step (native, their \"auto\" on CPU) or, as "
            "`-scan`, the parallel log-space scan. "
            "Last column: time per step at the longest T over time per step at the shortest (1.0 = linear in T).",
            "",
            "| cell | " + " | ".join(f"T = {T}" for T in Ts) + " | per-step cost, longest / shortest T |",
            "| --- | " + " | ".join("---:" for _ in Ts) + " | ---: |",
        ]
        for cell, by_T in report["scaling"].items():
            growth = (by_T[Ts[-1]] / Ts[-1]) / (by_T[Ts[0]] / Ts[0])
            lines.append(f"| {cell} | " + " | ".join(f(by_T[T]) for T in Ts) + f" | {growth:.2f} |")
    if report.get("variants"):
        T, B, X, H = report["variant_shape"]
        plain = {cell: report["variants"].get(variant_name(cell, {}), {}).get("native") for cell in ("lstm", "gru")}
        lines += [
            "",
            f"Cell variants (T = {T}, B = {B}, X = {X}, H = {H}; training step in training mode, median ms): the native "
            "engine's variant loops against the reference engine (the cells' equations under autograd); last column: "
            "native time over the plain cell's native time.",
            "",
            "| variant | native | reference | reference / native | native / plain native |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, r in report["variants"].items():
            base = plain.get(name.split(" ")[0])
            lines.append(f"| {name} | {f(r['native'])} | {f(r['reference'])} | {r['reference'] / r['native']:.1f} | "
                         f"{(r['native'] / base if base else float('nan')):.2f} |")
    missed = misses(report)
    lines += [
        "",
        "Targets: rnnlab ≤ 1.0 × the fastest peer (≤ 1.05 where it runs the peer's own kernel; ≤ 1.1 for gru-before, "
        "whose peers compute reset=\"after\"), and ≥ 60 % of the SGEMM rate at the two largest shapes. "
        + (f"Missed in this run ({len(missed)}):" if missed else "All met in this run."),
        "",
        *[f"* {m}" for m in missed],
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


def as_json(report: dict) -> str:
    out = dict(report)
    out["rows"] = [dict(asdict(r), flops=r.flops, ratio=ratio(r)) for r in report["rows"]]
    return json.dumps(out, indent=1)
