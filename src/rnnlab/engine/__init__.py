"""Engines run a layer over a whole sequence, forward and backward.

``engine=`` on a layer picks one:

* ``"reference"`` — the cells' equations step by step under autograd; the ground truth.
* ``"native"`` — hand-written BPTT (``fused.py``): compiled C++ loops (``csrc/loops.cpp``), or
  the same algorithm in PyTorch when no compiler is available (and on GPUs).
* ``"torch"`` — torch's fused kernels (oneDNN on CPU, cuDNN on CUDA) on weights converted from
  rnnlab's layout (``torch_kernel.py``); refuses GRU reset="before" and gate traces.
* ``"auto"`` (default) — per call, the fastest of these that computes exactly the reference's
  function (``choose``): native on CPU except larger float32 LSTMs on 2+ threads (oneDNN),
  cuDNN on CUDA where it applies.

Every engine gives the reference's outputs and gradients (float64 to 1e-10, float32 to 1e-5).

Cell variants (layer_norm, peepholes, coupled; recurrent_dropout and zoneout in training): the native
engine computes every one, alone or together — its variant loops ``lstm_forward_loop`` and
``gru_forward_loop``, with layer norm's row reductions inside the step and zoneout's masks drawn as the
reference engine draws them, so seeded runs agree — and "auto" and "native" run a layer with variants in
force (``active_variants()``) there (``RecurrentLayer.select_engine``); "torch" refuses every variant in
force. A variant the loops did not compute (``fused.NATIVE_VARIANTS``) would run on the reference
engine under "auto", and "native" would refuse it by name.
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


# float32 LSTMs on CPU with at least this many batch·hidden units, on two or more threads, run
# faster in torch's oneDNN kernel (even fed converted weights) than in the native loops; at one
# thread, at smaller sizes and for every other cell the native loops are faster (BENCHMARKS.md)
TORCH_LSTM_MIN_BH = 4096


def choose(layer, x: torch.Tensor, trace: bool):
    """The engine "auto" runs for this call: torch's fused kernel where it computes the same
    function and was measured faster — cuDNN on CUDA; oneDNN for float32 LSTMs with B·H ≥
    ``TORCH_LSTM_MIN_BH`` on two or more CPU threads — else the native engine."""
    if unsupported(layer, trace) is not None:
        return _NATIVE
    if x.is_cuda:
        return _TORCH
    big = x.shape[1] * layer.hidden_size >= TORCH_LSTM_MIN_BH
    if x.device.type == "cpu" and x.dtype == torch.float32 and layer.mode == "lstm" and big:
        if torch.get_num_threads() >= 2:
            return _TORCH
    return _NATIVE


class AutoEngine:
    name = "auto"

    def path(self, layer, x: torch.Tensor, trace: bool = False) -> str:
        """Which code runs for this call: "native-cpp", "native-python", "torch-onednn",
        "torch-aten" or "torch-cudnn"."""
        return choose(layer, x, trace).path(x, layer)

    def run(self, layer, x, hx, lengths, trace):
        return choose(layer, x, trace).run(layer, x, hx, lengths, trace)


_AUTO = AutoEngine()
_BY_NAME = {"auto": _AUTO, "native": _NATIVE, "torch": _TORCH, "reference": _REFERENCE}


def get_engine(name: str, layer, x):
    """The engine object that will run ``layer`` on ``x`` under the user's choice ``name``."""
    return _BY_NAME[name]
