"""One description of each cell: the record every tier reads instead of parsing class names.

A cell class carries its ``CellSpec`` as ``SPEC``; ``SPECS`` holds them by name, in the seed's
order (rnn, lstm, gru, then minGRU and minLSTM). What a spec says, and who reads it:

* ``name``, ``gates`` (the fused rows' gate order), ``state``, ``traces``, ``gate_bias``,
  ``recurrent`` — the cell itself, its layers' ``mode``, ``GATES`` and ``STATE``;
* ``kernel(options)`` and ``native_variants`` — the native engine: which compiled kernel computes
  the cell under these options, and which variants it computes;
* ``gate_order``, ``added_parameters``, ``bias_hn`` and the closed-form ``parameters`` — allocation,
  the memory guard and :func:`rnnlab.analysis.closed_form_parameters`;
* ``torch`` (``TorchLayout``), ``onnx`` (``OnnxLayout``) and ``stream`` — the torch.nn mapping
  (conversions, the torch engine), the ONNX mapping (export) and the streamer's fused step;
* ``memory`` — the activations one training step keeps per unit, for the memory guard.

``options`` is always the dict a cell's ``options()`` or a layer's ``options`` returns:
``nonlinearity`` (RNN), ``reset`` (GRU) and the structural variants that are on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple

from torch import nn

from .variants import PEEPHOLE_GATES

Options = Mapping[str, Any]

# the native engine's kernels: every cell's options select exactly one
KERNELS = ("rnn_tanh", "rnn_relu", "lstm", "gru_before", "gru_after", "linear")


class Memory(NamedTuple):
    """Activations one training step keeps per level and direction, in units of (B, H): ``per_step``
    for the plain cell (gates, states and output), and what ``layer_norm`` and ``zoneout`` add."""

    per_step: int
    layer_norm: int = 0
    zoneout: int = 0


@dataclass(frozen=True)
class TorchLayout:
    """The cell in torch.nn's layout (see :mod:`rnnlab.cells.torch_layout`).

    ``gates``: torch's gate order, in the seed's gate names; ``negated``: gates whose rows and bias
    change sign (torch's GRU z weighs h_{t-1}, the seed's weighs the candidate); ``separate_bias``:
    the gate whose recurrent bias stays apart (the GRU's b_hn, inside r ⊙ (W_hn h + b_hn));
    ``layer``/``cell``: torch.nn's module classes; ``op(options)``: the name of torch's fused
    operator (``torch._VF.<op>`` over a sequence, ``torch.<op>_cell`` for one step), None where torch
    has none (then ``no_kernel`` and ``no_module`` say why, for the errors); ``options(module)``: the
    rnnlab options a torch module computes; ``arguments(options)``: torch's constructor keywords.
    """

    gates: tuple[str, ...]
    layer: type[nn.Module]
    cell: type[nn.Module]
    op: Callable[[Options], str | None]
    options: Callable[[nn.Module], dict[str, Any]] = lambda module: {}
    arguments: Callable[[Options], dict[str, Any]] = lambda options: {}
    negated: tuple[str, ...] = ()
    separate_bias: str | None = None
    no_kernel: str = ""
    no_module: str = ""


@dataclass(frozen=True)
class OnnxLayout:
    """The cell as ONNX's ``RNN``/``LSTM``/``GRU`` operator (see :mod:`rnnlab.export.onnx_layout`).

    ``op``: the operator; ``gates``: its gate order in the seed's names (ONNX's ``iofc`` is the
    LSTM's (i, o, f, g), its ``zrh`` the GRU's (z, r, n)); ``negated`` and ``separate_bias`` as for
    torch (``separate_bias`` goes to ``Rb``); ``peepholes``: the rows of ONNX's ``P`` input;
    ``complement``: gate -> gate it is derived from as 1 − that gate when a variant drops it (the
    coupled LSTM: ONNX's ``input_forget`` takes i from the seed's f rows, negated);
    ``attributes(options, directions)``: the node's attributes beyond hidden_size and direction.
    """

    op: str
    gates: tuple[str, ...]
    attributes: Callable[[Options, int], dict[str, Any]] = lambda options, directions: {}
    negated: tuple[str, ...] = ()
    separate_bias: str | None = None
    peepholes: tuple[str, ...] = ()
    complement: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CellSpec:
    """Everything about one cell that is not its equations (those are the class's ``equations``)."""

    name: str
    gates: tuple[str, ...]
    state: tuple[str, ...]
    traces: tuple[str, ...]
    kernel: Callable[[Options], str]
    memory: Memory
    kernels: Mapping[str, Options] = field(default_factory=dict)  # each kernel the cell runs on -> options selecting it
    gate_bias: Mapping[str, float] = field(default_factory=dict)
    recurrent: bool = True  # False: the gates see only x_t (no weight_hh)
    structural: tuple[str, ...] = ()  # the structural variants the cell takes
    native_variants: tuple[str, ...] = ()  # the variants the native engine computes
    gate_order: Callable[[Options], tuple[str, ...]] | None = None  # None: always ``gates``
    added_parameters: Callable[[int, Options], dict[str, int]] = lambda hidden_size, options: {}
    bias_hn: Callable[[Options], bool] = lambda options: False
    torch: TorchLayout | None = None
    onnx: OnnxLayout | None = None
    stream: Callable[[Options], str | None] = lambda options: None  # the streamer's fused step, None: equations

    def gates_of(self, options: Options) -> tuple[str, ...]:
        """The fused rows' gate blocks under these options (``gates`` unless a variant drops one)."""
        return self.gates if self.gate_order is None else self.gate_order(options)

    def not_native(self, variants: Mapping[str, Any]) -> dict[str, Any]:
        """The variants among ``variants`` (name -> value) that the native engine does not compute."""
        return {k: v for k, v in variants.items() if k not in self.native_variants}

    def parameters(self, input_size: int, hidden_size: int, bias: bool, options: Options, proj_size: int = 0) -> int:
        """The closed form for one level and direction: ``G·(H(X + H) + H)`` — without the ``H·H`` term
        for cells with no recurrent weights, without the ``+H`` per gate when there is no bias — and
        ``+H`` for ``b_hn``; layer norm adds ``4·G·H`` (gain and bias of LN(W_x x) and of LN(W_h h)) and
        ``2H`` more for a cell state (LN(C_t)); peepholes add H per gate that has one. A projection
        (``proj_size`` P > 0: h_t = W_hr (o_t tanh(C_t))) makes it ``G·(H(X + P) + H) + P·H``."""
        G, H, X = len(self.gates_of(options)), hidden_size, input_size
        seen = proj_size or H  # the width of the h that W_hh reads
        total = G * (H * (X + (seen if self.recurrent else 0)) + (H if bias else 0)) + proj_size * H
        if bias and self.bias_hn(options):
            total += H
        if options.get("layer_norm"):
            total += 4 * G * H + (2 * H if "c" in self.state else 0)
        if options.get("peepholes"):
            total += sum(g in self.gates_of(options) for g in PEEPHOLE_GATES) * H
        return total

    def layer_parameters(self, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool, bias: bool,
                         options: Options, proj_size: int = 0) -> int:
        """``parameters`` summed over levels and directions; level 0 sees X, the levels above D·H (D·P with a
        projection)."""
        D = 2 if bidirectional else 1
        out = proj_size or hidden_size
        return sum(D * self.parameters(input_size if k == 0 else D * out, hidden_size, bias, options, proj_size)
                   for k in range(num_layers))


SPECS: dict[str, CellSpec] = {}  # by name, filled by rnnlab.cells in the seed's order


def register(spec: CellSpec) -> CellSpec:
    """Add ``spec`` to ``SPECS`` (a name may be registered once)."""
    if spec.name in SPECS and SPECS[spec.name] is not spec:
        raise ValueError(f"spec: a cell named {spec.name!r} is already registered")
    SPECS[spec.name] = spec
    return spec
