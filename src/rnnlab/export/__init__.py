"""Deploying rnnlab models: ONNX files with ONNX's own recurrent operators, torch.compile and torch.export.

* :func:`to_onnx` — rnnlab layers become ONNX ``RNN`` / ``LSTM`` / ``GRU`` nodes (fused kernels in
  onnxruntime); the rest of a model is exported by torch.onnx. Needs the ``onnx`` extra.
* :func:`compile_model` and :func:`export_program` — torch.compile / torch.export with every rnnlab
  layer on an engine that torch can trace.
"""

from .torch_export import compile_model, export_program

__all__ = ["to_onnx", "compile_model", "export_program"]


def __getattr__(name: str):
    # onnx is an optional dependency: imported when to_onnx is first asked for
    if name == "to_onnx":
        try:
            from .onnx_export import to_onnx
        except ModuleNotFoundError as e:
            raise ImportError(f"rnnlab.export.to_onnx needs the onnx package ({e}); install it with "
                              "pip install 'rnnlab[onnx]'") from e
        return to_onnx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
