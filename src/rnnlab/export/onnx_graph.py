"""A bare rnnlab layer as a chain of ONNX RNN / LSTM / GRU nodes, built with ``onnx.helper``.

``emit_layer`` speaks to a small builder interface (``op``, ``const``), ``HelperBuilder``, which builds an
``onnx.GraphProto`` — no torch exporter involved. (A whole model goes through torch's exporter instead,
where ``onnx_dynamo`` translates each level's operator into the same nodes.)

Per level k of a layer with D directions (all time-major; ONNX's own ``layout=0``)::

    Y, Y_h[, Y_c] = RNN|LSTM|GRU(X_k, W_k, R_k, B_k, sequence_lens, h0[kD:(k+1)D][, c0[kD:(k+1)D]])
    Y  (T, D, B, H) -> Transpose(0, 2, 1, 3) -> Reshape (T, B, D·H) = X_{k+1}
    h_n = Concat_k(Y_h)  (D·L, B, H)
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from .onnx_layout import level_weights


class HelperBuilder:
    """Collects nodes and initializers for an ``onnx.helper`` graph; values are names."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._ids = itertools.count()

    def _name(self, hint: str) -> str:
        return f"{hint}_{next(self._ids)}"

    def op(self, op_type: str, *inputs, n_out: int = 1, **attrs):
        outs = [self._name(op_type.lower()) for _ in range(n_out)]
        names = ["" if v is None else v for v in inputs]
        self.nodes.append(helper.make_node(op_type, names, outs, name=self._name(op_type), **attrs))
        return outs[0] if n_out == 1 else tuple(outs)

    def const(self, hint: str, value: torch.Tensor | np.ndarray):
        name = self._name(hint)
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def rename(self, value: str, name: str) -> None:
        self.nodes.append(helper.make_node("Identity", [value], [name], name=self._name("Identity")))


def _ints(b, hint: str, values) -> Any:
    return b.const(hint, np.asarray(values, dtype=np.int64))


def _levels(b, state, k: int, D: int, L: int):
    """state (D·L, B, H) -> rows k·D .. (k+1)·D, the initial state of level k's node."""
    if state is None or L == 1:
        return state
    return b.op("Slice", state, _ints(b, "start", [k * D]), _ints(b, "end", [(k + 1) * D]), _ints(b, "axis", [0]))


def node_attributes(layer) -> dict[str, Any]:
    """Attributes of the ONNX node of every level of ``layer`` (the cell's own from ``SPEC.onnx``:
    the RNN's activations, the GRU's linear_before_reset, the coupled LSTM's input_forget)."""
    D = layer.num_directions
    attrs: dict[str, Any] = {"hidden_size": layer.hidden_size}
    if D == 2:
        attrs["direction"] = "bidirectional"
    attrs.update(layer.cell_class.SPEC.onnx.attributes(layer.options, D))
    return attrs


def emit_layer(b, layer, x, h0=None, c0=None, sequence_lens=None):
    """Emit ``layer`` on time-major ``x`` (T, B, X). ``h0``/``c0`` (D·L, B, H) or None (zeros);
    ``sequence_lens`` an int32 (B,) value or None. Returns ``out`` (T, B, D·H), ``h_n`` and ``c_n``
    (None unless LSTM), each (D·L, B, H)."""
    D, L = layer.num_directions, layer.num_layers
    spec = layer.cell_class.SPEC
    cell_state = "c" in spec.state  # ONNX's LSTM: inputs initial_c and P, output Y_c
    attrs = node_attributes(layer)
    y, hs, cs = x, [], []
    for k in range(L):
        lw = level_weights(layer, k)
        inputs = [y, b.const(f"W_l{k}", lw.W), b.const(f"R_l{k}", lw.R),
                  None if lw.B is None else b.const(f"B_l{k}", lw.B), sequence_lens, _levels(b, h0, k, D, L)]
        if cell_state:
            inputs += [_levels(b, c0, k, D, L), None if lw.P is None else b.const(f"P_l{k}", lw.P)]
        while inputs[-1] is None:
            inputs.pop()
        outs = b.op(spec.onnx.op, *inputs, n_out=3 if cell_state else 2, **attrs)
        y_k = outs[0]  # (T, D, B, H)
        if D == 1:
            y = b.op("Squeeze", y_k, _ints(b, "axes", [1]))
        else:
            y = b.op("Reshape", b.op("Transpose", y_k, perm=[0, 2, 1, 3]), _ints(b, "shape", [0, 0, -1]))
        hs.append(outs[1])
        if cell_state:
            cs.append(outs[2])
    cat = lambda vs: vs[0] if len(vs) == 1 else b.op("Concat", *vs, axis=0)
    return y, cat(hs), (cat(cs) if cell_state else None)


ELEM_TYPE = {torch.float32: TensorProto.FLOAT, torch.float64: TensorProto.DOUBLE, torch.float16: TensorProto.FLOAT16}


def layer_graph(layer, initial_state: bool, lengths: bool, opset: int) -> onnx.ModelProto:
    """A whole ONNX model for a bare layer: inputs ``x`` [, ``h0`` [, ``c0``]] [, ``lengths``],
    outputs ``out``, ``h_n`` [, ``c_n``]; batch and time axes dynamic."""
    dtype = layer.weight_ih_l0.dtype
    if dtype not in ELEM_TYPE:
        raise TypeError(f"layer: expected float32, float64 or float16 parameters for ONNX, got {dtype}")
    elem = ELEM_TYPE[dtype]
    D, L, H, X = layer.num_directions, layer.num_layers, layer.hidden_size, layer.input_size
    x_dims = ["batch", "time", X] if layer.batch_first else ["time", "batch", X]
    state_dims = [D * L, "batch", H]
    inputs = [helper.make_tensor_value_info("x", elem, x_dims)]
    b = HelperBuilder()
    x = b.op("Transpose", "x", perm=[1, 0, 2]) if layer.batch_first else "x"
    h0 = c0 = seq = None
    if initial_state:
        h0 = "h0"
        inputs.append(helper.make_tensor_value_info("h0", elem, state_dims))
        if "c" in layer.cell_class.SPEC.state:
            c0 = "c0"
            inputs.append(helper.make_tensor_value_info("c0", elem, state_dims))
    if lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"]))
        seq = b.op("Cast", "lengths", to=TensorProto.INT32)
    out, h_n, c_n = emit_layer(b, layer, x, h0, c0, seq)
    if layer.batch_first:
        out = b.op("Transpose", out, perm=[1, 0, 2])
    out_dims = ["batch", "time", D * H] if layer.batch_first else ["time", "batch", D * H]
    outputs = [helper.make_tensor_value_info("out", elem, out_dims), helper.make_tensor_value_info("h_n", elem, state_dims)]
    b.rename(out, "out")
    b.rename(h_n, "h_n")
    if c_n is not None:
        b.rename(c_n, "c_n")
        outputs.append(helper.make_tensor_value_info("c_n", elem, state_dims))
    graph = helper.make_graph(b.nodes, f"rnnlab_{layer.mode}", inputs, outputs, b.initializers)
    opsets = [helper.make_opsetid("", opset)]
    return helper.make_model(graph, opset_imports=opsets, producer_name="rnnlab",
                             ir_version=helper.find_min_ir_version_for(opsets))
