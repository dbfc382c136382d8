"""The one cell abstraction every recurrent cell shares.

A cell owns its parameters in the seed's layout — one fused matrix per side, gate blocks
stacked in the order named by ``GATES`` — and a pure ``equations`` function that computes one
time step from them. The layers call the very same ``equations`` in their reference engine,
so a cell and a one-step layer can never disagree.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any

import torch
from torch import nn

from .. import _checks
from .._memory import guard_parameters
from ..init import SCHEMES, init_weights
from . import variants
from .spec import CellSpec
from .torch_layout import cell_from_torch, cell_to_torch
from .weights import Weights


class RecurrentCell(nn.Module, metaclass=ABCMeta):
    """Base class: parameters, initialisation, argument checks and torch conversion for one cell.

    Subclasses set ``SPEC`` (their :class:`~rnnlab.cells.spec.CellSpec`: gate order of the fused
    rows, the carried state, the traces returned with ``return_gates=True``, the default
    initialisation's non-zero gate biases, ...) and implement ``equations``; ``GATES``, ``STATE``,
    ``TRACES``, ``GATE_BIAS`` and ``RECURRENT`` are read from ``SPEC``.
    """

    SPEC: CellSpec
    GATES: tuple[str, ...]
    STATE: tuple[str, ...]
    TRACES: tuple[str, ...]
    GATE_BIAS: dict[str, float]
    RECURRENT: bool  # False: the gates see only x_t (no weight_hh)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        spec = getattr(cls, "SPEC", None)
        if spec is None:  # an abstract intermediate class
            return
        cls.GATES, cls.STATE, cls.TRACES = spec.gates, spec.state, spec.traces
        cls.GATE_BIAS, cls.RECURRENT = dict(spec.gate_bias), spec.recurrent

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, init: str = "default",
                 recurrent_dropout: float = 0.0, zoneout: float = 0.0):
        super().__init__()
        self.input_size = _checks.positive_int("input_size", input_size)
        self.hidden_size = _checks.positive_int("hidden_size", hidden_size)
        if not isinstance(bias, bool):
            raise TypeError(f"bias: expected a bool, got {type(bias).__name__} {bias!r}")
        self.init = _checks.choice("init", init, SCHEMES)
        self.regularisers = variants.regularisers(recurrent_dropout, zoneout)
        G, H, X = len(self.gate_order(**self.options())), self.hidden_size, self.input_size
        added = self.added_parameters(H, **self.options())
        guard_parameters(self.SPEC.parameters(X, H, bias, self.options()))
        self.weight_ih = nn.Parameter(torch.empty(G * H, X))
        self.weight_hh = nn.Parameter(torch.empty(G * H, H)) if self.RECURRENT else None
        self.bias = nn.Parameter(torch.empty(G * H)) if bias else None
        self.bias_hn = nn.Parameter(torch.empty(H)) if bias and self.has_bias_hn() else None
        for name, size in added.items():
            self.register_parameter(name, nn.Parameter(torch.empty(size)))
        self.reset_parameters()

    # -- things subclasses describe -------------------------------------------------------
    def options(self) -> dict[str, Any]:
        """Keyword options of ``equations`` (nonlinearity, reset, and the structural variants that are on)."""
        return {}

    @classmethod
    def gate_order(cls, **options) -> tuple[str, ...]:
        """The gate blocks of the fused rows under these options (``GATES`` unless a variant drops one)."""
        return cls.SPEC.gates_of(options)

    @classmethod
    def added_parameters(cls, hidden_size: int, **options) -> dict[str, int]:
        """Name -> length of the parameters a structural variant adds (see :mod:`rnnlab.cells.variants`)."""
        return cls.SPEC.added_parameters(hidden_size, options)

    def has_bias_hn(self) -> bool:
        return self.SPEC.bias_hn(self.options())

    @staticmethod
    @abstractmethod
    def equations(x_t, state, w: Weights, **options):
        """One time step: returns (new_state tuple, traces dict)."""

    # -- shared machinery -----------------------------------------------------------------
    def reset_parameters(self) -> None:
        init_weights(self.gate_order(**self.options()), self.weight_ih, self.weight_hh, self.bias, self.bias_hn,
                     self.init, self.GATE_BIAS)
        for name, p in self.extras().items():
            variants.init_extra(name, p, self.init, self.hidden_size)

    def weights(self) -> Weights:
        return Weights(self.weight_ih, self.weight_hh, self.bias, self.bias_hn)

    def extras(self) -> dict[str, torch.Tensor]:
        """The added parameters by name (empty for the plain cell): ``equations``' ``extra``."""
        return {name: getattr(self, name) for name in self.added_parameters(self.hidden_size, **self.options())}

    def variants(self) -> dict[str, Any]:
        """The variant options that are on: structural ones and regularisers (empty for the plain cell)."""
        return {**{k: v for k, v in self.options().items() if k in variants.STRUCTURAL}, **self.regularisers}

    def recurrent_mask(self, batch: int) -> torch.Tensor:
        """A recurrent dropout mask (batch, H) for one sequence: draw once, pass as ``h_mask`` at every step."""
        p = self.regularisers.get("recurrent_dropout", 0.0)
        if p == 0.0:
            raise ValueError("recurrent_mask: this cell has recurrent_dropout=0; expected a cell built with recurrent_dropout > 0")
        return variants.recurrent_mask(p, _checks.positive_int("batch", batch), self.hidden_size, self.weight_ih)

    def extra_repr(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in {**self.options(), **self.regularisers}.items())
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias is not None}{extra}"

    def _check_input(self, x_t: Any) -> tuple[torch.Tensor, bool]:
        x_t = _checks.tensor("x_t", x_t)
        if x_t.dim() not in (1, 2):
            raise ValueError(
                f"x_t: expected a 2-D tensor (batch, input_size) or 1-D (input_size,), got shape {_checks.shape_str(x_t)}"
            )
        if x_t.shape[-1] != self.input_size:
            raise ValueError(
                f"x_t: expected last dimension input_size = {self.input_size}, got shape {_checks.shape_str(x_t)}"
            )
        _checks.matches_parameters("x_t", x_t, self.weight_ih)
        unbatched = x_t.dim() == 1
        return (x_t.unsqueeze(0) if unbatched else x_t), unbatched

    def _check_state(self, state: Any, batch: int, unbatched: bool, ref: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Returns the state as a tuple of (B, H) tensors, zeros when state is None."""
        H = self.hidden_size
        if state is None:
            zeros = torch.zeros(batch, H, dtype=ref.dtype, device=ref.device)
            return tuple(zeros for _ in self.STATE)
        if len(self.STATE) == 1:
            if not isinstance(state, torch.Tensor):
                raise TypeError(f"state: expected a tensor h of shape {self._state_shape(batch, unbatched)}, got {type(state).__name__}")
            parts = (state,)
        else:
            if not isinstance(state, (tuple, list)) or len(state) != len(self.STATE):
                raise TypeError(
                    f"state: expected a tuple ({', '.join(self.STATE)}) (e.g. rnnlab.LSTMState), got {type(state).__name__}"
                )
            parts = tuple(state)
        want = (H,) if unbatched else (batch, H)
        out = []
        for name, s in zip(self.STATE, parts):
            s = _checks.tensor(f"state.{name}", s)
            if tuple(s.shape) != want:
                raise ValueError(
                    f"state.{name}: expected shape {self._state_shape(batch, unbatched)}, got {_checks.shape_str(s)}"
                )
            _checks.matches_parameters(f"state.{name}", s, self.weight_ih)
            out.append(s.unsqueeze(0) if unbatched else s)
        return tuple(out)

    def _step_arguments(self, h_mask: Any, batch: int, unbatched: bool) -> dict[str, Any]:
        """``equations``' ``extra`` (the added parameters) and ``h_mask`` (recurrent dropout, training only)."""
        step: dict[str, Any] = {}
        extra = self.extras()
        if extra:
            step["extra"] = extra
        p = self.regularisers.get("recurrent_dropout", 0.0)
        if h_mask is not None and p == 0.0:
            raise ValueError("h_mask: expected None for a cell without recurrent_dropout, got a mask")
        if p > 0.0 and self.training:
            want = (self.hidden_size,) if unbatched else (batch, self.hidden_size)
            if h_mask is None:
                raise ValueError(f"h_mask: a cell with recurrent_dropout={p} in training needs the sequence's mask "
                                 f"{want}: draw it once per sequence with cell.recurrent_mask(batch) and pass it at every step; got None")
            h_mask = _checks.tensor("h_mask", h_mask)
            if tuple(h_mask.shape) != want:
                raise ValueError(f"h_mask: expected shape {want}, got {_checks.shape_str(h_mask)}")
            step["h_mask"] = h_mask.unsqueeze(0) if unbatched else h_mask
        return step

    def _state_shape(self, batch: int, unbatched: bool) -> str:
        return f"({self.hidden_size},)" if unbatched else f"({batch}, {self.hidden_size})"

    def _pack_state(self, state: tuple[torch.Tensor, ...]):
        """How the state is returned to the user: a tensor, or a named tuple for LSTM."""
        return state[0]

    @classmethod
    def from_torch(cls, module: nn.Module, **kwargs):
        """Build the cell computing exactly the function of a torch.nn RNNCell/LSTMCell/GRUCell."""
        return cell_from_torch(cls, module, **kwargs)

    def to_torch(self) -> nn.Module:
        """The torch.nn cell computing exactly this cell's function (not for GRU reset="before")."""
        return cell_to_torch(self)

    def forward(self, x_t: torch.Tensor, state=None, return_gates: bool = False, *, h_mask: torch.Tensor | None = None):
        """One step. ``x_t`` (B, X) or (X,); returns ``h, state`` (and the gate traces, each (B, H)).

        With ``recurrent_dropout`` in training, ``h_mask`` is the sequence's mask from
        ``recurrent_mask(B)`` (the same at every step); with ``zoneout`` in training, each unit of the
        new state keeps its previous value with probability p (traces are the cell's, before zoneout).
        """
        x, unbatched = self._check_input(x_t)
        st = self._check_state(state, x.shape[0], unbatched, x)
        step = self._step_arguments(h_mask, x.shape[0], unbatched)
        new_state, traces = self.equations(x, st, self.weights(), **self.options(), **step)
        if self.training and "zoneout" in self.regularisers:
            new_state = variants.zoneout(self.regularisers["zoneout"], st, new_state)
        if unbatched:
            new_state = tuple(s.squeeze(0) for s in new_state)
            traces = {k: v.squeeze(0) for k, v in traces.items()}
        packed = self._pack_state(new_state)
        if return_gates:
            return new_state[0], packed, traces
        return new_state[0], packed
