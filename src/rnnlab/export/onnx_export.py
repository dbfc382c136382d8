"""``to_onnx``: rnnlab layers as ONNX's own RNN / LSTM / GRU operators, so runtimes use their fused kernels.

Two routes, one emitter (``onnx_graph.emit_layer``):

* a bare layer with no ``example_inputs`` is written directly with ``onnx.helper`` — no torch
  exporter involved;
* any other ``nn.Module`` (a layer inside embeddings, linears, activations, ...) goes through
  torch.onnx's TorchScript exporter (``dynamo=False``). While it traces, every rnnlab layer in the
  model runs as an autograd.Function whose ``symbolic`` emits the recurrent nodes; the rest of the
  model is exported by torch as usual.

The exported model is for inference: dropout between levels is off (torch exports in eval mode), and
so are recurrent_dropout and zoneout. LSTM peepholes and the coupled gate map to ONNX LSTM's ``P``
input and ``input_forget`` (``onnx_layout``); layer norm has no ONNX counterpart and is refused.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any

import onnx
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .. import _checks
from ..engine import get_engine
from ..layers.base import RecurrentLayer
from .onnx_graph import TorchScriptBuilder, emit_layer, layer_graph

OPSETS = range(14, 21)  # 14 is the first with today's RNN operators; 20 the TorchScript exporter's newest

_ACTIVE: dict[int, RecurrentLayer] = {}  # layers being exported, by id, for the symbolic to find


class _RecurrentOp(torch.autograd.Function):
    """An rnnlab layer on time-major input, as one traced operation with an ONNX symbolic."""

    @staticmethod
    def forward(ctx, key: int, x, h0, c0, lengths):
        layer = _ACTIVE[key]
        zeros = lambda: torch.zeros(layer.num_directions * layer.num_layers, x.shape[1], layer.hidden_size,
                                    dtype=x.dtype, device=x.device)
        state = (zeros() if h0 is None else h0,)
        if "c" in layer.cell_class.SPEC.state:
            state = state + (zeros() if c0 is None else c0,)
        # the reference engine: plain torch operations, which the tracer can record inside the Function
        with torch.no_grad():
            out, state_n, _ = get_engine("reference", layer, x).run(layer, x, state, lengths, False)
        return (out, *state_n)

    @staticmethod
    def symbolic(g, key: int, x, h0, c0, lengths):
        layer = _ACTIVE[key]
        b = TorchScriptBuilder(g)
        seq = None if lengths is None else b.op("Cast", lengths, to=onnx.TensorProto.INT32)
        out, h_n, c_n = emit_layer(b, layer, x, h0, c0, seq)
        return (out, h_n) if c_n is None else (out, h_n, c_n)


def _export_forward(layer: RecurrentLayer):
    """The forward an rnnlab layer has while its model is exported: torch.nn's signature and shapes."""

    def forward(x, hx=None, lengths=None, return_gates: bool = False):
        if isinstance(x, PackedSequence):
            raise TypeError("x: ONNX export takes padded input (T, B, X) with lengths=, got a PackedSequence; "
                            "pad it with torch.nn.utils.rnn.pad_packed_sequence and pass the lengths")
        if return_gates:
            raise ValueError("return_gates: ONNX's recurrent operators do not output gate traces; expected False")
        xs, unbatched = layer._check_input(x)
        h0 = c0 = None
        if hx is not None:
            parts = layer._check_hx(hx, int(xs.shape[1]), unbatched)
            h0 = parts[0]
            c0 = parts[1] if len(parts) > 1 else None
        if lengths is not None:
            lengths = _checks.tensor("lengths", lengths)
            if lengths.is_floating_point() or lengths.dim() != 1:
                raise TypeError(f"lengths: expected a 1-D integer tensor, got dtype {lengths.dtype}, shape {_checks.shape_str(lengths)}")
        outs = _RecurrentOp.apply(id(layer), xs, h0, c0, lengths)
        out, state = outs[0], outs[1:]
        if unbatched:
            out, state = out.squeeze(1), tuple(s.squeeze(1) for s in state)
        elif layer.batch_first:
            out = out.transpose(0, 1)
        return out, (state if len(state) > 1 else state[0])

    return forward


def _check_onnx_layer(layer: RecurrentLayer) -> None:
    if layer.cell_class.SPEC.onnx is None:
        raise TypeError(f"model: {type(layer).__name__} has no ONNX operator (ONNX has RNN, LSTM and GRU); "
                        "expected rnnlab.RNN, rnnlab.LSTM or rnnlab.GRU layers")
    if layer.options.get("layer_norm"):
        raise ValueError(f"model: {type(layer).__name__} with layer_norm=True has no ONNX operator (ONNX's RNN, LSTM "
                         "and GRU have no layer normalisation); expected layer_norm=False (peepholes and coupled export as "
                         "ONNX LSTM's P input and input_forget; recurrent_dropout and zoneout are off at inference)")


@contextlib.contextmanager
def _recurrent_ops(model: nn.Module):
    """Within: every rnnlab layer of ``model`` runs as ``_RecurrentOp``."""
    layers = [m for m in model.modules() if isinstance(m, RecurrentLayer)]
    for layer in layers:
        _check_onnx_layer(layer)
    for layer in layers:
        _ACTIVE[id(layer)] = layer
        layer.forward = _export_forward(layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward
            _ACTIVE.pop(id(layer), None)


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
    torch.onnx's TorchScript exporter; ``input_names``, ``output_names`` and ``dynamic_axes``
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
        with _recurrent_ops(model), warnings.catch_warnings():
            # the TorchScript exporter is the one that runs a Function's ONNX symbolic; its deprecation is known
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            # rnnlab's own shape checks read traced shapes; they hold for the example and are not data flow
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"rnnlab\.")
            torch.onnx.export(model, example_inputs, path, dynamo=False, opset_version=opset,
                              input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                              # inlining would trace the Function's body, whose parameters are no inputs of
                              # it; the symbolic stands for the whole body anyway
                              autograd_inlining=False)
    finally:
        model.train(was_training)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    return proto
