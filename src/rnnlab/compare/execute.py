"""Train every run of a schedule that the cache does not hold yet, one or several at a time,
printing what is running and an estimate of the time left."""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

import torch

from .training import RunCache, RunSpec, train


def _train_and_store(root: str, spec: RunSpec, threads: int) -> float:
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    result, model, _ = train(spec)
    RunCache(root).save(spec, result, model)
    return time.perf_counter() - t0


def _clock(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _label(section: str, info: dict) -> str:
    parts = [section] + [f"{k}={v}" for k, v in info.items()]
    return " · ".join(parts)


def run_missing(schedule: dict[str, list], cache: RunCache, jobs: int = 1, log=sys.stderr) -> dict[str, float]:
    """Train the runs of ``schedule`` missing from ``cache``. Returns {"trained": n, "cached": n, "seconds": s}."""
    todo = [(sec, info, spec) for sec, runs in schedule.items() for info, spec in runs if not cache.has(spec)]
    seen, unique = set(), []
    for item in todo:  # the same spec may serve two sections
        if item[2].key() not in seen:
            seen.add(item[2].key())
            unique.append(item)
    total_runs = sum(len(r) for r in schedule.values())
    cached = total_runs - len(todo)
    print(f"compare: {total_runs} runs in the schedule, {cached} cached, {len(unique)} to train"
          f" ({jobs} at a time)", file=log, flush=True)
    if not unique:
        return {"trained": 0, "cached": cached, "seconds": 0.0}
    total_cost = sum(s.cost() for _, _, s in unique)
    done_cost, start = 0.0, time.perf_counter()

    def report(i, item, took, running):
        nonlocal done_cost
        done_cost += item[2].cost()
        elapsed = time.perf_counter() - start
        left = elapsed / done_cost * (total_cost - done_cost) if done_cost else 0.0
        now = f"; running {' | '.join(_label(r[0], r[1]) for r in running)}" if running else ""
        print(f"[{i:>4}/{len(unique)}] done {_label(item[0], item[1])} in {took:.1f} s"
              f"  (elapsed {_clock(elapsed)}, about {_clock(left)} left{now})", file=log, flush=True)

    if jobs <= 1:
        for i, item in enumerate(unique, 1):
            nxt = unique[i] if i < len(unique) else None
            report(i, item, _train_and_store(str(cache.root), item[2], torch.get_num_threads()), [nxt] if nxt else [])
    else:
        # the costliest runs first, so that the pool does not end waiting on one long run
        queue = sorted(unique, key=lambda it: -it[2].cost())
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            pending = {}
            i = 0
            while queue or pending:
                while queue and len(pending) < jobs:
                    item = queue.pop(0)
                    pending[pool.submit(_train_and_store, str(cache.root), item[2], 1)] = item
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    item = pending.pop(fut)
                    i += 1
                    report(i, item, fut.result(), list(pending.values()) + queue[: max(jobs - len(pending), 0)])
    return {"trained": len(unique), "cached": cached, "seconds": time.perf_counter() - start}
