"""Per-step latency of streaming inference at batch 1: rnnlab's Streamer against torch.nn's cells.

One "step" is one time step through every level of a stack, the state kept between calls:

* ``torch.nn``      — a stack of torch.nn.RNNCell / LSTMCell / GRUCell called by hand (the fastest
                      thing torch offers for one step; GRU reset="before" has no torch.nn cell, so
                      its row uses GRUCell, the nearest kernel);
* ``Streamer``      — rnnlab.stream.Streamer(layer).step(x_t) (fused kernels, the default);
* ``Streamer eqs``  — Streamer(layer, fused=False): the cells' own ``equations``.

Everything runs under torch.inference_mode() on the CPU with ``--threads`` torch threads (1 by
default: at batch 1 more threads only add synchronisation). The three contenders are timed in
interleaved rounds; the best of ``--repeats`` blocks of ``--steps`` steps is reported, in
microseconds per step (the best, not the median, because other processes only ever add time).

    python benchmarks/bench_stream.py [--steps 2000] [--repeats 7] [--threads 1] [--out benchmarks/results/stream.md]
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import torch
from torch import nn

import rnnlab
from rnnlab.bench.stream import per_step_us, torch_stack_step
from rnnlab.stream import Streamer

CELLS = {
    "rnn-tanh": (rnnlab.RNN, dict(nonlinearity="tanh"), lambda X, H: nn.RNNCell(X, H)),
    "lstm": (rnnlab.LSTM, {}, lambda X, H: nn.LSTMCell(X, H)),
    "gru-after": (rnnlab.GRU, dict(reset="after"), lambda X, H: nn.GRUCell(X, H)),
    "gru-before": (rnnlab.GRU, dict(reset="before"), lambda X, H: nn.GRUCell(X, H)),
}


def check_equal(layer, cells, x, lstm: bool) -> float:
    """Largest difference between Streamer and the torch.nn stack over a few steps (same weights)."""
    s = Streamer(layer)
    step = torch_stack_step(cells, lstm)
    diff = 0.0
    with torch.inference_mode():
        for _ in range(5):
            diff = max(diff, (s.step(x) - step(x)).abs().max().item())
    return diff


def run(steps: int, repeats: int) -> list[dict]:
    rows = []
    for name, (cls, opts, make) in CELLS.items():
        for H in (64, 256):
            for L in (1, 2):
                torch.manual_seed(0)
                X = H
                layer = cls(X, H, num_layers=L, **opts).eval()
                lstm = name == "lstm"
                if name == "gru-before":
                    cells = [make(X, H) for _ in range(L)]
                    diff = float("nan")  # another function: no torch.nn counterpart
                else:
                    # the same weights as the rnnlab layer, level by level, via torch.nn.{RNN,LSTM,GRU}
                    full = layer.to_torch()
                    cells = []
                    for k in range(L):
                        c = make(X, H)
                        with torch.no_grad():
                            for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                                getattr(c, n).copy_(getattr(full, f"{n}_l{k}"))
                        cells.append(c)
                    diff = check_equal(layer, cells, torch.randn(1, X), lstm)
                x = torch.randn(1, X)
                fns = [torch_stack_step(cells, lstm), Streamer(layer).step, Streamer(layer, fused=False).step]
                t_torch, t_fused, t_eqs = per_step_us(fns, x, steps, repeats)
                rows.append(dict(cell=name, H=H, L=L, torch=t_torch, fused=t_fused, eqs=t_eqs, diff=diff))
                print(f"{name:10s} H={H:3d} L={L}  torch.nn {t_torch:7.1f} us  Streamer {t_fused:7.1f} us  "
                      f"Streamer eqs {t_eqs:7.1f} us  max|diff| {diff:.1e}", flush=True)
    return rows


def markdown(rows: list[dict], steps: int, repeats: int, threads: int, load: float) -> str:
    lines = [
        "# Streaming inference: per-step latency at batch 1",
        "",
        f"`python benchmarks/bench_stream.py --steps {steps} --repeats {repeats} --threads {threads}` — CPU "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores), torch {torch.__version__}; best-of-{repeats} "
        f"µs per step (one step through every level; 1-minute load average {load:.1f} at the start), "
        "input size = hidden size. `max|diff|`: largest difference between the Streamer's and the torch.nn stack's "
        "outputs over 5 steps with the same weights (— where torch.nn has no such cell).",
        "",
        "| cell | H | levels | torch.nn cells (µs) | Streamer (µs) | Streamer, equations (µs) | Streamer / torch.nn | max\\|diff\\| |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        diff = "—" if r["diff"] != r["diff"] else f"{r['diff']:.1e}"
        lines.append(f"| {r['cell']} | {r['H']} | {r['L']} | {r['torch']:.1f} | {r['fused']:.1f} | {r['eqs']:.1f} | "
                     f"{r['fused'] / r['torch']:.2f} | {diff} |")
    lines += ["", "gru-before (the seed's GRU) has no torch.nn cell; its torch.nn column is GRUCell (reset \"after\"), "
              "the nearest kernel, for scale only.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stream.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]  # other processes on the machine make every number larger
    rows = run(args.steps, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows, args.steps, args.repeats, args.threads, load))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
