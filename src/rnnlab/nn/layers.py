"""``rnnlab.nn.RNN``, ``LSTM``, ``GRU``: torch.nn's recurrent layers, with rnnlab's engine underneath.

Each class subclasses its torch.nn namesake and keeps all of it — constructor, parameters
(``weight_ih_l{k}`` (G·H, X_k) in torch's gate order, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
``bias_hh_l{k}``, suffix ``_reverse``), initialisation, ``state_dict``, ``flatten_parameters()``,
``proj_size`` (``weight_hr_l{k}``) — and replaces only what computes the sequence: ``forward`` prepares its arguments
exactly as torch.nn's does (PackedSequence, ``batch_first``, unbatched input, zero ``hx``, torch's own
argument checks and exception types), then runs the stack on rnnlab's engine
(:mod:`rnnlab.nn.stack` converts the weights per call, differentiably).

``engine`` (an attribute, default "auto"; "native", "torch", "reference"): which engine runs, as on
``rnnlab.LSTM``. Where it picks torch's own kernel ("torch", or "auto" where that is faster: LSTM inference
on 2+ CPU threads under bf16 autocast from B·H = 4096, a wide bidirectional LSTM's float32 inference at 2-127 rows,
and CUDA: ``rnnlab.engine.choose``), torch.nn's ``forward`` runs unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from ..cells.gru import GRUCell
from ..cells.lstm import LSTMCell
from ..cells.rnn import RNNCell
from ..layers import packing
from .stack import TorchStack, flat, same_kind, select


class _Recurrent:
    """torch.nn.RNNBase's forward with rnnlab's engine in place of ``torch._VF``'s kernels."""

    _cell: type  # the rnnlab cell every level runs
    engine = "auto"

    def _options(self) -> dict:
        return self._cell.SPEC.torch.options(self)

    def forward(self, input, hx=None):
        paired = len(self._cell.STATE) == 2  # the LSTM carries (h, c)
        given = hx
        D = 2 if self.bidirectional else 1
        packed = isinstance(input, PackedSequence)
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            batch, is_batched = int(batch_sizes[0]), True
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"{type(self).__name__}: Expected input to be 2D or 3D, got {input.dim()}D instead")
            batch_sizes = sorted_indices = unsorted_indices = None
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            data = input if is_batched else input.unsqueeze(batch_dim)
            batch = data.size(batch_dim)
        if hx is None:
            P = self.proj_size or self.hidden_size  # an LSTM's h is proj_size wide when it projects, C stays H
            zeros = lambda width: torch.zeros(self.num_layers * D, batch, width, dtype=data.dtype, device=data.device)  # noqa: E731
            hx = (zeros(P), zeros(self.hidden_size)) if paired else zeros(P)
        elif not packed:
            parts = tuple(hx) if paired else (hx,)
            want = 3 if is_batched else 2
            if any(p.dim() != want for p in parts):
                raise RuntimeError(f"For {'batched 3-D' if is_batched else 'unbatched 2-D'} input, hx should also be "
                                   f"{want}-D but got {', '.join(f'{p.dim()}-D' for p in parts)} tensor(s)")
            if not is_batched:
                hx = tuple(p.unsqueeze(1) for p in parts) if paired else hx.unsqueeze(1)
        hx = self.permute_hidden(hx, sorted_indices)
        self.check_forward_args(data, hx, batch_sizes)  # torch's own checks: sizes, the input's dtype
        same_kind(data, hx if paired else (hx,))

        if packed:  # the engines take padded (T, B, X) and lengths; torch's packing is sorted by length
            x, lengths = pad_packed_sequence(PackedSequence(data, batch_sizes))
            lengths = lengths.to(x.device)
        else:
            x, lengths = (data.transpose(0, 1) if self.batch_first else data), None  # (T, B, X)
        levels = [[flat(self, k, d) for d in range(D)] for k in range(self.num_layers)]
        stack = TorchStack(self._cell, self._options(), levels, self.hidden_size, dropout=float(self.dropout),
                           training=self.training, engine=self.engine, proj_size=self.proj_size)
        engine = select(stack, x)
        if engine is None:
            return super().forward(input, given)
        out, finals, _ = engine.run(stack, x, hx if paired else (hx,), lengths, False)  # out (T, B, D·H)
        hidden = finals if paired else finals[0]
        if packed:
            out = packing.repack(out, PackedSequence(data, batch_sizes)).data
            return PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices), self.permute_hidden(hidden, unsorted_indices)
        if self.batch_first:
            out = out.transpose(0, 1)
        if not is_batched:
            out = out.squeeze(batch_dim)
            hidden = tuple(s.squeeze(1) for s in hidden) if paired else hidden.squeeze(1)
        return out, hidden


class RNN(_Recurrent, nn.RNN):
    r"""torch.nn.RNN (``h_t = tanh(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)``, or relu), run by rnnlab's engine.

    Everything but the computation is torch.nn.RNN's: ``RNN(input_size, hidden_size, num_layers=1,
    nonlinearity='tanh', bias=True, batch_first=False, dropout=0.0, bidirectional=False, device=None,
    dtype=None)``, parameters ``weight_ih_l{k}`` (H, X_k), ``weight_hh_l{k}`` (H, H), ``bias_ih_l{k}``,
    ``bias_hh_l{k}`` (H), U(−1/√H, 1/√H) initialisation; ``forward(input, hx=None) -> (output, h_n)``
    with input (L, N, H_in) ((N, L, H_in) batch_first, (L, H_in) unbatched, or a PackedSequence) and
    h_n (D·num_layers, N, H_out). A torch.nn.RNN's ``state_dict`` loads as it is.
    """

    _cell = RNNCell


class LSTM(_Recurrent, nn.LSTM):
    r"""torch.nn.LSTM run by rnnlab's engine.

    Everything but the computation is torch.nn.LSTM's: ``LSTM(input_size, hidden_size, num_layers=1,
    bias=True, batch_first=False, dropout=0.0, bidirectional=False, proj_size=0, device=None,
    dtype=None)``, parameters ``weight_ih_l{k}`` (4H, X_k) with gate rows (i, f, g, o),
    ``weight_hh_l{k}`` (4H, H_out), ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H), ``weight_hr_l{k}``
    (H_out, H) when ``proj_size > 0``; U(−1/√H, 1/√H) initialisation; ``forward(input, hx=None) ->
    (output, (h_n, c_n))``. A torch.nn.LSTM's ``state_dict`` loads as it is. With ``proj_size > 0``
    rnnlab's engines compute the projection too (h_t = W_hr (o_t ⊙ tanh(C_t))).
    """

    _cell = LSTMCell


class GRU(_Recurrent, nn.GRU):
    r"""torch.nn.GRU (cuDNN's form: ``n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))``,
    ``h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}``) run by rnnlab's engine — its ``reset="after"`` GRU, with
    z negated into the seed's convention on the way.

    Everything but the computation is torch.nn.GRU's: ``GRU(input_size, hidden_size, num_layers=1,
    bias=True, batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None)``,
    parameters ``weight_ih_l{k}`` (3H, X_k) with gate rows (r, z, n), ``weight_hh_l{k}`` (3H, H),
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (3H); ``forward(input, hx=None) -> (output, h_n)``.
    """

    _cell = GRUCell
