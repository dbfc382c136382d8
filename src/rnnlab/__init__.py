"""rnnlab: the seed's RNNs, LSTMs and GRUs — exact cells, fast layers, measured comparisons."""

import torch

from . import analysis
from .cells import GRUCell, LSTMCell, LSTMState, MinGRUCell, MinLSTMCell, RNNCell
from .layers import GRU, LSTM, RNN, MinGRU, MinLSTM
from . import export, nn, stream

# torch.load's default (weights_only=True) unpickles only allow-listed globals. rnnlab's modules hold
# parameters and plain options (str, float, bool, dicts of them), LSTMState two tensors: unpickling runs no code of the
# file's choosing, so a whole saved model holding them loads after `import rnnlab`, as it was saved
torch.serialization.add_safe_globals([LSTMState, RNNCell, LSTMCell, GRUCell, MinGRUCell, MinLSTMCell, RNN, LSTM, GRU, MinGRU, MinLSTM,
                                      nn.RNNCell, nn.LSTMCell, nn.GRUCell, nn.RNN, nn.LSTM, nn.GRU])

__version__ = "0.1.0"

__all__ = ["RNNCell", "LSTMCell", "GRUCell", "LSTMState", "RNN", "LSTM", "GRU",
    "MinGRUCell", "MinLSTMCell", "MinGRU", "MinLSTM", "analysis", "export", "nn", "stream", "__version__"]
