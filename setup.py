"""Builds the native engine's operators (``src/rnnlab/engine/csrc``) into the package at install time.

``pip install --no-build-isolation .`` (or ``-e .``; ``make`` does this) compiles ``csrc/ops.cpp`` against
the torch already installed, into ``rnnlab/engine/_C*.so``. Without a C++ compiler, or without torch at
build time, the package still installs: the extension is optional, and rnnlab then runs its reference
engine and says so once, loudly (``rnnlab.engine.ops``).
"""

import sys
from pathlib import Path

from setuptools import setup

# -ffast-math lets g++ vectorise tanh through glibc's libmvec; compile flags only, never link flags
# (linking with it would set flush-to-zero for the whole process). -fopenmp: the loops' threads are OpenMP's team,
# the one torch and MKL run on (torch's own libgomp, loaded first; csrc/threads.h)
CFLAGS = ["-O3", "-g0", "-ffast-math", "-fopenmp", "-std=c++20"]
LDFLAGS = ["-fopenmp"]
SOURCES = ["src/rnnlab/engine/csrc/ops.cpp"]
# the headers it includes: a change to one rebuilds the extension (setuptools compares only what it is told)
HEADERS = sorted(str(p) for p in Path("src/rnnlab/engine/csrc").rglob("*.h"))

ext_modules, cmdclass = [], {}
try:
    from torch.utils.cpp_extension import BuildExtension, CppExtension
except ImportError:
    print("rnnlab: torch is not importable at build time, so the native engine is not built; install torch "
          "first and build with `pip install --no-build-isolation .`", file=sys.stderr)
else:
    ext_modules = [CppExtension("rnnlab.engine._C", SOURCES, depends=HEADERS, extra_compile_args=CFLAGS, extra_link_args=LDFLAGS,
                                optional=True)]
    # without ninja, a failed compile is a CompileError, which setuptools forgives for an optional extension
    cmdclass = {"build_ext": BuildExtension.with_options(use_ninja=False)}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
