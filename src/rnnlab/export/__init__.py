"""Deploying rnnlab models: ONNX files with ONNX's own recurrent operators, torch.compile and torch.export.

* :func:`to_onnx` — rnnlab layers become ONNX ``RNN`` / ``LSTM`` / ``GRU`` nodes (fused kernels in
  onnxruntime); the rest of a model is exported by torch.onnx.
* :func:`compile_model` and :func:`export_program` — torch.compile / torch.export with every rnnlab
  layer on an engine made of plain torch operations.
"""

from .onnx_export import to_onnx
from .torch_export import compile_model, export_program

__all__ = ["to_onnx", "compile_model", "export_program"]
