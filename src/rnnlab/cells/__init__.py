"""Cells: one time step of each of the seed's networks, its equations line for line."""

from .base import RecurrentCell, Weights
from .gru import GRUCell
from .lstm import LSTMCell, LSTMState
from .minimal import MinGRUCell, MinLSTMCell
from .rnn import RNNCell
from .spec import CellSpec, register

# the registry of cell descriptions, in the seed's order (error messages list the cells in it)
for _cell in (RNNCell, LSTMCell, GRUCell, MinGRUCell, MinLSTMCell):
    register(_cell.SPEC)
del _cell

__all__ = ["RecurrentCell", "Weights", "RNNCell", "LSTMCell", "LSTMState", "GRUCell", "MinGRUCell", "MinLSTMCell",
           "CellSpec"]
