"""Engines run a layer over a whole sequence, forward and backward.

``engine=`` on a layer picks one:

* ``"reference"`` — the cells' equations step by step under autograd; the ground truth.
* ``"auto"`` — the fastest engine that computes exactly the reference's function for this call.
"""

from __future__ import annotations

from .reference import ReferenceEngine

ENGINES = ("auto", "reference")

_REFERENCE = ReferenceEngine()


def get_engine(name: str, layer, x):
    """The engine object that will run ``layer`` on ``x`` under the user's choice ``name``."""
    return _REFERENCE
