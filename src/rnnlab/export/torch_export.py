"""torch.compile and torch.export for models with rnnlab layers.

Which engines trace (``rnnlab.engine``):

* ``"reference"`` — the cells' equations, plain torch operations: compiles and exports, for every
  layer. The time loop is unrolled, so a new sequence length means a new graph, and compile time
  grows with T.
* ``"torch"`` — torch's own fused RNN operators: exports too (time length fixed by the example);
  compiles for inference only (torch 2.13 cannot compile the backward of its CPU mkldnn operator).
* ``"scan"`` (MinGRU/MinLSTM, also their ``"auto"``, which runs the scan while torch traces) — a parallel
  scan of plain torch operations:
  exports with a dynamic time axis.
* ``"native"`` (and ``"auto"`` of RNN/LSTM/GRU, which may pick it) — compiled C++ loops inside an
  autograd.Function: torch.compile runs them eagerly between compiled regions (graph breaks), so
  ``fullgraph=True`` fails; torch.export cannot trace them at all.

``compile_model`` and ``export_program`` therefore put every rnnlab layer on ``engine`` (default
"reference") and refuse, before any tracing, the combinations that cannot work.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from .. import _checks
from ..layers.base import RecurrentLayer

UNTRACEABLE = "native"  # compiled C++ loops; "auto" may pick it wherever a layer offers it


def _layers(model: Any) -> list[RecurrentLayer]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module (an rnnlab layer or a model containing one), got {type(model).__name__}")
    return [m for m in model.modules() if isinstance(m, RecurrentLayer)]


def _check_engine(engine: Any, layers: list[RecurrentLayer]) -> str | None:
    """``engine`` must be one every layer accepts (None: keep each layer's own)."""
    for layer in layers:
        if engine is not None:
            _checks.choice("engine", engine, layer.engine_choices())
    return engine


def _untraceable(layers: list[RecurrentLayer]) -> list[str]:
    def may_run_native(layer):
        auto_may = UNTRACEABLE in layer.engine_choices() and not getattr(layer, "AUTO_TRACES", False)
        return layer.engine == UNTRACEABLE or (layer.engine == "auto" and auto_may)

    return sorted({layer.engine for layer in layers if may_run_native(layer)})


def _advice(what: str, engines: list[str]) -> str:
    return (f"{what}: rnnlab layers on engine {', '.join(repr(e) for e in engines)} run compiled C++ loops that "
            f"torch cannot trace; select engine='reference' (plain torch operations), e.g. "
            f"{what.split(':')[0]}(model, ..., engine='reference')")


@contextlib.contextmanager
def _engines(layers: list[RecurrentLayer], engine: str | None):
    """Within: every layer on ``engine`` (unchanged when None)."""
    saved = [layer.engine for layer in layers]
    if engine is not None:
        for layer in layers:
            layer.engine = engine
    try:
        yield
    finally:
        for layer, e in zip(layers, saved):
            layer.engine = e


def compile_model(model: nn.Module, *, engine: str | None = "reference", **compile_kwargs):
    """``torch.compile(model, **compile_kwargs)`` after setting every rnnlab layer's engine to
    ``engine`` (a lasting change; None keeps each layer's own).

    With the default "reference" engine the recurrence itself is compiled. With "native" (or an
    "auto" that may pick it) the C++ loops run eagerly between compiled regions, and
    ``fullgraph=True`` is refused. Returns the compiled module, which computes what ``model`` computes.
    """
    layers = _layers(model)
    engine = _check_engine(engine, layers)
    if engine is not None:
        for layer in layers:
            layer.engine = engine
    bad = _untraceable(layers)
    if bad and compile_kwargs.get("fullgraph", False):
        raise ValueError(_advice("compile_model: fullgraph=True", bad))
    return torch.compile(model, **compile_kwargs)


def export_program(model: nn.Module, args: tuple, kwargs: dict | None = None, *, engine: str | None = "reference",
                   dynamic_shapes=None, strict: bool = False) -> torch.export.ExportedProgram:
    """``torch.export.export(model, args, kwargs, ...)`` with every rnnlab layer on ``engine`` while
    it traces (restored afterwards; None keeps each layer's own). With the reference engine the
    program holds the unrolled time loop: the time length is fixed by the example; the batch may be made
    dynamic with ``dynamic_shapes`` (e.g. ``{"x": {1: torch.export.Dim("batch")}}``), and ``lengths=``
    exports too (their range is checked when the program is traced, not when it runs).
    """
    layers = _layers(model)
    engine = _check_engine(engine, layers)
    if not isinstance(args, tuple):
        raise TypeError(f"args: expected a tuple of the model's positional arguments, got {type(args).__name__}")
    with _engines(layers, engine):
        bad = _untraceable(layers)
        if bad:
            raise ValueError(_advice("export_program", bad))
        from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

        try:
            return torch.export.export(model, args, kwargs, dynamic_shapes=dynamic_shapes, strict=strict)
        except GuardOnDataDependentSymNode as e:
            raise ValueError(
                "export_program: the model branches on a tensor's values, which torch.export cannot trace; "
                "remove the branch, or use rnnlab.export.to_onnx"
            ) from e
