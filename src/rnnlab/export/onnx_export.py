"""``to_onnx``: rnnlab layers as ONNX's own RNN / LSTM / GRU operators, so runtimes use their fused kernels.

Two routes:

* a bare layer with no ``example_inputs`` is written directly with ``onnx.helper``
  (``onnx_graph.emit_layer``) — no torch exporter involved;
* any other ``nn.Module`` (a layer inside embeddings, linears, activations, ...) goes through torch.onnx's
  default exporter (``dynamo=True``): the model traces under torch.export to one
  ``rnnlab::recurrent_level`` node per level, which ``onnx_dynamo`` translates into the ONNX node; the
  rest of the model is exported by torch as usual.

The exported model is for inference: dropout between levels is off (torch exports in eval mode), and
so are recurrent_dropout and zoneout. LSTM peepholes and the coupled gate map to ONNX LSTM's ``P``
input and ``input_forget`` (``onnx_layout``); layer norm has no ONNX counterpart and is refused.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import traceback
import warnings
from typing import Any

import onnx
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .. import _checks
from ..layers.base import RecurrentLayer
from .onnx_dynamo import TRANSLATIONS
from .onnx_graph import layer_graph
from .onnx_layout import PROJECTION_REFUSED

OPSETS = range(14, 21)  # 14 is the first with today's RNN operators

def _export_forward(layer: RecurrentLayer):
    """The layer's forward while its model is exported: the same call, refusing what ONNX cannot express."""
    run = type(layer).forward

    def forward(x, hx=None, lengths=None, return_gates: bool = False):
        if isinstance(x, PackedSequence):
            raise TypeError("x: ONNX export takes padded input (T, B, X) with lengths=, got a PackedSequence; "
                            "pad it with torch.nn.utils.rnn.pad_packed_sequence and pass the lengths")
        if return_gates:
            raise ValueError("return_gates: ONNX's recurrent operators do not output gate traces; expected False")
        return run(layer, x, hx, lengths=lengths)

    return forward


def _check_onnx_layer(layer: RecurrentLayer) -> None:
    if layer.cell_class.SPEC.onnx is None:
        raise TypeError(f"model: {type(layer).__name__} has no ONNX operator (ONNX has RNN, LSTM and GRU); "
                        "expected rnnlab.RNN, rnnlab.LSTM or rnnlab.GRU layers")
    if layer.options.get("layer_norm"):
        raise ValueError(f"model: {type(layer).__name__} with layer_norm=True has no ONNX operator (ONNX's RNN, LSTM "
                         "and GRU have no layer normalisation); expected layer_norm=False (peepholes and coupled export as "
                         "ONNX LSTM's P input and input_forget; recurrent_dropout and zoneout are off at inference)")
    if getattr(layer, "proj_size", 0):
        raise ValueError(PROJECTION_REFUSED.format(who=type(layer).__name__, P=layer.proj_size))


@contextlib.contextmanager
def _recurrent_ops(model: nn.Module):
    """Within: every rnnlab layer of ``model`` checked for ONNX and refusing traces and packed input."""
    layers = [m for m in model.modules() if isinstance(m, RecurrentLayer)]
    for layer in layers:
        _check_onnx_layer(layer)
    for layer in layers:
        layer.forward = _export_forward(layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def _dynamic_shapes(model: nn.Module, example_inputs: tuple, input_names, dynamic_axes):
    """torch.export's ``dynamic_shapes`` for the inputs from the ``dynamic_axes`` of their names (one
    ``torch.export.Dim`` per axis name, shared by every input that names it), shaped like ``forward``'s
    parameters (a ``*args`` parameter takes a tuple of the rest)."""
    if not dynamic_axes:
        return None
    params = list(inspect.signature(model.forward).parameters.values())
    names = list(input_names or [p.name for p in params])
    dims: dict[str, torch.export.Dim] = {}

    def spec(k: int):
        axes = dynamic_axes.get(names[k]) if k < len(names) else None
        if not axes:
            return None
        if not isinstance(axes, dict):
            axes = {a: f"{names[k]}_{a}" for a in axes}
        return {a: dims.setdefault(n, torch.export.Dim(n)) for a, n in axes.items()}

    out, k = [], 0
    for p in params:
        if k >= len(example_inputs):
            break
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            out.append(tuple(spec(j) for j in range(k, len(example_inputs))))
            k = len(example_inputs)
        else:
            out.append(spec(k))
            k += 1
    return tuple(out)


def _rnnlab_error(e: BaseException) -> BaseException | None:
    """The ValueError/TypeError that rnnlab raised somewhere in ``e``'s chain of causes, or None."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (ValueError, TypeError)) and e.__traceback__ is not None:
            frames = traceback.extract_tb(e.__traceback__)
            if frames and f"{os.sep}rnnlab{os.sep}" in frames[-1].filename:
                return e
        e = e.__cause__ or e.__context__
    return None


def _check_opset(opset: Any) -> int:
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in OPSETS:
        raise ValueError(f"opset: expected an int in [{OPSETS.start}, {OPSETS.stop - 1}], got {opset!r}")
    return opset


def to_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    example_inputs: tuple | None = None,
    *,
    initial_state: bool = False,
    lengths: bool = False,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
    opset: int = 18,
) -> onnx.ModelProto:
    """Write ``model`` to ``path`` as ONNX, its rnnlab layers as ONNX RNN / LSTM / GRU nodes.

    A bare rnnlab layer (``example_inputs=None``): the file takes ``x`` — (T, B, X), or (B, T, X)
    with ``batch_first`` — and, when asked, ``h0`` (and ``c0`` for LSTM), each (D·L, B, H)
    (``initial_state=True``), and ``lengths`` (B,) int64 (``lengths=True``); it returns ``out``,
    ``h_n`` (and ``c_n``). Batch and time are dynamic axes.

    Any other module: ``example_inputs`` is the tuple of arguments of one call, exported by
    torch.onnx's default (dynamo) exporter; ``input_names``, ``output_names`` and ``dynamic_axes``
    are passed to it (name the batch and time axes of every input and output you want dynamic).
    The rnnlab layers inside may be called with ``hx`` and ``lengths``; PackedSequence input and
    ``return_gates`` are refused. rnnlab *cells* stepped in a Python loop are exported as their
    plain equations, unrolled for the example's length.

    Returns the written ``onnx.ModelProto`` (checked with ``onnx.checker``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module (an rnnlab layer or a model containing one), got {type(model).__name__}")
    opset = _check_opset(opset)
    for name, flag in (("initial_state", initial_state), ("lengths", lengths)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected a bool, got {type(flag).__name__} {flag!r}")
    path = os.fspath(path)
    if isinstance(model, RecurrentLayer) and example_inputs is None:
        extra = {"input_names": input_names, "output_names": output_names, "dynamic_axes": dynamic_axes}
        given = [k for k, v in extra.items() if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: only for a model exported from example_inputs; a bare layer's "
                             "inputs are x [, h0, c0] [, lengths] and its outputs out, h_n [, c_n]")
        _check_onnx_layer(model)
        if model.learn_initial_state and not initial_state:
            raise ValueError("initial_state: expected True for a layer with learn_initial_state=True (its h_0 is a "
                             "parameter, which the file's zero default would drop); export with initial_state=True and "
                             "feed layer.initial_state(B), or export a model containing the layer from example_inputs")
        proto = layer_graph(model, initial_state, lengths, opset)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, path)
        return proto
    if initial_state or lengths:
        raise ValueError("initial_state, lengths: only for a bare layer without example_inputs; for a model, "
                         "pass h0 / lengths in example_inputs and name them in input_names")
    if example_inputs is None:
        raise ValueError(f"example_inputs: a {type(model).__name__} needs the tuple of arguments of one call "
                         "(e.g. (x,) or (x, lengths)); got None")
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    was_training = model.training
    model.eval()
    try:
        with _recurrent_ops(model), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.filterwarnings("ignore", category=FutureWarning)  # torch's own pytree deprecations
            warnings.filterwarnings("ignore", message=r".*axis name.*will not be used")
            try:
                torch.onnx.export(model, example_inputs, path, dynamo=True, opset_version=opset,
                                  input_names=input_names, output_names=output_names, external_data=False,
                                  custom_translation_table=TRANSLATIONS,
                                  dynamic_shapes=_dynamic_shapes(model, example_inputs, input_names, dynamic_axes),
                                  verbose=False)
            except Exception as e:  # torch wraps what rnnlab refused in its own errors: raise rnnlab's
                ours = _rnnlab_error(e)
                if ours is None:
                    raise
                raise ours.with_traceback(None) from None
    finally:
        model.train(was_training)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    return proto
