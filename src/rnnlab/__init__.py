"""rnnlab: the seed's RNNs, LSTMs and GRUs — exact cells, fast layers, measured comparisons."""

from . import analysis
from .cells import GRUCell, LSTMCell, LSTMState, RNNCell
from .layers import GRU, LSTM, RNN

__version__ = "0.1.0"

__all__ = ["RNNCell", "LSTMCell", "GRUCell", "LSTMState", "RNN", "LSTM", "GRU", "analysis", "__version__"]
