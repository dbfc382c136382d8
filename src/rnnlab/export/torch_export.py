"""torch.compile and torch.export for models with rnnlab layers.

Which engines trace (``rnnlab.engine``):

* ``"native"`` (and ``"auto"``, which picks it while torch traces) — the ``rnnlab::recurrent_level``
  operator, one node per level with a fake (shape) implementation and a registered backward:
  ``torch.compile(..., fullgraph=True)`` compiles training and inference with no graph break, and
  ``torch.export`` keeps one node per level with a dynamic batch and time axis (no loop unrolled).
  MinGRU/MinLSTM's ``"auto"`` runs their parallel scan while torch traces (plain torch operations,
  dynamic time axis too).
* ``"reference"`` — the cells' equations, plain torch operations: compiles and exports, for every
  layer. The time loop is unrolled, so a new sequence length means a new graph, and compile time
  grows with T.
* ``"torch"`` — torch's own fused RNN operators: exports too (time length fixed by the example);
  compiles for inference only (torch 2.13 cannot compile the backward of its CPU mkldnn operator).

``compile_model`` and ``export_program`` are ``torch.compile`` and ``torch.export.export`` with, optionally,
every rnnlab layer put on one ``engine`` first (default None: each layer keeps its own).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

from .. import _checks
from ..layers.base import RecurrentLayer

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


def compile_model(model: nn.Module, *, engine: str | None = None, **compile_kwargs):
    """``torch.compile(model, **compile_kwargs)`` after setting every rnnlab layer's engine to
    ``engine`` (a lasting change; None, the default, keeps each layer's own).

    On the default engine each level is one native operator inside the compiled graph
    (``fullgraph=True`` works); with "reference" the recurrence itself is compiled, one graph per
    sequence length. Returns the compiled module, which computes what ``model`` computes.
    """
    layers = _layers(model)
    engine = _check_engine(engine, layers)
    if engine is not None:
        for layer in layers:
            layer.engine = engine
    return torch.compile(model, **compile_kwargs)


def export_program(model: nn.Module, args: tuple, kwargs: dict | None = None, *, engine: str | None = None,
                   dynamic_shapes=None, strict: bool = False) -> torch.export.ExportedProgram:
    """``torch.export.export(model, args, kwargs, ...)`` with every rnnlab layer on ``engine`` while
    it traces (restored afterwards; None, the default, keeps each layer's own). On the default engine
    the program holds one native operator per level, and both the batch and the time axis may be made
    dynamic with ``dynamic_shapes`` (e.g. ``{"x": {0: torch.export.Dim("time"), 1: torch.export.Dim("batch")}}``).
    With "reference" it holds the unrolled time loop: the time length is fixed by the example. ``lengths=``
    exports too (their range is checked when the program is traced, not when it runs).
    """
    layers = _layers(model)
    engine = _check_engine(engine, layers)
    if not isinstance(args, tuple):
        raise TypeError(f"args: expected a tuple of the model's positional arguments, got {type(args).__name__}")
    with _engines(layers, engine):
        try:
            return torch.export.export(model, args, kwargs, dynamic_shapes=dynamic_shapes, strict=strict)
        except GuardOnDataDependentSymNode as e:
            raise ValueError(
                "export_program: the model branches on a tensor's values, which torch.export cannot trace; "
                "remove the branch, or use rnnlab.export.to_onnx"
            ) from e
