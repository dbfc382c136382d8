"""Fault campaigns shared by the reliability tests and ``scripts/reliability_report.py``.

``kill_campaign`` trains a tiny model through the real command line (``python -m rnnlab.cli
train``), SIGKILLs it at random moments — every other time through ``slow_disk.py``, which writes
checkpoints a few bytes at a time so that the kill lands mid-save — checks after each kill that
every checkpoint on disk loads and that at most one checkpoint interval was lost, resumes, and at
the end compares the finished run with an uninterrupted one: same weights, bit for bit, same
metrics. ``sigint_run`` does the same with one Ctrl-C.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch._dynamo  # noqa: F401  (torch.optim imports it on first use, a second; forked children inherit it)

import rnnlab.cli  # noqa: F401
from rnnlab.train import checkpoint

HERE = Path(__file__).parent
SLOW_DISK = HERE / "slow_disk.py"
EVAL_EVERY = 5
# a tiny run: a few hundred steps a second on one core, a checkpoint every EVAL_EVERY steps
TINY = ["--task", "adding", "--seq-len", "5", "--hidden", "8", "--batch-size", "4", "--engine", "reference",
        "--eval-every", str(EVAL_EVERY), "--no-progress", "--set", "train.eval_samples=8", "--set", "model.embedding=4",
        "--set", "train.tensorboard=false", "--set", "train.log_every=1", "--set", "train.warmup=2"]


def cli(*args: str, slow: bool = False) -> list[str]:
    """The command line of ``rnnlab train`` (through slow_disk.py when ``slow``)."""
    head = [sys.executable, str(SLOW_DISK)] if slow else [sys.executable, "-m", "rnnlab.cli"]
    return [*head, "train", *args]


class Forked:
    """``rnnlab train`` in a forked child of this process, which has imported torch and rnnlab
    already: the same command, the same files, a real process to kill, without a second of
    interpreter start-up per run. Its stdout is ``self.stdout``; stderr is discarded."""

    def __init__(self, argv: list[str], die_at_write: int | None = None):
        """``die_at_write``: the child SIGKILLs itself half-way through its n-th write of a
        checkpoint file (counting from 1; other files do not count), leaving that file half-written
        under its temporary name."""
        args = argv[argv.index("train"):]
        slow = str(SLOW_DISK) in argv
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the caller (pytest), whatever happens
            code = 1
            try:
                os.close(r)
                os.dup2(w, 1)
                os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
                sys.stdout = open(1, "w", buffering=1, closefd=False)
                sys.stderr = open(2, "w", closefd=False)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                torch.set_num_threads(1)
                from rnnlab.cli import main

                if slow:
                    checkpoint._write = _slow_write
                if die_at_write is not None:
                    checkpoint._write = _dying_write(die_at_write)
                try:
                    main(args=args, prog_name="rnnlab")
                    code = 0
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else int(e.code is not None)
            finally:
                os._exit(code)
        os.close(w)
        self.pid, self.returncode = pid, None
        self.stdout = os.fdopen(r, "r")

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _slow_write(fd: int, data) -> int:
    time.sleep(0.001)
    return os.write(fd, bytes(data[:256]))


def _dying_write(n: int):
    count = [0]

    def write(fd: int, data) -> int:
        count[0] += "/checkpoints/" in os.readlink(f"/proc/self/fd/{fd}")
        if count[0] == n:
            os.write(fd, bytes(data[: len(data) // 2]))
            os.kill(os.getpid(), signal.SIGKILL)
        return os.write(fd, data)

    return write


def launch(argv: list[str], fork: bool):
    if fork:
        return Forked(argv)
    return subprocess.Popen(argv, env=env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def env() -> dict[str, str]:
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    src = str(HERE.parents[1] / "src")
    e["PYTHONPATH"] = src + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def logged_steps(run: Path) -> int:
    """The last step that metrics.jsonl records as trained (0 when none)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return 0
    steps = [0]
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a torn last line
            continue
        if record.get("kind") == "train":
            steps.append(record["step"])
    return max(steps)


def records(run: Path) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        r.pop("tokens_per_s", None)
        out.append(r)
    return out


def model_tensors(run: Path, tag: str = "last") -> dict[str, torch.Tensor]:
    tensors, _ = checkpoint.load(run / "checkpoints", tag)
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "optim."))}


def differing_bytes(x: torch.Tensor, y: torch.Tensor) -> int:
    """How many bytes of ``x`` differ from ``y`` (all of them when the shapes or dtypes differ)."""
    if x.shape != y.shape or x.dtype != y.dtype:
        return x.numel() * x.element_size()
    bx, by = x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8)
    return int((bx != by).sum())


@dataclass
class KillReport:
    kills: int = 0
    mid_save: int = 0  # kills that left a temporary checkpoint file behind: the save was under way
    resumed: int = 0
    restarted: int = 0  # killed before the first checkpoint: started again
    steps_lost: list[int] = field(default_factory=list)  # per kill: trained steps not in the last checkpoint
    files_checked: int = 0
    bytes_lost: int = 0  # differing bytes between the finished run's weights and an uninterrupted run's
    identical: bool = False


def check_checkpoints(run: Path, report: KillReport) -> int:
    """Every checkpoint on disk loads (no corrupt file); returns last's step (0 when none)."""
    step = 0
    for tag in ("best", "last"):
        if checkpoint.exists(run / "checkpoints", tag):
            _, meta = checkpoint.load(run / "checkpoints", tag)  # raises on a corrupt file
            report.files_checked += 1
            if tag == "last":
                step = meta["step"]
    return step


def complete(argv: list[str], fork: bool) -> tuple[int, str]:
    """Run the command to its end: (exit code, stdout)."""
    proc = launch(argv, fork)
    out = proc.stdout.read()
    proc.stdout.close()
    return proc.wait(), out


def wait_for_start(proc, limit: float = 60.0) -> bool:
    """Block until the command printed its "run ..." line (training starts); False if it ended first."""
    deadline = time.monotonic() + limit
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            proc.send_signal(signal.SIGKILL)
            raise TimeoutError("rnnlab train did not start within a minute")
        line = proc.stdout.readline()
        if not line:
            return False
        if line.startswith("run "):
            return True


def kill_campaign(root: Path, kills: int = 20, steps: int = 200, seed: int = 0, max_delay: float = 0.35,
                  fork: bool = False) -> KillReport:
    """SIGKILL ``rnnlab train`` ``kills`` times at random moments, resuming after each; then finish
    the run and compare it with an uninterrupted one. Asserts the guarantees as it goes. ``fork``:
    run the command in forked children (``Forked``) rather than new interpreters."""
    rng = random.Random(seed)
    report = KillReport()
    runs = root / "runs"
    args = [*TINY, "--steps", str(steps), "--runs-dir", str(runs), "--name", "k"]
    run = runs / "k"
    while report.kills < kills:
        resume = checkpoint.exists(run / "checkpoints", "last")
        slow = report.kills % 2 == 1
        proc = launch(cli(*args, "--resume" if resume else "--overwrite", slow=slow), fork)
        try:
            if wait_for_start(proc):
                time.sleep(rng.uniform(0.0, max_delay * (3 if slow else 1)))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()
            proc.stdout.close()
        if proc.returncode == 0:  # finished before the kill: begin the run again
            resume = False
            (run / "checkpoints" / "last.safetensors").unlink()
            continue
        assert proc.returncode == -signal.SIGKILL, proc.returncode
        report.kills += 1
        report.resumed += resume
        report.restarted += not resume
        report.mid_save += any(checkpoint.TMP in p.name for p in (run / "checkpoints").glob(".*")) \
            if (run / "checkpoints").is_dir() else 0
        saved = check_checkpoints(run, report)
        lost = logged_steps(run) - saved
        assert lost <= EVAL_EVERY, f"kill {report.kills}: {lost} steps lost, more than one checkpoint interval"
        report.steps_lost.append(max(lost, 0))
    # finish the run, then run it again without interruptions
    resume = checkpoint.exists(run / "checkpoints", "last")
    code, out = complete(cli(*args, "--resume" if resume else "--overwrite"), fork)
    assert code == 0, out
    assert not [p.name for p in run.rglob("*") if checkpoint.TMP in p.name], "temporary files left behind"
    code, out = complete(cli(*TINY, "--steps", str(steps), "--runs-dir", str(runs), "--name", "whole"), fork)
    assert code == 0, out
    a, b = model_tensors(run), model_tensors(runs / "whole")
    assert a.keys() == b.keys()
    report.bytes_lost = sum(differing_bytes(a[k], b[k]) for k in a)
    report.identical = report.bytes_lost == 0 and records(run) == records(runs / "whole")
    return report


def sigint_run(root: Path, delay: float = 0.3, steps: int = 100000) -> tuple[int, str, int, int]:
    """Ctrl-C a run after ``delay`` seconds of training: (exit code, its output, the step it says it
    saved, the last logged step)."""
    runs = root / "runs"
    proc = subprocess.Popen(cli(*TINY, "--steps", str(steps), "--runs-dir", str(runs), "--name", "i"), env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert wait_for_start(proc)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    _, meta = checkpoint.load(runs / "i" / "checkpoints", "last")
    return proc.returncode, out, meta["step"], logged_steps(runs / "i")


def die_mid_write(root: Path, n: int, steps: int = 12) -> tuple[str, int, int]:
    """Kill a run half-way through its n-th checkpoint write, check what is on disk, resume it to the
    end and compare it with an uninterrupted run. Returns (the file being written when it died, the
    step trained when it died, the step of the last checkpoint on disk after it)."""
    runs = root / "runs"
    args = [*TINY, "--steps", str(steps), "--runs-dir", str(runs), "--name", "d"]
    proc = Forked(cli(*args), die_at_write=n)
    proc.stdout.read()
    proc.stdout.close()
    assert proc.wait() == -signal.SIGKILL
    run = runs / "d"
    torn = [p.name for p in (run / "checkpoints").iterdir() if checkpoint.TMP in p.name]
    assert len(torn) == 1, f"the kill was not mid-write: {torn}"
    saved = check_checkpoints(run, KillReport())
    trained = logged_steps(run)
    assert trained - saved <= EVAL_EVERY, (trained, saved)
    code, out = complete(cli(*args, "--resume" if saved else "--overwrite"), True)
    assert code == 0, out
    assert not [p.name for p in run.rglob("*") if checkpoint.TMP in p.name], "temporary files left behind"
    code, out = complete(cli(*args[:-1], "whole"), True)
    assert code == 0, out
    a, b = model_tensors(run), model_tensors(runs / "whole")
    assert a.keys() == b.keys() and all(differing_bytes(a[k], b[k]) == 0 for k in a)
    assert records(run) == records(runs / "whole")
    return torn[0][1:].split(checkpoint.TMP)[0], trained, saved
