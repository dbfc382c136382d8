"""Layers: cells run over whole sequences — stacked, bidirectional, variable lengths, torch-shaped."""

from .base import RecurrentLayer
from .gru import GRU
from .lstm import LSTM
from .minimal import MinGRU, MinLSTM
from .rnn import RNN

__all__ = ["RecurrentLayer", "RNN", "LSTM", "GRU", "MinGRU", "MinLSTM"]
