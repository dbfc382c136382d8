"""The engine benchmark: ``python benchmarks/bench_engine.py [--quick] [--threads N] [--out BENCHMARKS.md]``.

The same code as ``rnnlab bench`` (``rnnlab.bench.engine``); see that module for what is timed.
"""

from rnnlab.cli.bench import bench

if __name__ == "__main__":
    bench()
