"""Streaming inference: feed a model one step or one chunk at a time; the state is kept between calls.

Whatever the split into steps and chunks, the outputs are those of one call on the whole
sequence: ``feed`` runs the layer's engine on the chunk from the kept state, ``step`` runs every
level's cell once. A step is the latency path — under ``torch.inference_mode()``, argument checks
only when the input's shape changes, and each level one call into a fused step: on CPU with the compiled
operators, ``rnnlab::cell_step`` (the native engine's own cell pass, ``csrc/cells/*.h``, on transposed
weights made once); elsewhere the one the cell's ``SPEC.stream`` names: torch's fused cell kernel
(``torch.lstm_cell``, ``torch.gru_cell``, ``torch.rnn_tanh_cell``/``rnn_relu_cell``) on weights converted
to torch's layout once (``cells/torch_layout.py``), or for the seed's GRU (reset="before"), which torch has
no kernel for, the equations with fused GEMMs — or with ``fused=False`` the cell's own ``equations``.
``Streamer.paths`` names each level's. Structural variants (layer_norm, peepholes, coupled), which torch has no
kernel for, always step through their equations; regularisers (recurrent_dropout, zoneout) are off,
as at evaluation.

A bidirectional layer cannot be streamed: its reverse direction starts at the sequence's end.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import torch
from torch import nn

from .. import _checks
from ..cells.torch_layout import weights_to_torch
from ..cells.variants import STRUCTURAL
from ..engine import ops
from ..layers.base import RecurrentLayer

Kernel = Callable[[torch.Tensor, tuple], tuple]


def _parts(model: Any, before, after) -> tuple[RecurrentLayer, Any, Any]:
    """(layer, before, after) of the models a Streamer accepts."""
    if isinstance(model, RecurrentLayer):
        return model, before, after
    layer = getattr(model, "rnn", None)
    if isinstance(model, nn.Module) and isinstance(layer, RecurrentLayer):
        before = getattr(model, "input_map", None) if before is None else before
        after = getattr(model, "head", None) if after is None else after
        return layer, before, after
    raise TypeError(
        "model: expected an rnnlab layer, or a model whose rnnlab layer is its attribute `rnn`, with optional "
        f"per-step modules `input_map` and `head` (as rnnlab.models.SequenceModel); got {type(model).__name__}. "
        "For another model, pass its layer with before= and after= (modules applied to each step)"
    )


def _gru_before_kernel(w) -> Kernel:
    """The seed's GRU (reset="before"), which torch has no kernel for: the cell's equations with the
    input side of all three gates in one GEMM and the recurrent side of z and r in another."""
    H = w.hidden_size
    w_ih_t, w_zr_t, w_hn_t = w.weight_ih.T, w.weight_hh[: 2 * H].T, w.weight_hh[2 * H:].T
    b = w.bias

    def step(x, s):
        (h,) = s
        a = x @ w_ih_t if b is None else torch.addmm(b, x, w_ih_t)  # W_x· x_t + b_·, gates (z, r, n)
        z, r = torch.sigmoid(a[:, : 2 * H] + h @ w_zr_t).chunk(2, 1)  # z_t, r_t
        n = torch.tanh(a[:, 2 * H:] + (r * h) @ w_hn_t)  # h̃_t = tanh(W_h · [r_t * h_{t-1}, x_t] + b_h)
        return (torch.lerp(h, n, z),)  # h_t = (1 - z_t) * h_{t-1} + z_t * h̃_t

    return step


_OWN_STEPS = {"gru_before": _gru_before_kernel}  # fused steps of cells torch has no kernel for


NATIVE_CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru_before", "gru_after")  # what rnnlab::cell_step computes
# a level hands rnnlab::cell_step column blocks from a W_hh of this many numbers (2^18: 1 MB in float32, a core's L2
# on the AMD EPYC host and half of it on the Intel one; smaller levels stay in cache, where small_gemm.h's kernel runs
# the transposed layout)
BLOCKS_FROM = 1 << 18


def column_blocks(w: torch.Tensor) -> torch.Tensor:
    """``w`` (N, K), a float32 weight as torch stores it, in the layout ``rnnlab::cell_step`` reads one row at a
    time: its transpose in blocks of 64 columns, (⌈N/64⌉, K, 64) (``rnnlab::column_blocks``,
    ``csrc/small_gemm.h``'s block_gemv)."""
    return torch.ops.rnnlab.column_blocks(w)


def _native_kernel(layer, w) -> Kernel | None:
    """One level's step through ``rnnlab::cell_step``: the cell's own compiled forward pass (``csrc/cells/*.h``)
    on copies of the weights made here, once per load — the native engine's arithmetic with none of a layer
    call's per-call set-up. A large float32 level (W_hh of ``BLOCKS_FROM`` numbers or more) hands over its
    weights in column blocks (``column_blocks``), which the operator reads one row at a time at the rate of a
    plain read of them, each step in the order opposite to the step before (the blocks read last are still in
    the core's cache); the transposed copies, for more rows and for small levels, are made at the first call that
    wants them. None where it does not run: no compiled operators, not on the CPU, not float32/float64."""
    cell = layer.cell_class.SPEC.kernel(layer.options)
    if (not ops.available() or cell not in NATIVE_CELLS or w.weight_ih.device.type != "cpu"
            or w.weight_ih.dtype not in (torch.float32, torch.float64)):
        return None
    with torch.no_grad():
        w_ih, w_hh = w.weight_ih.detach(), w.weight_hh.detach()
        b, b_hn = (None if t is None else t.detach().clone() for t in (w.bias, w.bias_hn))
        blocks = w_hh.dtype == torch.float32 and w_hh.numel() >= BLOCKS_FROM
        w_ih_blocks, w_hh_blocks = (column_blocks(w_ih), column_blocks(w_hh)) if blocks else (None, None)
        transposed: list[torch.Tensor] = []
        if not blocks:
            transposed = [w_ih.t().contiguous(), w_hh.t().contiguous()]
    op = torch.ops.rnnlab.cell_step.default
    flip = [False]

    def weights(x):
        if blocks and x.shape[0] == 1:
            flip[0] = not flip[0]
            return None, None, flip[0]
        if not transposed:  # (a large level's first call with more than one row)
            with torch.no_grad():
                transposed.extend((w_ih.t().contiguous(), w_hh.t().contiguous()))
        return transposed[0], transposed[1], False

    def step(x, s):
        w_ih_t, w_hh_t, backwards = weights(x)
        h, c = op(x, s[0], s[1] if cell == "lstm" else None, w_ih_t, w_hh_t, b, b_hn, cell=cell,
                  w_ih_blocks=w_ih_blocks, w_hh_blocks=w_hh_blocks, backwards=backwards)
        return (h, c) if cell == "lstm" else (h,)
    return step


def _fused_kernel(layer, w) -> tuple[Kernel, str] | None:
    """One level's step through a fused step: ``rnnlab::cell_step`` (``_native_kernel``) where it runs, else
    the one the cell's ``SPEC.stream`` names — torch's fused cell kernel ``torch.<name>`` on weights in
    torch's layout, or one of ``_OWN_STEPS``; None for cells with neither (MinGRU, MinLSTM), for structural
    variants (layer_norm, peepholes, coupled) and for the LSTM's projection, which step through their
    equations. Returns the step and its name (``Streamer.paths``)."""
    spec, options = layer.cell_class.SPEC, layer.options
    name = spec.stream(options)
    if name is None or any(k in STRUCTURAL for k in options) or w.weight_hr is not None:
        return None  # (torch.lstm_cell has no projection: an LSTM with proj_size steps through its equations)
    native = _native_kernel(layer, w)
    if native is not None:
        return native, "rnnlab::cell_step"
    if name in _OWN_STEPS:
        return _OWN_STEPS[name](w), "torch GEMMs (" + name + ")"
    with torch.no_grad():
        w_ih, w_hh, b_ih, b_hh = (None if t is None else t.detach().clone() for t in weights_to_torch(spec, w))
    op = getattr(torch, name)
    if len(spec.state) == 2:  # torch.lstm_cell takes and returns (h, c)
        return (lambda x, s: op(x, s, w_ih, w_hh, b_ih, b_hh)), "torch." + name
    # torch's GRU kernel: h = (1 - z_t) * n + z_t * h_prev with z_t = 1 - z_seed (the negated z rows)
    return (lambda x, s: (op(x, s[0], w_ih, w_hh, b_ih, b_hh),)), "torch." + name


def _equations_kernel(layer, w, extra: dict) -> Kernel:
    equations, options = layer.cell_class.equations, layer.options
    step = {"extra": extra} if extra else {}
    return lambda x, s: equations(x, s, w, **options, **step)[0]


class Streamer:
    """Run ``model`` incrementally: ``step(x_t)`` for one time step, ``feed(chunk)`` for several.

    ``model`` is an rnnlab layer (any cell, stacked; not bidirectional), or a model whose rnnlab
    layer is its attribute ``rnn`` with optional ``input_map`` (applied to the input) and
    ``head`` (applied to the top level's output at every step), as ``rnnlab.models.SequenceModel``;
    ``before``/``after`` give or override those two. They must act on each time step separately
    (Embedding, Linear, activations, ...). For a head that reads only the last step, the output of
    step t is the head's answer for the sequence read up to t.

    Shapes (B the batch, X the layer's input size, H its hidden size, K the head's output):

    * ``step(x_t)``: ``x_t`` — (B, X), or what ``before`` maps to (B, X) (e.g. (B,) tokens);
      returns (B, K) (``after``) or the top level's h_t (B, H).
    * ``feed(chunk)``: ``chunk`` — the layer's layout, (T, B, X) or with ``batch_first`` (B, T, X)
      (or what ``before`` maps to it); returns (T, B, ·) / (B, T, ·).
    * ``state``: the layer's ``h_n`` (L, B, H) — LSTM ``(h_n, c_n)`` — or None before the first call;
      assign one (e.g. from a full-sequence call) to continue from it.
    * ``reset(batch_indices=None)``: start the given sequences (all when None) afresh from the layer's
      initial state (zeros, or its learned ``initial_h``/``initial_c`` with ``learn_initial_state=True``).

    The batch is set by the first call (or ``state``); until ``reset()`` every call must keep it.
    Outputs are computed under ``torch.inference_mode()`` and are inference tensors. The layer's
    weights are read at the first step and again whenever they change in place.
    """

    def __init__(self, model: nn.Module, *, before: Callable | None = None, after: Callable | None = None,
                 fused: bool = True):
        layer, before, after = _parts(model, before, after)
        if layer.bidirectional:
            raise ValueError("model: expected a unidirectional layer; a bidirectional layer's reverse direction starts "
                             "at the end of the sequence, so it cannot be streamed (bidirectional=True)")
        for name, fn in (("before", before), ("after", after)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name}: expected a module or callable applied to each step, got {type(fn).__name__}")
        if not isinstance(fused, bool):
            raise TypeError(f"fused: expected a bool, got {type(fused).__name__} {fused!r}")
        self.layer, self.before, self.after, self.fused = layer, before, after, fused
        self._levels: list[tuple[torch.Tensor, ...]] | None = None  # per level, the state parts (B, H)
        self._shape: tuple[int, ...] | None = None  # the step input's shape last checked
        self._kernels: list[Kernel] = []
        self._paths: list[str] = []
        self._versions: tuple[int, ...] | None = None

    # -- state --------------------------------------------------------------------------------
    @property
    def paths(self) -> list[str]:
        """Per level, the step ``step()`` runs: "rnnlab::cell_step" (the native engine's compiled cell, the
        plain cells on CPU), "torch.lstm_cell" / "torch.gru_cell" / "torch.rnn_tanh_cell" (elsewhere),
        "torch GEMMs (gru_before)" (the seed's GRU there) or "equations" (variants, fused=False)."""
        if self._versions is None or self._weights_version() != self._versions:
            self._load_kernels()
        return list(self._paths)

    @property
    def batch_size(self) -> int | None:
        return None if self._levels is None else self._levels[0][0].shape[0]

    @property
    def state(self):
        """The layer's state after the last call: ``h_n`` (L, B, H), LSTM ``(h_n, c_n)``; None before any."""
        if self._levels is None:
            return None
        parts = tuple(torch.stack([lv[i] for lv in self._levels]).clone() for i in range(len(self._levels[0])))
        return parts if len(parts) > 1 else parts[0]

    @state.setter
    def state(self, hx) -> None:
        if hx is None:
            self.reset()
            return
        first = hx[0] if isinstance(hx, (tuple, list)) else hx
        first = _checks.tensor("state", first)
        if first.dim() != 3:
            raise ValueError(f"state: expected shape ({self.layer.num_layers}, B, {self.layer.output_size}), "
                             f"got {_checks.shape_str(first)}")
        try:
            parts = self.layer._check_hx(hx, first.shape[1], False)
        except (TypeError, ValueError) as e:
            raise type(e)(f"state: {e}") from None
        self._levels = [tuple(p[k].detach().clone() for p in parts) for k in range(self.layer.num_layers)]
        self._shape = None

    def reset(self, batch_indices=None) -> None:
        """Restart the sequences ``batch_indices`` (ints in [0, B)) from the layer's initial state (zeros, or
        the learned one); all of them when None, which also frees the batch size."""
        if batch_indices is None:
            self._levels, self._shape = None, None
            return
        if isinstance(batch_indices, numbers.Integral) and not isinstance(batch_indices, bool):
            batch_indices = [batch_indices]
        if isinstance(batch_indices, torch.Tensor):
            if batch_indices.is_floating_point() or batch_indices.dtype == torch.bool or batch_indices.dim() > 1:
                raise TypeError(f"batch_indices: expected a 1-D integer tensor, got dtype {batch_indices.dtype}, "
                                f"shape {_checks.shape_str(batch_indices)}")
            idx = [int(i) for i in batch_indices.reshape(-1)]
        elif isinstance(batch_indices, (list, tuple)) and all(
                isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in batch_indices):
            idx = [int(i) for i in batch_indices]
        else:
            raise TypeError(f"batch_indices: expected None, an int, a list of ints or an integer tensor, got {batch_indices!r}")
        if self._levels is None:
            return  # nothing streamed yet: every sequence starts from the initial state anyway
        B = self.batch_size
        bad = [i for i in idx if not 0 <= i < B]
        if bad:
            raise ValueError(f"batch_indices: expected indices in [0, {B}) (the streamed batch), got {bad}")
        rows = torch.tensor(idx, dtype=torch.long, device=self._levels[0][0].device)
        with torch.inference_mode():
            start = self._initial(len(idx))  # per level, the state parts (len(idx), H)
            self._levels = [tuple(s.index_copy(0, rows, s0) for s, s0 in zip(lv, lv0)) for lv, lv0 in zip(self._levels, start)]

    # -- checks, run when something changed ------------------------------------------------------
    def _check_training(self) -> None:
        if self.layer.training and self.layer.dropout > 0:
            raise ValueError(f"model: in training mode with dropout = {self.layer.dropout} between levels; streaming "
                             "computes inference, so call model.eval() first")
        if self.layer.training and self.layer.regularisers:
            raise ValueError(f"model: in training mode with {', '.join(f'{k}={v}' for k, v in self.layer.regularisers.items())}; "
                             "streaming computes inference (the plain update), so call model.eval() first")

    def _check_batch(self, name: str, x: torch.Tensor, B: int) -> None:
        if self._levels is not None and B != self.batch_size:
            raise ValueError(f"{name}: expected batch {self.batch_size} (the batch being streamed), got {B} in shape "
                             f"{_checks.shape_str(x)}; call reset() to start a new batch")

    def _check_step(self, x: torch.Tensor) -> None:
        X = self.layer.input_size
        x = _checks.tensor("x_t", x)
        if x.dim() != 2 or x.shape[1] != X:
            mapped = " (after before=)" if self.before is not None else ""
            raise ValueError(f"x_t: expected shape (B, {X}){mapped} — one time step of a batch — got {_checks.shape_str(x)}")
        _checks.matches_parameters("x_t", x, self.layer.weight_ih_l0)
        self._check_batch("x_t", x, x.shape[0])
        self._check_training()
        self._shape = tuple(x.shape)

    def _weights_version(self) -> tuple[int, ...]:
        layer = self.layer  # its parameters are its own (no submodules): read them without parameters()' walk
        params = layer._parameters.values() if not layer._modules else layer.parameters()
        return tuple(p._version for p in params if p is not None)

    def _load_kernels(self) -> None:
        layer = self.layer
        kernels = []
        for k in range(layer.num_layers):
            w = layer.weights(k, 0)
            w = type(w)(*(None if t is None else t.detach() for t in w))
            extra = {n: t.detach() for n, t in layer.extras(k, 0).items()}
            fused = _fused_kernel(layer, w) if self.fused else None
            kernels.append(fused or (_equations_kernel(layer, w, extra), "equations"))
        self._kernels = [kernel for kernel, _ in kernels]
        self._paths = [path for _, path in kernels]
        self._versions = self._weights_version()

    def _initial(self, batch: int) -> list[tuple[torch.Tensor, ...]]:
        """Per level, the parts of the layer's initial state for ``batch`` sequences, each (batch, H)."""
        parts = tuple(p.detach() for p in self.layer.initial_state(batch))  # (L, batch, H) each
        return [tuple(p[k] for p in parts) for k in range(self.layer.num_layers)]

    # -- the calls ---------------------------------------------------------------------------------
    def step(self, x_t):
        """One time step for the whole batch. Returns ``after(h_t)`` (or h_t of the top level)."""
        if torch.is_inference_mode_enabled():  # (entering the mode again costs a µs or two a step)
            return self._step(x_t)
        with torch.inference_mode():
            return self._step(x_t)

    def _step(self, x_t):
        x = x_t if self.before is None else self.before(x_t)
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != self._shape or self._levels is None:
            self._check_step(x)
        if self._weights_version() != self._versions:
            self._load_kernels()
        levels = self._levels if self._levels is not None else self._initial(x.shape[0])
        new = []
        for kernel, state in zip(self._kernels, levels):
            state = kernel(x, state)
            new.append(state)
            x = state[0]
        self._levels = new
        return x if self.after is None else self.after(x)

    def feed(self, chunk):
        """Several time steps at once, through the layer's engine. Returns the outputs of every step,
        in the layer's layout."""
        layer = self.layer
        with torch.inference_mode():
            x = chunk if self.before is None else self.before(chunk)
            x = _checks.tensor("chunk", x)
            if x.dim() != 3:
                layout = "(B, T, X)" if layer.batch_first else "(T, B, X)"
                raise ValueError(f"chunk: expected a 3-D tensor {layout} with X = {layer.input_size}, got shape "
                                 f"{_checks.shape_str(x)}; for one step use step()")
            self._check_batch("chunk", x, x.shape[0] if layer.batch_first else x.shape[1])
            self._check_training()
            out, h_n = layer(x, self.state)
            parts = h_n if isinstance(h_n, tuple) else (h_n,)
            self._levels = [tuple(p[k] for p in parts) for k in range(layer.num_layers)]
            return out if self.after is None else self.after(out)
