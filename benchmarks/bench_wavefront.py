"""The wavefront against the per-level path and torch.nn: ``python benchmarks/bench_wavefront.py [--rounds N]``.

A 2-level training step (forward + backward of ``out.sum()``, float32) of rnnlab's RNN, LSTM and GRU on
engine="native" — the levels one after the other (``recurrent_level`` per level) and as a wavefront
(``recurrent_stack``, engine/wavefront.py; chunk sizes 0 = the operator's default, and those given) — and of
torch.nn's module of the same shape. The variants are timed in turn, round after round; the table gives each one's
fastest step (on a shared machine the minimum is the least disturbed run) and the ratios wave / level and
wave / torch.nn (the best chunk).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import rnnlab
from rnnlab.engine import wavefront

SHAPES = [(100, 32, 64, 128), (100, 64, 256, 256)]


def step(module, x, wave=None, chunk=0):
    def run():
        if wave is not None:
            os.environ["RNNLAB_WAVEFRONT"] = "1" if wave else "0"  # "1": training calls too
            wavefront.MIN_STEPS = 1 if wave else 10**9
            wavefront.CHUNK = chunk
        out, _ = module(x)
        out.sum().backward()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--chunks", default="0", help="comma-separated steps per chunk (0: the default)")
    parser.add_argument("--cells", default="RNN,LSTM,GRU")
    args = parser.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; fastest of {args.rounds} rounds, ms\n")
    print("| cell | T, B, X, H | level | " + " | ".join(f"wave (chunk {c})" for c in chunks)
          + " | torch.nn | wave / level | wave / torch.nn |")
    print("| --- | --- | ---: | " + " | ".join("---:" for _ in chunks) + " | ---: | ---: | ---: |")
    default_steps = wavefront.MIN_STEPS
    for T, B, X, H in SHAPES:
        for name in args.cells.split(","):
            torch.manual_seed(0)
            ours = getattr(rnnlab, name)(X, H, num_layers=2, engine="native")
            theirs = getattr(torch.nn, name)(X, H, num_layers=2)
            x = torch.randn(T, B, X)
            fns = {"level": step(ours, x, False)}
            fns.update({f"wave{c}": step(ours, x, True, c) for c in chunks})
            fns["torch"] = step(theirs, x)
            best = dict.fromkeys(fns, float("inf"))
            for fn in fns.values():
                fn()
            for _ in range(args.rounds):
                for key, fn in fns.items():
                    start = time.perf_counter()
                    fn()
                    best[key] = min(best[key], time.perf_counter() - start)
            wave = min(best[f"wave{c}"] for c in chunks)
            cells = " | ".join(f"{1e3 * best[f'wave{c}']:.1f}" for c in chunks)
            print(f"| {name} | {T}, {B}, {X}, {H} | {1e3 * best['level']:.1f} | {cells} | {1e3 * best['torch']:.1f} | "
                  f"{wave / best['level']:.2f} | {wave / best['torch']:.2f} |", flush=True)
    wavefront.MIN_STEPS, wavefront.CHUNK = default_steps, 0
    os.environ.pop("RNNLAB_WAVEFRONT", None)


if __name__ == "__main__":
    main()
