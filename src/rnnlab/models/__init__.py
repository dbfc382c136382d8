"""Models: a task's input map, an rnnlab recurrent layer (any cell, stacked, bidirectional) and a head."""

from .sequence import CELLS, ModelConfig, SequenceModel, build_layer

__all__ = ["CELLS", "ModelConfig", "SequenceModel", "build_layer"]
