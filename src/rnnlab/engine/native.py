"""The compiled loops: ``csrc/loops.cpp`` built on first use with the machine's g++, else the fallback.

``kernels(device)`` returns the module whose ``forward_loop``/``backward_loop`` the fast engine
calls: the C++ extension on CPU when it builds, otherwise ``loops`` (pure PyTorch, same
algorithm) with one warning. The build is cached by torch (``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``); while it builds, one line says so on stderr.

``RNNLAB_NATIVE=0`` in the environment, or ``use_compiled(False)``, forces the fallback.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

from . import loops

SOURCE = Path(__file__).parent / "csrc" / "loops.cpp"
NAME = "rnnlab_engine_loops"
# -ffast-math lets g++ vectorise tanh through glibc's libmvec; compile flags only, never link
# flags (linking with it would set flush-to-zero for the whole process)
CFLAGS = ["-O3", "-ffast-math", "-fopenmp-simd"]

_state: dict = {"module": None, "tried": False, "error": None, "forced_off": False}


def _build() -> ModuleType:
    from torch.utils import cpp_extension

    build_dir = Path(cpp_extension._get_build_directory(NAME, verbose=False))
    built = [p.stat().st_mtime for p in build_dir.glob(f"{NAME}*.so")]
    if not built or max(built) < SOURCE.stat().st_mtime:
        print(f"rnnlab: building the native engine ({SOURCE.name}, once; about a minute)…", file=sys.stderr, flush=True)
    return cpp_extension.load(name=NAME, sources=[str(SOURCE)], extra_cflags=CFLAGS, verbose=False)


def compiled() -> ModuleType | None:
    """The compiled extension, building it on first call; None if it cannot be built or is switched off."""
    if _state["forced_off"] or os.environ.get("RNNLAB_NATIVE", "1") == "0":
        return None
    if not _state["tried"]:
        _state["tried"] = True
        try:
            _state["module"] = _build()
        except Exception as e:  # no compiler, failed build, failed load: fall back, never crash
            _state["error"] = f"{type(e).__name__}: {e}"
            warnings.warn(
                "rnnlab: the native engine's C++ loops could not be built; using the pure-PyTorch loops "
                f"(same results, slower). Reason: {_state['error'].splitlines()[0][:300]}",
                RuntimeWarning,
                stacklevel=3,
            )
    return _state["module"]


def kernels(device) -> ModuleType:
    """The loops to run for tensors on ``device``: compiled on CPU when available, else pure PyTorch."""
    if getattr(device, "type", device) == "cpu":
        mod = compiled()
        if mod is not None:
            return mod
    return loops


def path(device) -> str:
    """Which loops ``kernels(device)`` runs: "native-cpp" or "native-python"."""
    return "native-python" if kernels(device) is loops else "native-cpp"


@contextlib.contextmanager
def use_compiled(flag: bool):
    """Within the block, use (True) or bypass (False) the compiled loops."""
    old = _state["forced_off"]
    _state["forced_off"] = not flag
    try:
        yield
    finally:
        _state["forced_off"] = old
