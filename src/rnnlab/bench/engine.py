"""The engine benchmark: one training step of one layer per cell, rnnlab against its peers.

Run it as ``rnnlab bench`` or ``python benchmarks/bench_engine.py`` (same code). For each cell
(rnn, lstm, gru-before, gru-after) and shape (T, B, X, H) it times, in float32 on ``threads``
threads, the median of repeats after warm-up — in ``ROUNDS`` rounds that take rnnlab and its torch-process peers
in turn (``timing.rounds_of``: the median of the rounds' medians, so that a ratio sees the same minutes of a noisy
machine; each round's times are kept, and the speed targets' misses give their per-round ratios' range) — of:

* a training step (forward + backward of ``out.sum()`` into the parameters) for rnnlab's native
  engine, rnnlab's torch engine (where torch can compute the cell), torch.nn (default settings)
  and JAX/Flax ``nn.RNN`` under ``jax.jit(jax.grad(...))`` — JAX in a subprocess, because XLA's
  thread pool sharing a process with torch slows torch down 10–100×;
* inference (forward only) for rnnlab, torch.nn, JAX (``jax.jit(model.apply)``) and onnxruntime
  (``onnx_peer``: the layer as an ONNX file with ONNX's own RNN / LSTM / GRU operator), over the grid and at
  batch 1 (``BATCH1_SHAPES``), in ``INFER_ROUNDS`` rounds that time the torch-process peers in turn (the
  median of the rounds' medians); and the per-step latency of streaming (``rnnlab.stream.Streamer.step``) at
  batch 1 against a torch.nn cell and onnxruntime stepping the T = 1 file with its state fed back (on
  ``STREAM_THREADS`` = 1 thread, as ``benchmarks/bench_stream.py``);
* a training step under ``torch.autocast("cpu", dtype=torch.bfloat16)`` for rnnlab and torch.nn (and JAX
  with bfloat16 parameters and inputs), beside rnnlab's float32 step; which kernel rnnlab's operators run
  under autocast is ``rnnlab.engine.ops.bf16_kernel()`` where that exists;
* a training step of stacked layers (``num_layers=2``, one and two directions) for rnnlab and torch.nn;
* where the native engine's training step goes (``rnnlab.bench.split``): (a) its per-step recurrent GEMMs,
  timed by the bench-only operator ``rnnlab::time_step_gemms`` running the loop's own GEMM calls (same
  shapes, strides, BLAS threads) alone in C++; (b) its GEMMs over all T·B rows (input projection, ∂W_ih,
  ∂W_hh), timed with ``torch.mm`` at their exact shapes and layouts; (c) the rest = step − (a) − (b); (a) and
  (b) also as a share of the SGEMM rate;
* the bytes saved for backward by one training step (activations: rnnlab and torch.nn);
* training time against T for the sequential cells beside minGRU/minLSTM (native loop and parallel scan), and a
  training step of each cell variant (layer norm, peepholes, CIFG, recurrent dropout, zoneout) on the
  native engine against the reference engine.

rnnlab's number is the engine "auto" picks (the ``path`` column says which, and, for the native loops, the routes
one call took: ``split`` forward, ``split back`` backward split by unit over both cores, ``rows`` and ``rows back`` split
by row (each half of the batch a loop on a core of its own), ``small`` the small-rows kernel; ``routed``). GFLOP/s counts
6·G·T·B·H·(X+H) per step (forward 2, backward 4 multiply-adds per weight and row) and is set
against the SGEMM rate measured on the machine (the header gives the bfloat16 GEMM rate, measured alike).
torch.nn and Flax have no GRU of the seed's form (reset="before"): gru-before is set against their GRU
(reset="after"); onnxruntime runs it from rnnlab's own ONNX file.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import torch

from ..cells.spec import SPECS
from ..engine import get_engine, ops, unsupported
from ..layers import GRU, LSTM, RNN, MinGRU, MinLSTM
from ..stream import Streamer
from . import onnx_peer
from . import split as time_split
from .stream import per_step_us, torch_stack_step
from .timing import ROUNDS, gemm_gflops, median_ms, medians, round_ratios, rounds_of

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
# inference at batch 1 (and the streaming rows at their X, H), and stacked layers' training step
BATCH1_SHAPES = ((200, 1, 32, 64), (50, 1, 256, 512))
QUICK_BATCH1_SHAPES = ((10, 1, 4, 8),)
STACKED_SHAPES = ((100, 32, 64, 128), (100, 64, 256, 256))
QUICK_STACKED_SHAPES = ((10, 2, 4, 8),)
STREAM_STEPS, STREAM_REPEATS = 1000, 5  # per-step latency: best of STREAM_REPEATS blocks of STREAM_STEPS steps
# ... on one thread, as benchmarks/bench_stream.py: at batch 1 a second thread only adds synchronisation (and on
# a busy machine a 10× wait at each step's barrier)
STREAM_THREADS = 1
QUICK_STREAM_STEPS = 20


@dataclass
class Row:
    cell: str
    shape: tuple[int, int, int, int]
    train_ms: dict[str, float] = field(default_factory=dict)  # native, rnnlab-torch, torch.nn, jax
    infer_ms: dict[str, float] = field(default_factory=dict)  # rnnlab, torch.nn, jax, onnxruntime
    saved_mb: dict[str, float] = field(default_factory=dict)  # rnnlab, torch.nn
    path: str = ""
    rnnlab_ms: float = float("nan")
    bf16_ms: dict[str, float] = field(default_factory=dict)  # training step under autocast: rnnlab, torch.nn, jax
    bf16_out: dict[str, str] = field(default_factory=dict)  # the output's dtype under autocast: rnnlab, torch.nn
    split: dict | None = None  # rnnlab.bench.split.split of the native step
    bf16_path: str = ""  # what rnnlab's autocast step ran: "native-cpp bf16", "native-cpp float32", "torch-onednn", ...
    split_bf16: dict | None = None  # the same split of that step, where it ran the native bf16 mode
    infer_path: str = ""  # what rnnlab's inference call ran: the engine's path, and the native loops' route (routed)
    # each round's time (ms) of the torch-process entries above, in the order the rounds ran (timing.rounds_of)
    train_rounds: dict[str, list[float]] = field(default_factory=dict)
    infer_rounds: dict[str, list[float]] = field(default_factory=dict)
    bf16_rounds: dict[str, list[float]] = field(default_factory=dict)

    @property
    def flops(self) -> float:
        T, B, X, H = self.shape
        G = len(SPECS[self.cell.split("-")[0]].gates)  # "gru-before" -> the GRU's
        return 6.0 * G * T * B * H * (X + H)


def flops(cell: str, shape) -> float:
    """Multiply-adds ×2 of one training step: 6·G·T·B·H·(X+H)."""
    return Row(cell, tuple(shape)).flops


def _rnnlab_layer(cell: str, X: int, H: int, engine: str, **kw):
    if cell == "rnn":
        return RNN(X, H, engine=engine, **kw)
    if cell == "lstm":
        return LSTM(X, H, engine=engine, **kw)
    return GRU(X, H, reset=cell.split("-")[1], engine=engine, **kw)


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


def _torch_layer(cell: str, X: int, H: int, **kw):
    return {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM}.get(cell, torch.nn.GRU)(X, H, **kw)


def _torch_cell(cell: str, X: int, H: int):
    """torch.nn's one-step cell of ``cell`` (GRUCell, reset="after", for gru-before too)."""
    return {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell}.get(cell, torch.nn.GRUCell)(X, H)


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


def _bf16(fn):
    """``fn`` run under ``torch.autocast("cpu", dtype=torch.bfloat16)``."""
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fn()

    return run


def _bf16_out(module, x) -> str:
    """The dtype ``module``'s output has under bfloat16 autocast ("bfloat16" where it computes in it)."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return str(module(x)[0].dtype).removeprefix("torch.")


def bf16_kernel() -> str:
    """Which kernel rnnlab's operators run under bfloat16 autocast: ``ops.bf16_kernel()`` where it exists."""
    name = getattr(ops, "bf16_kernel", None)
    return name() if callable(name) else "float32 (autocast casts up)"


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


def routed(path: str, fn) -> str:
    """``path`` ("native-cpp", "torch-onednn", ...) and, for the native loops, the routes one call of ``fn`` took
    (``rnnlab::route_counts``): "split" (forward loops split by unit, csrc/split.h), "split back" (backward too),
    "rows" and "rows back" (split by row: halves of the batch on a thread each, split.h's run_rows), "small" (the
    small-rows kernel, csrc/small_gemm.h), "bf16" (the operators' bf16 mode)."""
    if not path.startswith("native-cpp") or not ops.available():
        return path
    before = torch.ops.rnnlab.route_counts()
    fn()
    _, split, small, split_back, bf16, rows, rows_back = (a - b for a, b in zip(torch.ops.rnnlab.route_counts(), before))
    tags = [name for name, n in (("split", split), ("split back", split_back), ("rows", rows), ("rows back", rows_back),
                                 ("small", small), ("bf16", bf16)) if n]
    return " ".join([path, *tags])


INFER_ROUNDS = ROUNDS  # inference is timed in rounds too, the peers in turn within each (onnxruntime's own timer)


def measure_inference(row: Row, ours, peer, x, budget_s: float, onnx_threads: int | None) -> None:
    """Fill ``row.infer_ms``: rnnlab, torch.nn and, given its threads, onnxruntime (torch.nn's module
    exported; rnnlab's layer for gru-before, which torch.nn cannot express), each the median of its medians over
    ``INFER_ROUNDS`` rounds that time them in turn (onnxruntime on a fresh session each round, gone before the next
    is timed: its threads spin between runs); and ``row.infer_path``."""
    with torch.inference_mode():
        row.infer_path = routed(get_engine("auto", ours, x).path(ours, x), _infer(ours, x))
    budget = budget_s / 2 / INFER_ROUNDS
    times: dict[str, list[float]] = {}
    with contextlib.ExitStack() as stack:
        path = None
        if onnx_threads:
            path = stack.enter_context(onnx_peer.exported(ours if row.cell == "gru-before" else peer, x))
        for _ in range(INFER_ROUNDS):
            times.setdefault("rnnlab", []).append(median_ms(_infer(ours, x), budget))
            times.setdefault("torch.nn", []).append(median_ms(_infer(peer, x), budget))
            if path:
                times.setdefault("onnxruntime", []).append(onnx_peer.infer_ms_at(path, x, onnx_threads, budget))
    row.infer_ms.update(medians(times))
    row.infer_rounds.update(times)


def measure_bf16(row: Row, ours, peer, x, budget_s: float) -> None:
    """Fill ``row.bf16_ms``, ``row.bf16_out`` and ``row.bf16_path``: the training step under bfloat16 autocast,
    rnnlab and torch.nn timed in rounds (``rounds_of``; each the median of its rounds)."""
    row.bf16_rounds.update(rounds_of({name: _bf16(_train_step(module, x))
                                      for name, module in (("rnnlab", ours), ("torch.nn", peer))}, budget_s))
    row.bf16_ms.update(medians(row.bf16_rounds))
    for name, module in (("rnnlab", ours), ("torch.nn", peer)):
        row.bf16_out[name] = _bf16_out(module, x)
    row.bf16_path = bf16_path(ours, x)


def bf16_path(layer, x) -> str:
    """What ``layer``'s training step runs under bfloat16 autocast: "native-cpp bf16" (the operators' bf16 mode ran,
    as ``rnnlab::route_counts`` saw), "native-cpp float32" (a level below ``BF16_MIN_STEP_MACS`` in ``csrc/ops.cpp``,
    or no bf16 kernel here), or the torch kernel's path."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        path = get_engine("auto", layer, x).path(layer, x)
    if path != "native-cpp" or not ops.available():
        return path
    on = "bf16" in routed(path, _bf16(_train_step(layer, x))).split()
    return "native-cpp " + ("bf16" if on else "float32")


def measure(cell: str, shape, budget_s: float = 1.0, onnx_threads: int | None = None) -> Row:
    """Time one cell at one shape in this process (torch and onnxruntime; JAX is ``run_jax``): the training steps
    of rnnlab's engines and torch.nn in rounds that take them in turn (``rounds_of``; each the median of its
    rounds), then inference and bf16."""
    T, B, X, H = shape
    row = Row(cell, tuple(shape))
    torch.manual_seed(0)
    x = torch.randn(T, B, X)
    on_native = _rnnlab_layer(cell, X, H, "native")
    steps = {"native": _train_step(on_native, x)}
    if unsupported(on_native, False) is None:
        steps["rnnlab-torch"] = _train_step(_rnnlab_layer(cell, X, H, "torch"), x)
    peer = _torch_layer(cell, X, H)
    steps["torch.nn"] = _train_step(peer, x)
    row.train_rounds.update(rounds_of(steps, budget_s))
    row.train_ms.update(medians(row.train_rounds))
    auto = _rnnlab_layer(cell, X, H, "auto")
    row.path = routed(get_engine("auto", auto, x).path(auto, x), _train_step(auto, x))
    row.rnnlab_ms = row.train_ms["rnnlab-torch" if row.path.startswith("torch") else "native"]
    measure_inference(row, auto, peer, x, budget_s, onnx_threads)
    row.saved_mb["rnnlab"] = saved_mb(auto, x)
    row.saved_mb["torch.nn"] = saved_mb(peer, x)
    measure_bf16(row, auto, peer, x, budget_s)
    return row


def measure_batch1(cell: str, shape, budget_s: float = 1.0, onnx_threads: int | None = None) -> Row:
    """Inference only (``infer_ms``) of one cell at one shape, for the batch-1 rows."""
    T, B, X, H = shape
    torch.manual_seed(0)
    row = Row(cell, tuple(shape))
    measure_inference(row, _rnnlab_layer(cell, X, H, "auto"), _torch_layer(cell, X, H), torch.randn(T, B, X),
                      budget_s, onnx_threads)
    return row


def measure_stacked(cell: str, shape, bidirectional: bool, budget_s: float = 1.0) -> dict:
    """A training step of a 2-level layer (one or two directions): rnnlab (engine "auto") and torch.nn, timed in
    rounds (``rounds_of``; each the median of its rounds, and the rounds as ``train_rounds``)."""
    T, B, X, H = shape
    torch.manual_seed(0)
    x = torch.randn(T, B, X)
    ours = _rnnlab_layer(cell, X, H, "auto", num_layers=2, bidirectional=bidirectional)
    peer = _torch_layer(cell, X, H, num_layers=2, bidirectional=bidirectional)
    rounds = rounds_of({"rnnlab": _train_step(ours, x), "torch.nn": _train_step(peer, x)}, budget_s)
    return {"cell": cell, "shape": tuple(shape), "directions": 2 if bidirectional else 1,
            "path": routed(get_engine("auto", ours, x).path(ours, x), _train_step(ours, x)),
            "train_ms": medians(rounds), "train_rounds": rounds}


def stream_latency(cell: str, X: int, H: int, steps: int, repeats: int, onnx: bool) -> dict:
    """µs per step at batch 1 (best of ``repeats`` blocks of ``steps``, on the current torch threads): rnnlab's
    Streamer and a torch.nn cell (interleaved), then, where ``onnx``, onnxruntime (as many threads) on the
    layer's T = 1 file with its state fed back — on its own, its session gone before anything else runs
    (onnxruntime's thread pool spins between runs)."""
    torch.manual_seed(0)
    layer = _rnnlab_layer(cell, X, H, "auto").eval()
    x = torch.randn(1, X)
    streamer = Streamer(layer)
    fns = {"Streamer": streamer.step, "torch.nn": torch_stack_step([_torch_cell(cell, X, H)], cell == "lstm")}
    us = dict(zip(fns, per_step_us(list(fns.values()), x, steps, repeats)))
    if onnx:
        us["onnxruntime"] = per_step_us([onnx_peer.one_step(layer, X, torch.get_num_threads())], x, steps, repeats)[0]
    return {"cell": cell, "X": X, "H": H, "step_us": us, "path": streamer.paths[0]}


def run_jax(grid, cells, threads: int, budget_s: float = 1.0, timeout_s: float = 1800, infer_grid=(),
            bf16: bool = False) -> tuple[dict, str]:
    """JAX/Flax timings from a subprocess: ({(cell, shape): {"train": ms, "infer": ms[, "train_bf16": ms]}}, note);
    the ``infer_grid`` shapes get "infer" alone."""
    try:
        import flax  # noqa: F401
        import jax  # noqa: F401
    except ImportError as e:
        return {}, f"JAX/Flax not installed ({e.name})"
    env = dict(os.environ)
    if threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    job = json.dumps({"grid": [list(s) for s in grid], "cells": list(cells), "budget_s": budget_s, "bf16": bf16,
                      "infer_grid": [list(s) for s in infer_grid]})
    try:
        proc = subprocess.run([sys.executable, "-m", "rnnlab.bench.jax_peer", job], capture_output=True, text=True,
                              env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {}, f"JAX run timed out after {timeout_s:.0f} s"
    if proc.returncode != 0:
        return {}, "JAX run failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    out: dict = {}
    for r in rows:
        out.setdefault((r["cell"], tuple(r["shape"])), {}).update(r)
    return out, f"JAX {rows[0]['jax'] if rows else '?'} (subprocess)"


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


def _onnx_note(onnxruntime: bool) -> tuple[bool, str]:
    """(whether onnxruntime runs, its note for the header)."""
    if not onnxruntime:
        return False, "onnxruntime not run"
    version = onnx_peer.version()
    return (True, f"onnxruntime {version}") if version else (False, "onnxruntime not installed")


def _merge_jax(report: dict, jax_rows: dict) -> None:
    """JAX's timings into the grid's rows (training, bf16 training, inference) and the batch-1 rows."""
    for row in report["rows"] + report["batch1"]:
        r = jax_rows.get((row.cell, row.shape), {})
        for key, into in (("train", row.train_ms), ("infer", row.infer_ms), ("train_bf16", row.bf16_ms)):
            if key in r:
                into["jax"] = r[key]


def _stream_sizes(batch1_shapes) -> list[tuple[int, int]]:
    """The (X, H) of the streaming rows: the batch-1 shapes'."""
    return list(dict.fromkeys((X, H) for _, _, X, H in batch1_shapes))


def _stream_rows(cells, sizes, steps: int, onnx: bool, threads: int) -> list[dict]:
    """``stream_latency`` of each cell and (X, H), on ``STREAM_THREADS``; torch's threads set back after."""
    torch.set_num_threads(STREAM_THREADS)
    try:
        return [stream_latency(cell, X, H, steps, STREAM_REPEATS, onnx) for cell in cells for X, H in sizes]
    finally:
        torch.set_num_threads(threads)


def run(grid=GRID, cells=CELLS, threads: int = 2, jax: bool = True, budget_s: float = 1.0, progress=None,
        scaling_lengths=SCALING_LENGTHS, variant_shape=VARIANT_SHAPE, onnxruntime: bool = True,
        batch1_shapes=BATCH1_SHAPES, stacked_shapes=STACKED_SHAPES, stream_steps: int = STREAM_STEPS) -> dict:
    """Time everything on ``threads`` of torch's threads (set back after); returns a report dict (``to_markdown``
    renders it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(grid, cells, threads, jax, budget_s, progress, scaling_lengths, variant_shape, onnxruntime,
                    batch1_shapes, stacked_shapes, stream_steps)
    finally:
        torch.set_num_threads(before)


def _run(grid, cells, threads, jax, budget_s, progress, scaling_lengths, variant_shape, onnxruntime, batch1_shapes,
         stacked_shapes, stream_steps) -> dict:
    say = progress or (lambda _: None)
    use_onnx, onnx_note = _onnx_note(onnxruntime)
    onnx_threads = threads if use_onnx else None
    report = {
        "machine": machine(),
        "threads": threads,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "sgemm_gflops": gemm_gflops(),
        "bf16_gflops": gemm_gflops(dtype=torch.bfloat16),
        "bf16_kernel": bf16_kernel(),
        "f32_products": torch.ops.rnnlab.f32_products() if ops.available() else "none (no native operators)",
        "native_path": "native-cpp" if ops.available() else "reference",
        "onnx_note": onnx_note,
        "load_before": _load(),
        "rows": [],
    }
    for cell in cells:
        for shape in grid:
            row = measure(cell, shape, budget_s, onnx_threads)
            row.split = time_split.split(cell, shape, row.train_ms["native"], report["sgemm_gflops"], budget_s)
            if row.bf16_path == "native-cpp bf16":
                row.split_bf16 = time_split.split(cell, shape, row.bf16_ms["rnnlab"], report["bf16_gflops"], budget_s,
                                                  bf16=True)
            report["rows"].append(row)
            say(f"{cell:10s} {shape}: rnnlab {row.rnnlab_ms:.2f} ms ({row.path}), torch.nn {row.train_ms['torch.nn']:.2f} ms")
    report["batch1"] = [measure_batch1(cell, shape, budget_s, onnx_threads) for cell in cells for shape in batch1_shapes]
    report["stream"] = _stream_rows(cells, _stream_sizes(batch1_shapes) if stream_steps else (), stream_steps,
                                    use_onnx, threads)
    report["stream_threads"] = STREAM_THREADS
    say("batch 1 and streaming: done")
    report["stacked"] = [measure_stacked(cell, shape, bidirectional, budget_s)
                         for cell in cells for shape in stacked_shapes for bidirectional in (False, True)]
    say("stacked layers: done")
    if scaling_lengths:
        report["scaling"] = scaling(scaling_lengths, SCALING_SHAPE, budget_s)
        report["scaling_shape"] = SCALING_SHAPE
    if variant_shape:
        report["variants"] = variants(variant_shape, budget_s)
        report["variant_shape"] = variant_shape
    report["jax_note"] = "JAX not run"
    if jax:
        jax_rows, report["jax_note"] = run_jax(grid, cells, threads, budget_s, infer_grid=batch1_shapes, bf16=True)
        _merge_jax(report, jax_rows)
    report["load_after"] = _load()
    return report


def peers(row: Row) -> dict[str, float]:
    return {k: v for k, v in row.train_ms.items() if k in ("torch.nn", "jax")}


def ratio(row: Row) -> float:
    """rnnlab / the fastest peer (training step)."""
    p = peers(row)
    return row.rnnlab_ms / min(p.values()) if p else float("nan")


def over_fastest(ours: float | None, times: dict, names=("torch.nn", "jax", "onnxruntime")) -> float:
    """``ours`` / the fastest of the peers ``names`` in ``times`` (nan without one)."""
    p = [v for k, v in times.items() if k in names]
    return ours / min(p) if p and ours is not None else float("nan")


def infer_ratio(row: Row) -> float:
    """rnnlab / the fastest of torch.nn, JAX and onnxruntime (inference)."""
    return over_fastest(row.infer_ms.get("rnnlab"), row.infer_ms)


def bf16_ratio(row: Row) -> float:
    """rnnlab / the fastest of torch.nn and JAX (training step under bfloat16 autocast)."""
    return over_fastest(row.bf16_ms.get("rnnlab"), row.bf16_ms)


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


# the speed targets, each a ratio on its own row: float32 training ≤ 0.8 × the fastest peer, bf16 autocast
# training ≤ 0.8 × the fastest bf16 peer, inference ≤ 1.0 × the fastest of torch.nn, JAX and onnxruntime (grid and
# batch 1), stacked and bidirectional 2-level training ≤ 0.7 × torch.nn
SPEED = {"training": 0.8, "bf16": 0.8, "inference": 1.0, "stacked": 0.7}


def _per_round(ours: str, rounds: dict, times: dict, names) -> list[float]:
    """``ours``'s ratio to the fastest of the peers ``names`` in each round (``timing.round_ratios``): a peer with
    rounds in ``rounds`` counts with its round, one timed elsewhere (JAX) with its one time in ``times``."""
    peers = {k: rounds.get(k, times.get(k)) for k in names if k in rounds or k in times}
    return round_ratios(rounds.get(ours, []), peers)


def train_round_ratios(row: Row) -> list[float]:
    """Per round, rnnlab's training step over the fastest peer's (torch.nn in that round, JAX's one time)."""
    ours = "rnnlab-torch" if row.path.startswith("torch") else "native"
    return _per_round(ours, row.train_rounds, row.train_ms, ("torch.nn", "jax"))


def infer_round_ratios(row: Row) -> list[float]:
    return _per_round("rnnlab", row.infer_rounds, row.infer_ms, ("torch.nn", "jax", "onnxruntime"))


def bf16_round_ratios(row: Row) -> list[float]:
    return _per_round("rnnlab", row.bf16_rounds, row.bf16_ms, ("torch.nn", "jax"))


def stacked_round_ratios(r: dict) -> list[float]:
    return _per_round("rnnlab", r.get("train_rounds", {}), r["train_ms"], ("torch.nn",))


def speed_misses(report: dict) -> dict[str, list[str]]:
    """Per speed target, the rows that miss it (cell, shape and ratio; in brackets the lowest and highest of the
    per-round ratios, where the report has the rounds), in words."""
    out: dict[str, list[str]] = {name: [] for name in SPEED}

    def check(name, cell, shape, r, per_round, extra=""):
        if r == r and r > SPEED[name]:
            spread = f" (rounds {min(per_round):.2f}–{max(per_round):.2f})" if per_round else ""
            out[name].append(f"{cell} ({_shape(shape)}{extra}) {r:.2f}{spread}")

    for row in report["rows"]:
        check("training", row.cell, row.shape, ratio(row), train_round_ratios(row))
        check("bf16", row.cell, row.shape, bf16_ratio(row), bf16_round_ratios(row))
        check("inference", row.cell, row.shape, infer_ratio(row), infer_round_ratios(row))
    for row in report.get("batch1", []):
        check("inference", row.cell, row.shape, infer_ratio(row), infer_round_ratios(row))
    for r in report.get("stacked", []):
        t = r["train_ms"]
        check("stacked", r["cell"], r["shape"], t["rnnlab"] / t["torch.nn"], stacked_round_ratios(r),
              "; bidirectional" if r["directions"] == 2 else "")
    return out


def _speed_lines(report: dict) -> list[str]:
    missed = speed_misses(report)
    lines = ["", "Speed targets (ratios as in the tables above): float32 training ≤ 0.8 × the fastest peer, bf16 "
             "autocast training ≤ 0.8, inference ≤ 1.0 (grid and batch 1), 2-level stacked and bidirectional "
             "training ≤ 0.7 × torch.nn. Rows that miss them, each with the lowest and highest of its per-round "
             "ratios in brackets (each round times rnnlab and the torch-process peers in turn; JAX's one time counts "
             "in every round): a range that reaches the target is a miss within this host's round-to-round noise, "
             "one wholly above it a miss in every round.", ""]
    for name, rows in missed.items():
        lines.append(f"* {name} (≤ {SPEED[name]}): " + (", ".join(rows) if rows else "none"))
    return lines


def from_json(text: str) -> dict:
    """A report written by ``as_json``, back as ``run`` returns it (for ``to_markdown``)."""
    report = json.loads(text)
    names = {f.name for f in Row.__dataclass_fields__.values()}

    def row(d):
        return Row(**{k: (tuple(v) if k == "shape" else v) for k, v in d.items() if k in names})

    report["rows"] = [row(d) for d in report["rows"]]
    report["batch1"] = [row(d) for d in report.get("batch1", [])]
    for r in report.get("stacked", []):
        r["shape"] = tuple(r["shape"])
    report["scaling"] = {cell: {int(T): ms for T, ms in by_T.items()} for cell, by_T in report.get("scaling", {}).items()}
    return report


def _fmt(v) -> str:
    """A time or size to about 3 significant digits; "–" where absent."""
    return "–" if v is None or v != v else (f"{v:.3g}" if v < 10 else f"{v:.0f}" if v >= 100 else f"{v:.1f}")


def _shape(shape) -> str:
    return ", ".join(map(str, shape))


def _inference_lines(rows, memory: bool) -> list[str]:
    """The inference table's header and rows (with the saved-for-backward MB where ``memory``)."""
    mb = " rnnlab MB | torch.nn MB |" if memory else ""
    lines = ["| cell | T, B, X, H | rnnlab | path | torch.nn | JAX | onnxruntime | ratio |" + mb,
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if memory else "")]
    for row in rows:
        i, m = row.infer_ms, row.saved_mb
        lines.append(f"| {row.cell} | {_shape(row.shape)} | {_fmt(i.get('rnnlab'))} | {row.infer_path or '?'} | "
                     f"{_fmt(i.get('torch.nn'))} | "
                     f"{_fmt(i.get('jax'))} | {_fmt(i.get('onnxruntime'))} | {infer_ratio(row):.2f} |"
                     + (f" {_fmt(m.get('rnnlab'))} | {_fmt(m.get('torch.nn'))} |" if memory else ""))
    return lines


def _batch1_lines(report: dict) -> list[str]:
    if not report.get("batch1"):
        return []
    return ["", "Inference at batch 1 (forward only, median ms; `ratio` = rnnlab / fastest of torch.nn, JAX, "
            "onnxruntime):", "", *_inference_lines(report["batch1"], memory=False)]


def _stream_lines(report: dict) -> list[str]:
    if not report.get("stream"):
        return []
    lines = ["", f"Streaming at batch 1, on {report.get('stream_threads', '?')} thread(s) (torch and onnxruntime): µs per step (one time "
             "step, state kept; best of repeated blocks of steps): "
             "rnnlab's `Streamer.step` (`path`: the step it runs, `Streamer.paths`), a torch.nn cell (GRUCell, "
             "reset=\"after\", for gru-before), and "
             "onnxruntime running the layer's ONNX file at T = 1 with h_n (c_n) fed back as h0 (c0); "
             "`ratio` = Streamer / the faster of the other two.", "",
             "| cell | X, H | Streamer | path | torch.nn cell | onnxruntime | ratio |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: |"]
    for r in report["stream"]:
        us = r["step_us"]
        lines.append(f"| {r['cell']} | {r['X']}, {r['H']} | {_fmt(us['Streamer'])} | {r.get('path', '?')} | "
                     f"{_fmt(us['torch.nn'])} | {_fmt(us.get('onnxruntime'))} | {over_fastest(us['Streamer'], us):.2f} |")
    return lines


def _bf16_lines(report: dict) -> list[str]:
    lines = ["", f"Training step under `torch.autocast(\"cpu\", dtype=torch.bfloat16)`, median ms (rnnlab and torch.nn in "
             f"{ROUNDS} rounds, in turn; bf16 kernel: {report.get('bf16_kernel', '?')}); JAX with bfloat16 parameters "
             "and inputs; rnnlab's float32 step for reference; `ratio` = rnnlab bf16 / fastest bf16 peer; `out` = the "
             "output's dtype under autocast (rnnlab / torch.nn: float32 where the layer computes in float32).", "",
             "| cell | T, B, X, H | rnnlab bf16 | torch.nn bf16 | JAX bf16 | rnnlab float32 | ratio | out |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in report["rows"]:
        b, o = row.bf16_ms, row.bf16_out
        lines.append(f"| {row.cell} | {_shape(row.shape)} | {_fmt(b.get('rnnlab'))} | {_fmt(b.get('torch.nn'))} | "
                     f"{_fmt(b.get('jax'))} | {_fmt(row.rnnlab_ms)} | {bf16_ratio(row):.2f} | "
                     f"{o.get('rnnlab', '?')} / {o.get('torch.nn', '?')} |")
    return lines


def _stacked_lines(report: dict) -> list[str]:
    if not report.get("stacked"):
        return []
    lines = ["", "Stacked layers (num_layers = 2, one or two directions): training step, median ms (the median of "
             f"{ROUNDS} rounds that time them in turn); `ratio` = rnnlab / torch.nn.", "",
             "| cell | T, B, X, H | directions | rnnlab | path | torch.nn | ratio |",
             "| --- | --- | ---: | ---: | --- | ---: | ---: |"]
    for r in report["stacked"]:
        t = r["train_ms"]
        lines.append(f"| {r['cell']} | {_shape(r['shape'])} | {r['directions']} | {_fmt(t['rnnlab'])} | {r['path']} | "
                     f"{_fmt(t['torch.nn'])} | {t['rnnlab'] / t['torch.nn']:.2f} |")
    return lines


def _split_lines(report: dict) -> list[str]:
    rows = [row for row in report["rows"] if row.split]
    if not rows:
        return []
    lines = ["", "Where the native engine's training step goes (ms and % of the step; method in "
             "`src/rnnlab/bench/split.py`): (a) the per-step recurrent GEMMs (T forward, T backward), (b) the GEMMs "
             "over all T·B rows (input projection, ∂W_ih, ∂W_hh), each timed on its own at the step's exact shapes, "
             "and (c) the rest: step − (a) − (b) (pointwise maths, overhead). `% SGEMM`: the GEMMs' GFLOP/s over "
             "the SGEMM rate.", ""]
    lines += _split_table(rows, "split", "SGEMM")
    bf16 = [row for row in report["rows"] if getattr(row, "split_bf16", None)]
    if bf16:
        lines += ["", "The same split of rnnlab's training step under bfloat16 autocast, at the rows where it ran the "
                  "operators' bf16 mode (the others: float32 below the mode's size threshold): (a) as that mode runs "
                  "the per-step GEMMs (h and the gradient rows rounded to bf16 each step, then brgemm on W_hh packed "
                  "once per call where this CPU has it, else MKL's bf16 GEMM), (b) on bf16 operands; (c) now also holds the per-call "
                  "bf16 copies of x, the weights and the states (and of ∂a for the GRU: the RNN's and the LSTM's is "
                  "the per-step rounding (a) makes, kept). `% bf16`: the GEMMs' GFLOP/s over the bf16 GEMM rate.", ""]
        lines += _split_table(bf16, "split_bf16", "bf16")
    return lines


def _split_table(rows, key: str, rate: str) -> list[str]:
    lines = [f"| cell | T, B, X, H | step | (a) recurrent | % | (b) large | % | (c) rest | % | (a) % {rate} | "
             f"(b) % {rate} |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        p = getattr(row, key)
        pct = lambda ms: f"{100 * ms / p['step']:.0f} %"  # noqa: E731
        lines.append(f"| {row.cell} | {_shape(row.shape)} | {_fmt(p['step'])} | {_fmt(p['recurrent'])} | "
                     f"{pct(p['recurrent'])} | {_fmt(p['large'])} | {pct(p['large'])} | {_fmt(p['rest'])} | "
                     f"{pct(p['rest'])} | {100 * p['recurrent_sgemm']:.0f} % | {100 * p['large_sgemm']:.0f} % |")
    return lines


def to_markdown(report: dict) -> str:
    f = _fmt
    lines = [
        "# Engine benchmark",
        "",
        "Written by `rnnlab bench --out BENCHMARKS.md` (the same code: `python benchmarks/bench_engine.py`); "
        "see `src/rnnlab/bench/engine.py` for what is timed.",
        "",
        f"Machine: {report['machine']}; {report['threads']} threads; measured {report['when']} "
        f"(load average {report['load_before']} before, {report.get('load_after', '?')} after).",
        f"SGEMM rate measured here: {report['sgemm_gflops']:.0f} GFLOP/s (2048×2048 float32, best of 10); bfloat16 "
        f"GEMM rate: {report.get('bf16_gflops', float('nan')):.0f} GFLOP/s (2048×2048). bf16 kernel: "
        f"{report.get('bf16_kernel', '?')}. Native loops: {report['native_path']}"
        + (f" (float32 per-step products: {report['f32_products']})" if "f32_products" in report else "")
        + f". {report['jax_note']}. "
        f"{report.get('onnx_note', 'onnxruntime not run')}.",
        "",
        f"Training step (forward + backward, float32), median ms (rnnlab's engines and torch.nn: the median of "
        f"{ROUNDS} rounds that time them in turn; JAX in its own process); `ratio` = rnnlab / fastest peer; "
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
        f"Inference (forward only, no autograd), median ms (the median of {INFER_ROUNDS} rounds that time the peers in "
        "turn) — `path`: what rnnlab's call ran (`split`: the loop split by unit over both cores, `rows`: by row, each "
        "half of the batch a loop on a core of its own, `small`: the "
        "small-rows kernel) — onnxruntime runs the layer as ONNX's own RNN / LSTM / GRU "
        "operator (torch.nn's module exported; rnnlab's for gru-before) — `ratio` = rnnlab / fastest of torch.nn, JAX, "
        "onnxruntime; and memory saved for backward by one training step (MB):",
        "",
        *_inference_lines(report["rows"], memory=True),
        *_batch1_lines(report),
        *_stream_lines(report),
        *_bf16_lines(report),
        *_stacked_lines(report),
        *_split_lines(report),
    ]
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
    lines += _speed_lines(report)
    return "\n".join(lines).rstrip("\n") + "\n"


def as_json(report: dict) -> str:
    out = dict(report)
    out["rows"] = [dict(asdict(r), flops=r.flops, ratio=ratio(r), infer_ratio=infer_ratio(r), bf16_ratio=bf16_ratio(r))
                   for r in report["rows"]]
    out["batch1"] = [dict(cell=r.cell, shape=r.shape, infer_ms=r.infer_ms, infer_path=r.infer_path,
                          infer_ratio=infer_ratio(r), infer_rounds=r.infer_rounds)
                     for r in report.get("batch1", [])]
    return json.dumps(out, indent=1)
