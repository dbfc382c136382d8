"""Engines run a layer over a whole sequence, forward and backward.

``engine=`` on a layer picks one:

* ``"reference"`` — the cells' equations step by step under autograd; the ground truth.
* ``"native"`` — hand-written BPTT (``fused.py``) with compiled C++ loops (``csrc/loops.cpp``).
* ``"auto"`` — the fastest engine that computes exactly the reference's function for this call.
"""

from __future__ import annotations

from .fused import NativeEngine
from .reference import ReferenceEngine

ENGINES = ("auto", "native", "reference")

_REFERENCE = ReferenceEngine()
_NATIVE = NativeEngine()


def get_engine(name: str, layer, x):
    """The engine object that will run ``layer`` on ``x`` under the user's choice ``name``."""
    if name == "reference":
        return _REFERENCE
    return _NATIVE
