"""A torch.nn module's parameters, seen as the layer rnnlab's engines run.

The engines read a layer through a few attributes (``rnnlab.layers.RecurrentLayer``): its cell,
options, sizes, ``weights(k, d)`` in the seed's layout, ``step_arguments`` and ``active_variants``.
``TorchStack`` supplies them for parameters kept in torch.nn's layout, converting each level and
direction once per call, differentiably (``cells.torch_layout.weights_from_torch``): LSTM rows
(i, f, g, o) → (f, i, g, o); b_ih + b_hh summed per gate, except the GRU's b_hn, which stays apart;
the GRU's z rows and bias negated (torch's z weighs h_{t-1}, the seed's the candidate). Gradients
flow back through the conversion to the module's own parameters.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .. import _checks
from ..cells.base import RecurrentCell, Weights
from ..cells.torch_layout import weights_from_torch
from ..engine import ENGINES, choose, get_engine

TorchWeights = tuple  # torch.nn's (w_ih, w_hh, b_ih, b_hh, w_hr) of one level and direction; biases, w_hr may be None


class TorchStack:
    """The engines' view of ``levels[k][d]`` = torch.nn's (w_ih, w_hh, b_ih, b_hh): a plain stack (no
    variants) of ``cell_class`` with ``options``."""

    def __init__(self, cell_class: type[RecurrentCell], options: dict[str, Any], levels: Sequence[Sequence[TorchWeights]],
                 hidden_size: int, *, dropout: float, training: bool, engine: str, proj_size: int = 0):
        self.cell_class, self.options, self.proj_size = cell_class, options, proj_size
        self.num_layers, self.num_directions = len(levels), len(levels[0])
        self.bidirectional = self.num_directions == 2
        self.hidden_size, self.dropout, self.training, self.engine = hidden_size, dropout, training, engine
        self.bias = levels[0][0][2] is not None
        self.weight_ih_l0 = levels[0][0][0]
        self.regularisers: dict[str, float] = {}
        self._levels = levels
        self._converted: dict[tuple[int, int], Weights] = {}

    def weights(self, k: int, d: int) -> Weights:
        """Level k, direction d in the seed's layout, converted on first use in this call."""
        if (k, d) not in self._converted:
            self._converted[k, d] = weights_from_torch(self.cell_class.SPEC, *self._levels[k][d])
        return self._converted[k, d]

    def parameters(self):
        """torch.nn's parameter tensors of every level and direction, as a module's ``parameters()``."""
        return (t for level in self._levels for weights in level for t in weights if t is not None)

    def step_arguments(self, k: int, d: int, batch: int) -> dict[str, Any]:
        return {}  # no variant: no added parameters, no recurrent dropout mask

    def active_variants(self) -> dict[str, Any]:
        return {}

    def variants(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def _suffix(k: int, d: int) -> str:
        return f"_l{k}" + ("_reverse" if d == 1 else "")


def flat(module: torch.nn.Module, k: int, d: int) -> TorchWeights:
    """torch.nn's parameters of level k, direction d of a layer module (biases None without bias, ``weight_hr``
    None without a projection)."""
    sfx = f"_l{k}" + ("_reverse" if d == 1 else "")
    return tuple(getattr(module, name + sfx, None) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"))


def select(stack: TorchStack, x: torch.Tensor):
    """The engine that runs this call under the module's ``engine`` ("auto", "native", "torch" or
    "reference"), or None where that is torch's own kernel: the module then runs torch.nn's own
    ``forward`` on its own parameters (nothing to convert)."""
    name = _checks.choice("engine", stack.engine, ENGINES)
    engine = choose(stack, x, False) if name == "auto" else get_engine(name, stack, x)
    return None if engine.name == "torch" else engine


def same_kind(x: torch.Tensor, states: Sequence[torch.Tensor]) -> None:
    """The states must have the input's dtype and device: torch's kernels raise a RuntimeError otherwise,
    and so does this, before any engine runs."""
    for i, s in enumerate(states):
        if s.dtype != x.dtype or s.device != x.device:
            raise RuntimeError(f"hx[{i}]: expected the input's dtype and device ({x.dtype}, {x.device}), "
                               f"got ({s.dtype}, {s.device}); convert it with .to(input)")
