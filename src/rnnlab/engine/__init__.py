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
  function (``choose``): native on CPU except LSTM inference on 2+ threads under bf16 autocast at B·H ≥ 4096 where
  the level does not split by row, and float32 inference of a bidirectional LSTM with H ≥ 512 (on a 2 MB L2) from 2
  to 127 rows (oneDNN), cuDNN on CUDA where it applies; native whenever torch traces (torch.compile, torch.export), so
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


# Where torch's oneDNN kernel runs an LSTM on CPU (two or more threads) under "auto", measured against the native
# loops (2 threads, native / oneDNN, A/B in one process, min of 8-12 interleaved calls; BENCHMARKS.md):
# - one-direction float32 inference: never, since the native loops pack a W_hh block larger than a core's L2 once
#   per call and compute the input projection in larger chunks there (csrc/blas.h's PackedB::wanted, driver.h's InputChunks).
#   native / oneDNN, min and median: 0.92 and 0.80 at (50, 8, 256, 512), 0.93 and 1.00 at (50, 32, 256, 512),
#   0.89-1.12 and 0.93-1.05 at (50, 128, 256, 512) over four A/Bs, 0.87 and 0.95 at (50, 64, 512, 512), 0.74-0.97
#   and 0.75-0.95 at H = 768, 0.64-0.79 and 0.51-0.80 at H = 1024 (B = 8, 32, 128). Before those two changes oneDNN
#   ran it from 8 rows where half of W_hh filled a core's L2 (native 0.99-1.09 at H = 512, 1.14-1.38 at H = 1024).
#   With W_hh in L2 the native loops were already the faster: 0.93-0.98 at (100, 64, 256, 256), 0.87-0.91 at (100, 128, 64-128, 128-256);
# - float32 inference of a bidirectional LSTM where half of W_hh fills a core's L2, below TORCH_LSTM_BIDIR_MAX_B rows
#   (the calls whose native levels run their directions in turn: rnnlab::directions_in_turn, from 2 rows). Run at
#   once, a core each, each core read its direction's whole W_hh from L3 every step, where oneDNN's reads half of
#   each. native / oneDNN (min and median,
#   interleaved): 1.31 and 1.27 at (50, 4, 256, 512), 1.33 and 1.32 at B = 8, 1.05-1.06 and 1.09-1.11 at B = 32,
#   0.95 and 1.19 at B = 64, 1.39 at (30, 32, 512, 1024); but 0.79 and 0.86 at B = 128, and level at B = 1
#   (1.03 and 0.98). With the directions run one after the other, each split by unit (ops.cpp's
#   directions_in_turn_pay): 1.00 and 0.99 at B = 4, 1.18 and 1.23 at B = 8, 1.14 and 1.10 at B = 32, 1.00 and 0.98 at
#   B = 64, 0.86 at B = 128, 1.04 and 0.94 at (30, 32, 512, 1024): closer, not yet ahead below 64 rows;
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
TORCH_LSTM_BIDIR_MAX_B = 128
TORCH_LSTM_BF16_MIN_BH = 4096


def _splits_rows(layer, x: torch.Tensor) -> bool:
    """Whether this one-direction layer's levels run split by row (csrc/split.h's run_rows) in this call."""
    if layer.num_directions != 1 or not ops.available():
        return False
    return torch.ops.rnnlab.splits_rows("lstm", x.shape[1], layer.hidden_size, training(layer, x))


def _directions_in_turn(layer, x: torch.Tensor) -> bool:
    """Whether this bidirectional layer's native levels would run their directions one after the other, each split by
    unit (ops.cpp's directions_in_turn_pay: float32 LSTM inference where half of W_hh fills a core's L2, 2+ rows)."""
    if layer.num_directions != 2 or not ops.available():
        return False
    return torch.ops.rnnlab.directions_in_turn("lstm", x.shape[1], layer.hidden_size, training(layer, x))


def choose(layer, x: torch.Tensor, trace: bool):
    """The engine "auto" runs for this call: torch's fused kernel where it computes the same
    function and was measured faster — cuDNN on CUDA; oneDNN for LSTMs on two or more CPU threads in inference under
    bf16 autocast from B·H = ``TORCH_LSTM_BF16_MIN_BH`` (unless its levels split by row), and in float32 inference of a
    bidirectional LSTM whose half W_hh fills a core's L2 (``_directions_in_turn``) below ``TORCH_LSTM_BIDIR_MAX_B``
    rows — else the native engine (one direction in float32 always, training always)."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return _NATIVE
    # torch's kernel only where it pays and computes this call's function (``unsupported`` last: the dearest test,
    # and a batch-1 call's fixed cost is what its user waits on)
    return _TORCH if _torch_pays(layer, x) and unsupported(layer, trace) is None else _NATIVE


def _torch_pays(layer, x: torch.Tensor) -> bool:
    """``choose``'s measured rules: whether torch's fused kernel is the faster one for this call."""
    if x.is_cuda:
        return True
    if layer.cell_class.SPEC.name != "lstm" or x.dtype != torch.float32 or not x.is_cpu:
        return False
    projected = getattr(layer, "proj_size", 0) > 0  # oneDNN has no projection: torch runs its slower ATen loop
    if not projected and torch.get_num_threads() >= 2:
        bh = x.shape[1] * layer.hidden_size
        if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16:
            return not (training(layer, x) or bh < TORCH_LSTM_BF16_MIN_BH or _splits_rows(layer, x))
        return _directions_in_turn(layer, x) and x.shape[1] < TORCH_LSTM_BIDIR_MAX_B
    return False


class AutoEngine:
    name = "auto"

    def path(self, layer, x=None, trace: bool = False) -> str:
        """Which code runs for this call: "native-cpp", "reference" (no compiled operators),
        "torch-onednn", "torch-aten" or "torch-cudnn". Takes ``(layer, x)``, or ``(x, layer)`` as the other
        engines' ``path(x, layer)`` does."""
        if isinstance(layer, torch.Tensor):
            layer, x = x, layer
        if layer is None or not isinstance(x, torch.Tensor):
            raise TypeError(f"path: expected a layer and an input tensor x, got {type(layer).__name__} and "
                            f"{type(x).__name__}")
        return choose(layer, x, trace).path(x, layer)

    def run(self, layer, x, hx, lengths, trace):
        return choose(layer, x, trace).run(layer, x, hx, lengths, trace)


_AUTO = AutoEngine()
_BY_NAME = {"auto": _AUTO, "native": _NATIVE, "torch": _TORCH, "reference": _REFERENCE}


def get_engine(name: str, layer, x):
    """The engine object that will run ``layer`` on ``x`` under the user's choice ``name``."""
    return _BY_NAME[name]
