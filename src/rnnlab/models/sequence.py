"""The one network every task trains: an input map, an rnnlab recurrent layer, a head.

    x (B, T) symbols  --Embedding-->  (B, T, E)  \\
    x (B, T, C) reals --Linear----->  (B, T, E)  /--> RNN | LSTM | GRU --> out (B, T, D·H)
    head "every": Linear(out)                      --> (B, T, K)    one output per step
    head "last":  Linear([h_T forward, h_1 reverse]) --> (B, K)      one output per sequence
    head "flat":  Linear(out flattened to (B, T·D·H)) --> (B, K)      one output per sequence

With a bidirectional layer the "last" head reads the forward direction's output at the last step
and the reverse direction's at the first — the two steps at which each has read the whole sequence.
With ``lengths`` (padded sequences) the forward direction's last step is each sequence's own
``lengths[b] - 1``, and the layer never reads the padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers import GRU, LSTM, RNN
from ..tasks.base import Config, ModelSpec, check_positive

CELLS = ("rnn", "lstm", "gru")


@dataclass
class ModelConfig(Config):
    cell: str = "lstm"  # "rnn", "lstm" or "gru"
    hidden: int = 128  # H
    layers: int = 1  # stacked levels
    bidirectional: bool = False
    dropout: float = 0.0  # between stacked levels, training only
    nonlinearity: str = "tanh"  # rnn only: "tanh" or "relu"
    reset: str = "before"  # gru only: "before" (the seed's) or "after" (cuDNN's)
    embedding: int = 32  # E, the width of the input map
    init: str = "default"  # "default" (orthogonal, forget bias 1) or "torch"
    engine: str = "auto"  # passed to the layer, see rnnlab.engine
    layer_norm: bool = False  # lstm, gru: layer-normalised gate pre-activations (and the LSTM's C_t)
    peepholes: bool = False  # lstm only: the gates also see the cell state
    coupled: bool = False  # lstm only: i_t = 1 - f_t (CIFG)
    recurrent_dropout: float = 0.0  # lstm, gru: one mask per sequence on h_{t-1}, training only
    zoneout: float = 0.0  # lstm, gru: each unit keeps its previous value with this probability, training only

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"model.cell: expected one of {', '.join(CELLS)}, got {self.cell!r}")
        for name in ("hidden", "layers", "embedding"):
            check_positive(f"model.{name}", getattr(self, name))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout: expected a float in [0, 1), got {self.dropout}")
        if self.nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"model.nonlinearity: expected 'tanh' or 'relu', got {self.nonlinearity!r}")
        if self.reset not in ("before", "after"):
            raise ValueError(f"model.reset: expected 'before' or 'after', got {self.reset!r}")
        for name, cells in (("layer_norm", ("lstm", "gru")), ("peepholes", ("lstm",)), ("coupled", ("lstm",)),
                            ("recurrent_dropout", ("lstm", "gru")), ("zoneout", ("lstm", "gru"))):
            if getattr(self, name) and self.cell not in cells:
                raise ValueError(f"model.{name}: only for cell {' or '.join(repr(c) for c in cells)}, got cell {self.cell!r}")
        for name in ("recurrent_dropout", "zoneout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"model.{name}: expected a float in [0, 1), got {getattr(self, name)}")

    def label(self) -> str:
        """A short human name, e.g. "lstm", "rnn-relu", "gru-after", "bi-2x-lstm"."""
        s = self.cell + ("-relu" if self.cell == "rnn" and self.nonlinearity == "relu" else "")
        s += "-after" if self.cell == "gru" and self.reset == "after" else ""
        s += "".join(tag for on, tag in ((self.layer_norm, "-ln"), (self.peepholes, "-peep"), (self.coupled, "-cifg")) if on)
        s += (f"-rd{self.recurrent_dropout:g}" if self.recurrent_dropout else "") + (f"-zo{self.zoneout:g}" if self.zoneout else "")
        s = (f"{self.layers}x-" if self.layers > 1 else "") + s
        return ("bi-" if self.bidirectional else "") + s


def build_layer(config: ModelConfig, input_size: int) -> nn.Module:
    """The rnnlab layer that ``config`` describes, batch-first."""
    common = dict(num_layers=config.layers, batch_first=True, dropout=config.dropout,
                  bidirectional=config.bidirectional)
    kw = dict(init=config.init, engine=config.engine)
    if config.cell == "rnn":
        return RNN(input_size, config.hidden, nonlinearity=config.nonlinearity, **common, **kw)
    kw.update(layer_norm=config.layer_norm, recurrent_dropout=config.recurrent_dropout, zoneout=config.zoneout)
    if config.cell == "gru":
        return GRU(input_size, config.hidden, reset=config.reset, **common, **kw)
    return LSTM(input_size, config.hidden, peepholes=config.peepholes, coupled=config.coupled, **common, **kw)


class SequenceModel(nn.Module):
    """Input map, recurrent layer and head for a task's ``ModelSpec``.

    ``forward(x, state=None) -> (y, state)``: ``x`` (B, T) int64 or (B, T, C) float; ``y`` (B, T, K)
    for head "every", (B, K) for head "last"; ``state`` the layer's (h_n, or (h_n, c_n) for LSTM),
    to be passed back in to continue the same sequences.
    """

    def __init__(self, spec: ModelSpec, config: ModelConfig):
        super().__init__()
        self.spec, self.config = spec, config
        E, H = config.embedding, config.hidden
        D = 2 if config.bidirectional else 1
        self.input_map = nn.Embedding(spec.input_size, E) if spec.inputs == "symbols" else nn.Linear(spec.input_size, E)
        self.rnn = build_layer(config, E)
        if spec.head == "flat" and spec.steps < 1:
            raise ValueError(f"spec.steps: head 'flat' needs the fixed sequence length, got steps={spec.steps}")
        self.head = nn.Linear(D * H * (spec.steps if spec.head == "flat" else 1), spec.output_size)

    def forward(self, x: torch.Tensor, state=None, lengths: torch.Tensor | None = None):
        e = self.input_map(x)  # (B, T, E)
        out, state = self.rnn(e, state, lengths=lengths) if lengths is not None else self.rnn(e, state)  # (B, T, D·H)
        if self.spec.head == "last":
            H = self.config.hidden
            if lengths is None:
                last = out[:, -1]
            else:  # each sequence's own last step
                last = out[torch.arange(out.shape[0], device=out.device), lengths.to(out.device) - 1]
            # forward direction at its last step; reverse direction at its last step, which is t = 0
            out = last if not self.config.bidirectional else torch.cat([last[:, :H], out[:, 0, H:]], dim=-1)
        elif self.spec.head == "flat":
            out = out.reshape(out.shape[0], -1)  # (B, T·D·H)
        return self.head(out), state
