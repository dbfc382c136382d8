"""Engines run a layer over a whole sequence, forward and backward.

``engine=`` on a layer picks one:

* ``"reference"`` — the cells' equations step by step under autograd; the ground truth.
* ``"native"`` — hand-written BPTT (``fused.py``): compiled C++ loops (``csrc/loops.cpp``), or
  the same algorithm in PyTorch when no compiler is available (and on GPUs).
* ``"torch"`` — torch's fused kernels (oneDNN on CPU, cuDNN on CUDA) on weights converted from
  rnnlab's layout (``torch_kernel.py``); refuses GRU reset="before" and gate traces.
* ``"auto"`` (default) — per call, the fastest of these that computes exactly the reference's
  function (``choose``): native on CPU, cuDNN on CUDA where it applies.

Every engine gives the reference's outputs and gradients (float64 to 1e-10, float32 to 1e-5).
"""

from __future__ import annotations

import torch

from .fused import NativeEngine
from .reference import ReferenceEngine
from .torch_kernel import TorchEngine, unsupported

ENGINES = ("auto", "native", "torch", "reference")

_REFERENCE = ReferenceEngine()
_NATIVE = NativeEngine()
_TORCH = TorchEngine()


def choose(layer, x: torch.Tensor, trace: bool):
    """The engine "auto" runs for this call.

    On CUDA, torch's cuDNN kernels wherever they compute the same function (LSTM, RNN, GRU
    reset="after", no traces); the native engine (PyTorch loops) otherwise. On CPU, the native
    engine: measured (BENCHMARKS.md), its compiled loops match or beat torch's oneDNN LSTM fed
    rnnlab's weights (converted on every call), and beat torch's GRU and RNN kernels outright.
    """
    if x.is_cuda and unsupported(layer, trace) is None:
        return _TORCH
    return _NATIVE


class AutoEngine:
    name = "auto"

    def path(self, layer, x: torch.Tensor, trace: bool = False) -> str:
        """Which code runs for this call: "native-cpp", "native-python", "torch-onednn" or "torch-cudnn"."""
        return choose(layer, x, trace).path(x)

    def run(self, layer, x, hx, lengths, trace):
        return choose(layer, x, trace).run(layer, x, hx, lengths, trace)


_AUTO = AutoEngine()
_BY_NAME = {"auto": _AUTO, "native": _NATIVE, "torch": _TORCH, "reference": _REFERENCE}


def get_engine(name: str, layer, x):
    """The engine object that will run ``layer`` on ``x`` under the user's choice ``name``."""
    return _BY_NAME[name]
