"""Deploying rnnlab models: ONNX files with ONNX's own recurrent operators, torch.compile and torch.export.

* :func:`to_onnx` — rnnlab layers become ONNX ``RNN`` / ``LSTM`` / ``GRU`` nodes (fused kernels in
  onnxruntime); the rest of a model is exported by torch.onnx. Needs the ``onnx`` extra.
* ``torch.onnx.export(model, args)`` (torch's default, dynamo exporter) works on models holding rnnlab
  layers too: the native operator's translation (``onnx_dynamo``) joins torch's exporter registry as soon
  as that exporter is loaded — with no cost to ``import rnnlab`` when it never is.
* :func:`compile_model` and :func:`export_program` — torch.compile / torch.export of models with rnnlab
  layers (plain ``torch.compile`` and ``torch.export.export`` work as well).
"""

import importlib.abc
import importlib.util
import sys

from .torch_export import compile_model, export_program

__all__ = ["to_onnx", "compile_model", "export_program"]

# the module of torch's ONNX exporter that defines its registry of translations (torch 2.13)
_EXPORTER_REGISTRY = "torch.onnx._internal.exporter._registration"


def _register_onnx_translation() -> None:
    try:
        from . import onnx_dynamo  # noqa: F401 (registers on import)
    except ModuleNotFoundError:  # onnx or onnxscript absent: torch cannot export to ONNX either
        pass


class _WhenExporterLoads(importlib.abc.MetaPathFinder):
    """Registers rnnlab's ONNX translation right after torch loads its exporter's registry module."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _EXPORTER_REGISTRY:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _register_onnx_translation()

        spec.loader.exec_module = exec_module
        return spec


if _EXPORTER_REGISTRY in sys.modules:
    _register_onnx_translation()
elif not any(isinstance(f, _WhenExporterLoads) for f in sys.meta_path):
    sys.meta_path.insert(0, _WhenExporterLoads())


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
