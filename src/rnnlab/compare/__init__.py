"""``rnnlab compare``: the seed's comparison table, measured.

Trains the three cells under one protocol (``protocol.py``), caches every run (``training.py``),
measures (``measure.py``), decides the seed's claims (``verdicts.py``) and writes ``report.md`` and
a self-contained ``report.html`` (``report.py``, ``document.py``, ``plots.py``, ``textview.py``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from .execute import run_missing
from .measure import measure_all
from .protocol import PROFILES, Profile, schedule
from .report import SECTIONS, build_report
from .unrolled import write_unrolled_page
from .training import RunCache
from .verdicts import SEED_TABLE, seed_table

__all__ = ["run_comparison", "PROFILES", "Profile", "SECTIONS", "SEED_TABLE", "seed_table"]


def _rounded(x):
    if isinstance(x, float):
        return float(f"{x:.5g}") if math.isfinite(x) else None  # strict JSON has no NaN or inf
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_rounded(v) for v in x]
    return x


def run_comparison(profile: str | Profile = "quick", out: str | Path = "report", cache: str | Path = "runs/compare",
                   jobs: int | None = None, log=sys.stderr, train: bool = True) -> dict[str, Path]:
    """Train what the cache lacks, measure, and write the report under ``out``. Returns the written paths.

    ``train=False`` writes the report from the cache alone: every run outside the yardsticks must be
    there; a yardstick cell with runs missing is reported as not trained, without a verdict."""
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ValueError(f"profile: expected one of {', '.join(PROFILES)}, got {profile!r}")
        profile = PROFILES[profile]
    if not isinstance(profile, Profile):
        raise TypeError(f"profile: expected a profile name or a Profile, got {type(profile).__name__}")
    jobs = profile.jobs if jobs is None else jobs
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs: expected a positive int, got {jobs!r}")
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread per run is fastest and leaves the cores to parallel runs
    try:
        sched = schedule(profile)
        runs = RunCache(cache)
        if train:
            done = run_missing(sched, runs, jobs=jobs, log=log)
        else:
            lacking = [info for part, items in sched.items() if part != "yardsticks" for info, spec in items
                       if not runs.has(spec)]
            if lacking:
                raise ValueError(f"cache: {len(lacking)} runs of profile {profile.name!r} outside the yardsticks are not "
                                 f"in {str(cache)!r} (e.g. {lacking[0]}); run without --no-train to train them")
            done = {"trained": 0, "cached": sum(runs.has(spec) for items in sched.values() for _, spec in items)}
        training_minutes = (time.perf_counter() - start) / 60
        measurements = measure_all(profile, sched, runs, log=log)
    finally:
        torch.set_num_threads(threads)
    info = {"trained": done["trained"], "cached": done["cached"], "elapsed": time.perf_counter() - start,
            "training_minutes": training_minutes,
            "train_core_minutes": sum(sum(runs.result(spec)["step_seconds"]) for spec in
                                      {spec.key(): spec for part in sched.values() for _, spec in part}.values()
                                      if runs.has(spec)) / 60,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "engine": ", ".join(f"{cell}: {runs.result(spec)['engine']}" for cell, spec in
                                {info["cell"]: spec for info, spec in sched["memory"]}.items())}
    doc = build_report(profile, measurements, info)
    paths = doc.write(out)
    paths["unrolled"] = write_unrolled_page(measurements.unrolled, out)
    slim = dataclasses.asdict(dataclasses.replace(
        measurements, gates=dataclasses.replace(measurements.gates, text_traces={}),  # the traces are the HTML's
        unrolled=dataclasses.replace(measurements.unrolled, nets=[])))  # so are the unrolled networks' (unroll.html)
    slim = {**slim, "seed_table": [dataclasses.asdict(r) for r in seed_table(measurements)], "run": info}
    target = Path(out) / "measurements.json"
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(_rounded(slim), allow_nan=False), encoding="utf-8")
    os.replace(tmp, target)
    paths["measurements"] = target
    print(f"compare: wrote {paths['markdown']} and {paths['html']} in {info['elapsed'] / 60:.1f} minutes", file=log, flush=True)
    return paths
