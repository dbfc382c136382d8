"""The one recurrent layer every network shares: parameters, checks, and the call into an engine.

A layer is ``num_layers`` stacked levels of ``D`` directions (D = 2 when bidirectional). Level k,
direction d owns ``weight_ih_l{k}`` (G·H, X_k), ``weight_hh_l{k}`` (G·H, H), ``bias_l{k}`` (G·H)
(and ``bias_hn_l{k}`` (H) for the GRU with reset="after"), with suffix ``_reverse`` for d = 1 —
the cell's parameters under torch.nn's naming. X_0 = input_size, X_k = D·H above. A structural
variant's added parameters follow the same naming (``ln_ih_weight_l{k}``, ``weight_peep_l{k}_reverse``,
...; see :mod:`rnnlab.cells.variants`); ``extras(k, d)`` gathers them under the cell's names for
``equations``' ``extra``.

Everything that is not a cell's own arithmetic — stacking, directions, lengths, inter-layer dropout,
gate traces, PackedSequence, batch_first, unbatched input — lives here and in the engines' stacking
driver (:mod:`rnnlab.engine.stack`), written once for all cells.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .. import _checks
from ..cells import variants
from ..cells.base import RecurrentCell, Weights
from ..engine import ENGINES, get_engine, latency
from ..init import SCHEMES, init_projection, init_weights
from . import memory, packing
from .convert import layer_from_torch, layer_to_torch


class RecurrentLayer(nn.Module):
    """Base class of ``rnnlab.RNN``, ``rnnlab.LSTM`` and ``rnnlab.GRU``."""

    cell_class: type[RecurrentCell]
    # under CPU autocast, the dtype of ``out`` and ``h_n`` — torch.nn's for the same call (torch 2.13, padded
    # input): "autocast" (its dtype: torch.nn.RNN, torch.nn.LSTM), "input" (x's own dtype: torch.nn.GRU), or
    # None (left as the engine computed it: float32 from the native operators)
    AUTOCAST_OUTPUT: str | None = None
    _LOW = (torch.bfloat16, torch.float16)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        init: str = "default",
        engine: str = "auto",
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        learn_initial_state: bool = False,
        proj_size: int = 0,
        **options: Any,
    ):
        super().__init__()
        self.input_size = _checks.positive_int("input_size", input_size)
        self.hidden_size = _checks.positive_int("hidden_size", hidden_size)
        self.num_layers = _checks.positive_int("num_layers", num_layers)
        for name, flag in (("bias", bias), ("batch_first", batch_first), ("bidirectional", bidirectional),
                           ("learn_initial_state", learn_initial_state)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name}: expected a bool, got {type(flag).__name__} {flag!r}")
        self.batch_first = batch_first
        self.bidirectional = bidirectional
        self.learn_initial_state = learn_initial_state
        self.dropout = _checks.probability("dropout", dropout)
        self.init = _checks.choice("init", init, SCHEMES)
        self.engine = _checks.choice("engine", engine, self.engine_choices())
        self.options = options
        self.regularisers = variants.regularisers(recurrent_dropout, zoneout)
        self.proj_size = self._check_proj_size(proj_size)
        G, H, D, P = len(self.gates), self.hidden_size, self.num_directions, self.output_size
        with_bias_hn = bias and self._has_bias_hn()
        added = self.cell_class.added_parameters(H, **options)
        memory.guard_parameters(self.cell_class.SPEC.layer_parameters(self.input_size, H, self.num_layers,
                                                                      bidirectional, bias, options, self.proj_size))
        for k in range(self.num_layers):
            X = self.input_size if k == 0 else D * P
            for d in range(D):
                sfx = self._suffix(k, d)
                self.register_parameter("weight_ih" + sfx, nn.Parameter(torch.empty(G * H, X)))
                recurrent = nn.Parameter(torch.empty(G * H, P)) if self.cell_class.RECURRENT else None
                self.register_parameter("weight_hh" + sfx, recurrent)
                if self.proj_size:  # h_t = W_hr (o_t tanh(C_t))
                    self.register_parameter("weight_hr" + sfx, nn.Parameter(torch.empty(P, H)))
                self.register_parameter("bias" + sfx, nn.Parameter(torch.empty(G * H)) if bias else None)
                self.register_parameter("bias_hn" + sfx, nn.Parameter(torch.empty(H)) if with_bias_hn else None)
                for name, size in added.items():
                    self.register_parameter(name + sfx, nn.Parameter(torch.empty(size)))
        if learn_initial_state:  # h_0 (and C_0) of every level and direction, rows in h_n's order k·D + d
            for part, width in zip(self.cell_class.STATE, self.state_sizes):
                self.register_parameter("initial_" + part, nn.Parameter(torch.empty(self.num_layers * D, width)))
        self.bias = bias
        self.reset_parameters()

    def _check_proj_size(self, proj_size: Any) -> int:
        """0, or the LSTM's projection size P (0 < P < hidden_size, the plain cell: torch.nn.LSTM's rule)."""
        if isinstance(proj_size, bool) or not isinstance(proj_size, int) or proj_size < 0:
            raise ValueError(f"proj_size: expected an int >= 0, got {proj_size!r}")
        if proj_size == 0:
            return 0
        if "c" not in self.cell_class.STATE or not self.cell_class.RECURRENT:
            raise ValueError(f"proj_size: expected 0 for {type(self).__name__} (only the LSTM projects its h), got {proj_size}")
        if proj_size >= self.hidden_size:
            raise ValueError(f"proj_size: expected a value smaller than hidden_size = {self.hidden_size}, got {proj_size}")
        if self.variants():
            raise ValueError(f"proj_size: expected 0 with {variants.describe(self.variants())} (the projection runs on "
                             f"the plain LSTM), got {proj_size}")
        return proj_size

    # -- structure ------------------------------------------------------------------------
    @property
    def output_size(self) -> int:
        """The width of h (and of each direction's output): ``proj_size`` when the LSTM projects, else H."""
        return self.proj_size or self.hidden_size

    @property
    def state_sizes(self) -> tuple[int, ...]:
        """The width of each part of the carried state (``cell_class.STATE``): h is ``output_size``, C is H."""
        return tuple(self.output_size if part == "h" else self.hidden_size for part in self.cell_class.STATE)
    @classmethod
    def engine_choices(cls) -> tuple[str, ...]:
        """The values ``engine=`` accepts for this layer."""
        return ENGINES

    def select_engine(self, x: torch.Tensor):
        """The engine object that runs this call (see :mod:`rnnlab.engine`). While variants are in force
        — structural ones always, recurrent_dropout and zoneout in training only (at evaluation they
        are the plain update) — the layer runs on an engine that computes them: the native engine
        where its loops do (all of the LSTM's and GRU's today: "auto" and "native" run it), else the
        reference engine ("auto" picks it, "native" and "torch" refuse)."""
        in_force = self.active_variants()
        if in_force:
            if self.engine in ("auto", "native") and not self.cell_class.SPEC.not_native(in_force):
                return get_engine("native", self, x)
            if self.engine not in ("auto", "reference"):
                raise ValueError(
                    f"engine: {self.engine!r} cannot compute {type(self).__name__} with {variants.describe(in_force)} "
                    "(its kernels compute the plain cell); expected engine='auto' or 'reference', which run the variant's equations"
                )
            return get_engine("reference", self, x)
        return get_engine(self.engine, self, x)

    @property
    def gates(self) -> tuple[str, ...]:
        """The gate blocks of each level's fused rows (the cell's ``GATES``, or (f, g, o) for a coupled LSTM)."""
        return self.cell_class.gate_order(**self.options)

    def variants(self) -> dict[str, Any]:
        """The variant options that are on — structural (layer_norm, peepholes, coupled) and regularisers
        (recurrent_dropout, zoneout); empty for the plain layer. Code that computes the plain cell from a
        layer's weights refuses a layer where this is non-empty."""
        return {**{k: v for k, v in self.options.items() if k in variants.STRUCTURAL}, **self.regularisers}

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def mode(self) -> str:
        """The cell kind: "rnn", "lstm", "gru", "mingru" or "minlstm" (the cell's ``SPEC.name``)."""
        return self.cell_class.SPEC.name

    def _has_bias_hn(self) -> bool:
        return self.cell_class.SPEC.bias_hn(self.options)

    @staticmethod
    def _suffix(k: int, d: int) -> str:
        return f"_l{k}" + ("_reverse" if d == 1 else "")

    def weights(self, k: int, d: int) -> Weights:
        """The parameters of level k, direction d (0 forward, 1 reverse), as a cell's ``Weights``."""
        s = self._suffix(k, d)
        own = self._parameters  # read first (a batch-1 call reads these each time; Module.__getattr__ is slower)

        def get(name):
            t = own.get(name)  # else the attribute (a parametrization, a bias left out: None)
            return t if t is not None else getattr(self, name, None)

        return Weights(get("weight_ih" + s), get("weight_hh" + s), get("bias" + s), get("bias_hn" + s),
                       get("weight_hr" + s))

    def active_variants(self) -> dict[str, Any]:
        """The variants that change this call's function: structural ones always, recurrent_dropout and
        zoneout in training mode only. Engines that compute the plain cell refuse when this is non-empty."""
        if not self.options and not self.regularisers:  # the plain layer (read on every call)
            return {}
        return {k: v for k, v in self.variants().items() if k in variants.STRUCTURAL or self.training}

    def extras(self, k: int, d: int) -> dict[str, torch.Tensor]:
        """The added parameters of level k, direction d under the cell's names (``ln_ih_weight``, ...,
        ``weight_peep``), for ``equations``' ``extra``; empty for the plain layer."""
        s = self._suffix(k, d)
        return {name: getattr(self, name + s) for name in self.cell_class.added_parameters(self.hidden_size, **self.options)}

    def step_arguments(self, k: int, d: int, batch: int) -> dict[str, Any]:
        """The keyword arguments, beyond ``options``, that level k, direction d passes to ``equations`` at
        every step of one call: ``extra`` (its added parameters) and, in training with
        ``recurrent_dropout``, ``h_mask`` — the sequence's mask (batch, H), drawn here once per call."""
        step: dict[str, Any] = {}
        extra = self.extras(k, d)
        if extra:
            step["extra"] = extra
        p = self.regularisers.get("recurrent_dropout", 0.0)
        if p > 0.0 and self.training:
            step["h_mask"] = variants.recurrent_mask(p, batch, self.hidden_size, self.weight_ih_l0)
        return step

    def reset_parameters(self) -> None:
        for k in range(self.num_layers):
            for d in range(self.num_directions):
                w = self.weights(k, d)
                init_weights(self.gates, *w[:4], self.init, self.cell_class.GATE_BIAS)
                if w.weight_hr is not None:
                    init_projection(w.weight_hr, self.init, self.hidden_size)
                for name, p in self.extras(k, d).items():
                    variants.init_extra(name, p, self.init, self.hidden_size)
        if self.learn_initial_state:
            with torch.no_grad():
                for part in self.cell_class.STATE:
                    getattr(self, "initial_" + part).zero_()  # starts as the zero state, then learns

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0), ("bidirectional", False)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)!r}"
        s += "".join(f", {k}={v!r}" for k, v in {**self.options, **self.regularisers}.items())
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.learn_initial_state:
            s += ", learn_initial_state=True"
        if self.engine != "auto":
            s += f", engine={self.engine!r}"
        return s

    # -- the call ---------------------------------------------------------------------------
    def forward(self, x, hx=None, lengths=None, return_gates: bool = False):
        """Run the layer over a sequence.

        ``x``: (T, B, X), or (B, T, X) with ``batch_first``, or unbatched (T, X), or a
        PackedSequence. ``hx``: (D·num_layers, B, H) (LSTM: a tuple ``(h_0, c_0)``); when None,
        ``initial_state(B)``: zeros, or the learned ``initial_h`` (``initial_c``) with ``learn_initial_state``.
        ``lengths``: (B,) true lengths of padded sequences.

        Returns ``out, h_n`` — ``out`` (T, B, D·H) (or (B, T, D·H), or a PackedSequence when ``x``
        is one), ``h_n`` (D·num_layers, B, H), LSTM ``(h_n, c_n)`` — and with ``return_gates=True``
        also the gate traces: ``{"l0": {"f": (T, B, H), ...}, "l0_reverse": {...}, ...}``.
        """
        if lengths is None and not return_gates and not torch.is_grad_enabled():
            done = latency.forward(self, x, hx, memory.guard)  # a latency call in one native call, or None
            if done is not None:
                return done
        x, hx, cast = self._autocast(x, hx)
        packed = isinstance(x, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError("lengths: expected None when x is a PackedSequence (it carries its own lengths), got lengths too")
            _checks.matches_parameters("x", x.data, self.weight_ih_l0)
            xs, lengths = packing.unpack(x)
            unbatched = False
        else:
            xs, unbatched = self._check_input(x)
            if lengths is not None:
                if unbatched:
                    raise ValueError("lengths: expected None for unbatched input (T, X), which is one whole sequence; got lengths")
                lengths = _checks.lengths(lengths, xs.shape[1], xs.shape[0], xs.device)
        T, B = xs.shape[0], xs.shape[1]
        state = self._check_hx(hx, B, unbatched)
        memory.guard(self, T, B, xs.dtype, xs.device)
        out, state_n, traces = self.select_engine(xs).run(self, xs, state, lengths, return_gates)
        if packed:
            out = packing.repack(out, x)
        elif unbatched:
            out = out.squeeze(1)
            state_n = tuple(s.squeeze(1) for s in state_n)
        elif self.batch_first:
            out = out.transpose(0, 1)
        if traces is not None and unbatched:
            traces = {key: {n: v.squeeze(1) for n, v in tr.items()} for key, tr in traces.items()}
        if cast is not None:
            out = out.to(cast)  # a PackedSequence casts its data
            state_n = tuple(s.to(cast) for s in state_n)
        h_n = state_n if len(state_n) > 1 else state_n[0]
        if return_gates:
            return out, h_n, traces
        return out, h_n

    def _autocast(self, x: Any, hx: Any) -> tuple[Any, Any, torch.dtype | None]:
        """Under CPU autocast: x and hx given in bfloat16/float16 (say from an autocast nn.Linear) are cast up
        to the parameters' dtype (differentiably; the engines compute from there — the native operators in
        their bf16 mode under bfloat16 autocast), and the dtype out and h_n are returned in
        (``AUTOCAST_OUTPUT``). Outside autocast, on other devices, or for float64 parameters: unchanged, None."""
        ref = self.weight_ih_l0
        if ref.device.type != "cpu" or ref.dtype != torch.float32 or not torch.is_autocast_enabled("cpu"):
            return x, hx, None
        given = x.data.dtype if isinstance(x, (torch.Tensor, PackedSequence)) else None

        def up(t):
            low = isinstance(t, (torch.Tensor, PackedSequence)) and getattr(t, "data", t).dtype in self._LOW
            return t.to(ref.dtype) if low else t

        x = up(x)
        hx = tuple(up(t) for t in hx) if isinstance(hx, (tuple, list)) else up(hx)
        cast = {"autocast": torch.get_autocast_dtype("cpu"), "input": given}.get(self.AUTOCAST_OUTPUT)
        return x, hx, cast

    def _check_input(self, x: Any) -> tuple[torch.Tensor, bool]:
        """Returns x as (T, B, X) and whether it was unbatched."""
        x = _checks.tensor("x", x)
        layout = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
        if x.dim() not in (2, 3):
            raise ValueError(f"x: expected a 3-D tensor {layout} or 2-D (T, input_size), got shape {_checks.shape_str(x)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"x: expected last dimension input_size = {self.input_size}, got shape {_checks.shape_str(x)}")
        _checks.matches_parameters("x", x, self.weight_ih_l0)
        if x.dim() == 2:
            x = x.unsqueeze(1)
            unbatched = True
        else:
            unbatched = False
            if self.batch_first:
                x = x.transpose(0, 1)
        if x.shape[0] == 0:
            raise ValueError(f"x: expected at least one time step (T >= 1), got shape {_checks.shape_str(x)}")
        return x, unbatched

    def initial_state(self, batch: int) -> tuple[torch.Tensor, ...]:
        """The state a call starts from when ``hx`` is None: per part of the state (h; the LSTM's h and C)
        a (D·L, B, H) tensor — zeros, or with ``learn_initial_state=True`` the parameters ``initial_h``
        (``initial_c``) (D·L, H), one row per level and direction in h_n's order, broadcast over the batch
        (gradients reach them through the broadcast)."""
        L = self.num_directions * self.num_layers
        if self.learn_initial_state:
            return tuple(getattr(self, "initial_" + part).unsqueeze(1).expand(L, batch, width)
                         for part, width in zip(self.cell_class.STATE, self.state_sizes))
        ref = self.weight_ih_l0
        return tuple(torch.zeros(L, batch, width, dtype=ref.dtype, device=ref.device) for width in self.state_sizes)

    def _check_hx(self, hx: Any, batch: int, unbatched: bool) -> tuple[torch.Tensor, ...]:
        """Returns the initial state as a tuple of (D·L, B, H) tensors (h: (D·L, B, proj_size) when projected)."""
        L = self.num_directions * self.num_layers
        names = self.cell_class.STATE
        ref = self.weight_ih_l0
        if hx is None:
            return self.initial_state(batch)
        shapes = [f"({L}, {w})" if unbatched else f"({L}, {batch}, {w})" for w in self.state_sizes]
        want = shapes[0] if len(set(shapes)) == 1 else " and ".join(shapes)
        if len(names) == 1:
            if not isinstance(hx, torch.Tensor):
                raise TypeError(f"hx: expected a tensor of shape {want}, got {type(hx).__name__}")
            parts = (hx,)
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"hx: expected a tuple (h_0, c_0) of tensors of shape {want}, got {type(hx).__name__}")
            parts = tuple(hx)
        out = []
        for name, s, H in zip(names, parts, self.state_sizes):
            label = "hx" if len(names) == 1 else f"hx[{names.index(name)}] ({name}_0)"
            s = _checks.tensor(label, s)
            expected = (L, H) if unbatched else (L, batch, H)
            if tuple(s.shape) != expected:
                detail = " (batch differs from x)" if s.dim() == 3 and s.shape[1] != batch and s.shape[0] == L and s.shape[2] == H else ""
                shown = f"({', '.join(map(str, expected))})"
                raise ValueError(f"{label}: expected shape {shown}, got {_checks.shape_str(s)}{detail}")
            _checks.matches_parameters(label, s, ref)
            out.append(s.unsqueeze(1) if unbatched else s)
        return tuple(out)

    # -- torch interop ------------------------------------------------------------------------
    @classmethod
    def from_torch(cls, module: nn.Module, **kwargs):
        """Build the rnnlab layer computing exactly the function of a torch.nn RNN/LSTM/GRU."""
        return layer_from_torch(cls, module, **kwargs)

    def to_torch(self) -> nn.Module:
        """The torch.nn module computing exactly this layer's function (not for GRU reset="before")."""
        return layer_to_torch(self)
