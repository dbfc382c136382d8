"""Drop-in replacements for torch.nn's recurrent modules, run by rnnlab's engine.

``rnnlab.nn.LSTM`` is a ``torch.nn.LSTM`` (a subclass): the same constructor, parameters in torch's
layout, initialisation, ``state_dict``, forward signature, return values and exception types — only
the arithmetic underneath is rnnlab's (:mod:`rnnlab.nn.layers`, :mod:`rnnlab.nn.cells`). Replace
``torch.nn.LSTM`` by ``rnnlab.nn.LSTM`` and nothing else changes; a torch.nn checkpoint loads with
``strict=True``.
"""

from .cells import GRUCell, LSTMCell, RNNCell
from .layers import GRU, LSTM, RNN

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]
