"""rnnlab.MinGRU and rnnlab.MinLSTM: layers of the parallel-scan cells (Feng et al. 2024)."""

from __future__ import annotations

import torch

from ..cells.minimal import MinGRUCell, MinLSTMCell
from ..engine.linear import LinearEngine
from ..engine.reference import ReferenceEngine
from ..engine.scan import ScanEngine
from .base import RecurrentLayer

ENGINES = ("auto", "scan", "native", "reference")


class _MinimalLayer(RecurrentLayer):
    """A layer whose cells are linear recurrences in h, h_t = a_t * h_{t-1} + b_t, with a_t, b_t from x_t alone.

    ``engine="scan"`` computes the whole sequence with the parallel log-space scan
    (:mod:`rnnlab.engine.scan`); ``"native"`` computes every a_t, b_t at once and runs the recurrence
    in a compiled loop, one multiply-add per unit and step (:mod:`rnnlab.engine.linear`);
    ``"reference"`` steps the cell's equations one time step at a time (the sequential form used for
    inference and streaming). All compute the same function. ``"auto"`` runs the native loop on CPU
    (measured faster there: BENCHMARKS.md) and the scan on GPUs and while torch traces the model
    (torch.compile, torch.export: the scan is plain torch operations).
    """

    AUTO_TRACES = True  # "auto" picks the scan (plain torch operations) while torch traces: compile/export keep it

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, *, init="default", engine="auto"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         init=init, engine=engine)

    @classmethod
    def engine_choices(cls):
        return ENGINES

    def select_engine(self, x):
        if self.engine == "reference":
            return ReferenceEngine()
        tracing = torch.compiler.is_compiling() or torch.compiler.is_exporting()
        if self.engine == "native" or (self.engine == "auto" and x.device.type == "cpu" and not tracing):
            return LinearEngine()
        return ScanEngine()


class MinGRU(_MinimalLayer):
    r"""Multi-layer minGRU: ``z_t = σ(W_z x_t + b_z)``, ``h̃_t = g(W_h x_t + b_h)``,
    ``h_t = (1 − z_t) * h_{t−1} + z_t * h̃_t`` (see :class:`rnnlab.MinGRUCell`). Same call, shapes and
    options as :class:`rnnlab.GRU`; parameters ``weight_ih_l{k}`` (2H, X_k) and ``bias_l{k}`` (2H).
    """

    cell_class = MinGRUCell


class MinLSTM(_MinimalLayer):
    r"""Multi-layer minLSTM: normalised forget and input gates from x_t alone,
    ``h_t = f'_t * h_{t−1} + i'_t * h̃_t`` (see :class:`rnnlab.MinLSTMCell`). Same call and shapes as
    :class:`rnnlab.GRU` (one state, h); parameters ``weight_ih_l{k}`` (3H, X_k) and ``bias_l{k}`` (3H).
    """

    cell_class = MinLSTMCell
