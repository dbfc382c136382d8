"""The native engine is built at install, into the package: loading it can never wedge a process.

A process killed at any moment of ``import rnnlab`` and its first native call leaves nothing behind
that the next process waits on (there is no build, cache or lock at run time), and an environment's
engine is its own file inside its own package: a process writes nothing outside it (no
``~/.cache/torch_extensions``, no ``TORCH_EXTENSIONS_DIR``), so two environments share nothing.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rnnlab
from rnnlab.engine import ops

pytestmark = pytest.mark.skipif(not ops.available(), reason="the native operators are not built")

FIRST_CALL = ("import torch, rnnlab\n"
              "from rnnlab.engine import ops\n"
              "layer = rnnlab.GRU(3, 4, engine='native')\n"
              "out, _ = layer(torch.randn(5, 2, 3))\n"
              "out.sum().backward()\n"
              "print(ops.library_path(), layer.select_engine(torch.randn(5, 2, 3)).path(torch.randn(5, 2, 3), layer))\n")


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ, HOME=str(tmp_path / "home"), TORCH_EXTENSIONS_DIR=str(tmp_path / "ext"),
               XDG_CACHE_HOME=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    for d in ("home", "ext", "cache"):
        (tmp_path / d).mkdir(exist_ok=True)
    return env


def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_first_call_loads_the_packaged_library_and_writes_nothing_outside(tmp_path):
    env = _env(tmp_path)
    done = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    path, route = done.stdout.split()
    assert Path(path).parent == Path(rnnlab.__file__).parent / "engine"  # this environment's own file
    assert route == "native-cpp"
    assert "building" not in done.stderr.lower()
    # the process kept no state where another environment (or a later process) would find it
    assert _files_under(tmp_path / "home") == [] and _files_under(tmp_path / "ext") == []
    assert [f for f in _files_under(tmp_path / "cache") if "torch_extensions" in f] == []


def test_a_kill_at_any_moment_of_import_and_first_call_leaves_the_next_process_working(tmp_path):
    env = _env(tmp_path)
    # time one whole run, then kill runs at moments spread over it (and a little beyond)
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, capture_output=True, timeout=120, check=True)
    whole = time.monotonic() - start
    for fraction in (0.02, 0.2, 0.4, 0.6, 0.8, 1.0):
        proc = subprocess.Popen([sys.executable, "-c", FIRST_CALL], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(whole * fraction)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # the next process finishes within a bound: nothing the killed one left can make it wait
        nxt = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, capture_output=True, text=True,
                             timeout=max(60.0, 10 * whole))
        assert nxt.returncode == 0, (fraction, nxt.stderr)
        assert nxt.stdout.split()[1] == "native-cpp", (fraction, nxt.stdout)
    assert _files_under(tmp_path / "ext") == []
