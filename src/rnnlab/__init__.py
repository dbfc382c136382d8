"""rnnlab: the seed's RNNs, LSTMs and GRUs — exact cells, fast layers, measured comparisons."""

from . import analysis
from .cells import GRUCell, LSTMCell, LSTMState, MinGRUCell, MinLSTMCell, RNNCell
from .layers import GRU, LSTM, RNN, MinGRU, MinLSTM
from . import export, nn, stream

__version__ = "0.1.0"

__all__ = ["RNNCell", "LSTMCell", "GRUCell", "LSTMState", "RNN", "LSTM", "GRU",
    "MinGRUCell", "MinLSTMCell", "MinGRU", "MinLSTM", "analysis", "export", "nn", "stream", "__version__"]
