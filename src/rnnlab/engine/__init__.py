"""Engines run a layer over a whole sequence, forward and backward.

``engine=`` on a layer picks one:

* ``"reference"`` — the cells' equations step by step under autograd; the ground truth.
* ``"native"`` — hand-written BPTT: the ``rnnlab::recurrent_level`` operator (``ops.py``, ``fused.py``),
  compiled at install from ``csrc/`` — one driver (``csrc/driver.h``) and one unit per cell, each cell's
  forward and backward side by side (``csrc/cells/rnn.h``, ``lstm.h``, ``gru.h``, ``linear.h``). Without
  the compiled operators it runs the reference engine, with one warning.
* ``"torch"`` — torch's fused kernels (oneDNN on CPU, cuDNN on CUDA) on weights converted from
  rnnlab's layout (``torch_kernel.py``); refuses GRU reset="before" and gate traces.
* ``"auto"`` (default) — per call, the fastest of these that computes exactly the reference's
  function (``choose``): native on CPU except float32 LSTMs on 2+ threads in inference from 8 rows where half of
  W_hh fills a core's L2 (H ≥ 512 on a 2 MB L2), and under bf16 autocast at B·H ≥ 4096 where the level does not split
  by row (oneDNN), cuDNN on CUDA where it applies; native whenever torch traces (torch.compile, torch.export), so
  that a traced model holds one operator per level and no branch on the batch size.

Every engine gives the reference's outputs and gradients (float64 to 1e-10, float32 to 1e-5).

Cell variants (layer_norm, peepholes, coupled; recurrent_dropout and zoneout in training): the native
engine computes every one of the LSTM's and the GRU's, alone or together — compile-time flags of the
cell's unit, with layer norm's row passes and zoneout in the driver; zoneout's masks are drawn as the
reference engine draws them, so seeded runs agree. "auto" and "native" run a layer with variants in
force (``active_variants()``) there (``RecurrentLayer.select_engine``); "torch" refuses every variant in
force. A variant a cell's ``SPEC.native_variants`` does not list runs on the reference engine under
"auto", and "native" refuses it by name.
"""

from __future__ import annotations

import functools

import torch

from . import ops
from .fused import NativeEngine
from .reference import ReferenceEngine
from .torch_kernel import TorchEngine, unsupported
from .wavefront import training

ENGINES = ("auto", "native", "torch", "reference")

_REFERENCE = ReferenceEngine()
_NATIVE = NativeEngine()
_TORCH = TorchEngine()


# Where torch's oneDNN kernel runs a float32 LSTM on CPU (two or more threads) under "auto", measured against
# the native loops (2 threads, native / oneDNN, A/B in one process, min of 12 interleaved calls; BENCHMARKS.md):
# - inference where a unit-split part's W_hh (half of W_hh) fills a core's L2 (H >= 512 on a 2 MB L2), from
#   TORCH_LSTM_MIN_B rows: native (split by unit) 1.09 at (100, 8, 256, 512), 0.99 at B = 16, 1.06 at 32, 1.01 at 64,
#   0.93-0.99 at 128, but 0.70 at B = 4; with W_hh in L2 the native loops are the faster at every size measured:
#   0.93-0.98 at (100, 64, 256, 256) (five runs; 1.06-1.11 in an earlier build, before the per-thread workspace and the
#   two-slot C), 0.88-0.91 at (100, 128, 64, 128), 0.87-0.89 at (100, 128, 128, 256), 0.90-0.94 at (50, 256, 128, 256);
# - inference under bf16 autocast from TORCH_LSTM_BF16_MIN_BH: oneDNN's bf16 kernel is the faster one there, except
#   where a one-direction level splits by row (rnnlab::splits_rows): native / oneDNN bf16 0.84 at (100, 32, 64, 128)
#   (1.14 on one loop), 1.00 at (100, 64, 256, 256); at (50, 128, 256, 512) 1.17-1.34 even with the per-step products
#   on packed W_hh (csrc/brgemm.h). Training under bf16 autocast runs the native loops at every size since those
#   products: native / oneDNN bf16 (min, median of interleaved steps) 0.52-0.53 for the bidirectional LSTM at
#   (100, 32, 64, 128), 0.76-0.80 at (100, 64, 256, 256), 0.82-0.87 one-direction at (50, 128, 256, 512), 0.95-1.08
#   at (100, 16, 128, 256).
# Training runs the native loops at every size: with a level split by row (each half of the batch on a core of its
# own, csrc/split.h's run_rows) native / oneDNN measured 0.92 at (100, 32, 64, 128) and (100, 16, 128, 256), where
# oneDNN had been the faster (1.04-1.19), 0.66-0.83 at (100, 64, 64, 128), (100, 32, 128, 256) and 0.79 at
# (100, 64, 256, 256); 0.97-0.99 at (100, 8, 256, 512), which splits neither way.
# At one thread, at smaller sizes and for every other cell the native loops are faster.
TORCH_LSTM_MIN_B = 8
TORCH_LSTM_BF16_MIN_BH = 4096


@functools.cache
def _l2_bytes() -> int:
    """A core's L2 in bytes, as the operators' rules read it (1 MB without them)."""
    return torch.ops.rnnlab.l2_bytes() if ops.available() else 1 << 20


def _w_hh_fills_l2(layer) -> bool:
    """Whether half of a float32 LSTM level's W_hh (4H·H numbers), a unit-split part's, fills a core's L2."""
    H = layer.hidden_size
    return 4 * H * H * 4 // 2 >= _l2_bytes()


def _splits_rows(layer, x: torch.Tensor) -> bool:
    """Whether this one-direction layer's levels run split by row (csrc/split.h's run_rows) in this call."""
    if layer.num_directions != 1 or not ops.available():
        return False
    return torch.ops.rnnlab.splits_rows("lstm", x.shape[1], layer.hidden_size, training(layer, x))


def choose(layer, x: torch.Tensor, trace: bool):
    """The engine "auto" runs for this call: torch's fused kernel where it computes the same
    function and was measured faster — cuDNN on CUDA; oneDNN for float32 LSTMs on two or more CPU threads in
    inference from ``TORCH_LSTM_MIN_B`` rows where half of W_hh fills a core's L2, and in inference under bf16
    autocast from B·H = ``TORCH_LSTM_BF16_MIN_BH`` (unless its levels split by row) — else the native engine
    (training always, float32 and bf16)."""
    if unsupported(layer, trace) is not None:
        return _NATIVE
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return _NATIVE
    if x.is_cuda:
        return _TORCH
    projected = getattr(layer, "proj_size", 0) > 0  # oneDNN has no projection: torch runs its slower ATen loop
    lstm = layer.cell_class.SPEC.name == "lstm"
    if x.device.type == "cpu" and x.dtype == torch.float32 and lstm and not projected and torch.get_num_threads() >= 2:
        bh = x.shape[1] * layer.hidden_size
        if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16:
            if training(layer, x) or bh < TORCH_LSTM_BF16_MIN_BH or _splits_rows(layer, x):
                return _NATIVE
            return _TORCH
        if training(layer, x):
            return _NATIVE
        return _TORCH if x.shape[1] >= TORCH_LSTM_MIN_B and _w_hh_fills_l2(layer) else _NATIVE
    return _NATIVE


class AutoEngine:
    name = "auto"

    def path(self, layer, x: torch.Tensor, trace: bool = False) -> str:
        """Which code runs for this call: "native-cpp", "reference" (no compiled operators),
        "torch-onednn", "torch-aten" or "torch-cudnn"."""
        return choose(layer, x, trace).path(x, layer)

    def run(self, layer, x, hx, lengths, trace):
        return choose(layer, x, trace).run(layer, x, hx, lengths, trace)


_AUTO = AutoEngine()
_BY_NAME = {"auto": _AUTO, "native": _NATIVE, "torch": _TORCH, "reference": _REFERENCE}


def get_engine(name: str, layer, x):
    """The engine object that will run ``layer`` on ``x`` under the user's choice ``name``."""
    return _BY_NAME[name]
