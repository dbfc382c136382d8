"""Cells: one time step of each of the seed's networks, its equations line for line."""

from .base import RecurrentCell, Weights
from .gru import GRUCell
from .lstm import LSTMCell, LSTMState
from .minimal import MinGRUCell, MinLSTMCell
from .rnn import RNNCell

__all__ = ["RecurrentCell", "Weights", "RNNCell", "LSTMCell", "LSTMState", "GRUCell", "MinGRUCell", "MinLSTMCell"]
