"""The torch engine: torch's own fused RNN kernels (oneDNN on CPU, cuDNN on CUDA) on rnnlab's weights.

Where torch computes exactly the same function — LSTM, RNN, and GRU with reset="after" — the
weights are converted on the fly, differentiably, from the seed's layout to torch's (see
``cells/torch_layout.py``: gate order, the GRU's negated z rows, one bias in b_ih and zeros or b_hn
in b_hh), and torch's operator the cell's ``SPEC.torch.op`` names — ``torch._VF.lstm`` / ``gru`` /
``rnn_tanh`` / ``rnn_relu`` — runs the whole stack.
Gradients flow back through the conversion to rnnlab's parameters.

Not computable here: GRU reset="before" (the seed's candidate has no torch kernel) and gate
traces (torch's kernels do not return their gates).

Inter-layer dropout, when training, is drawn by torch's kernel: the same distribution as the
other engines', not the same random numbers.
"""

from __future__ import annotations

import weakref

import torch
from torch import _VF
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..cells.torch_layout import weights_to_torch


def unsupported(layer, trace: bool) -> str | None:
    """Why torch's kernels cannot compute this call, or None when they can."""
    active = layer.active_variants()
    if active:
        return ", ".join(f"{k}={v!r}" for k, v in active.items()) + " (torch's kernels compute the plain cell)"
    torch_layout = layer.cell_class.SPEC.torch
    if torch_layout is None:
        return f"{type(layer).__name__} (torch has no kernel for it)"
    if torch_layout.op(layer.options) is None:
        return torch_layout.no_kernel
    if trace:
        return "return_gates=True (torch's kernels do not return their gates)"
    return None


# per layer: the key of the parameters its cached conversion was made from, and that conversion (see _flat_weights)
_CONVERTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _key(layer) -> tuple | None:
    """What identifies the values of ``layer``'s parameters, or None where they are not all its own leaf parameters
    (a parametrization, rnnlab.nn's converted stacks): each parameter's identity, storage, dtype and version counter,
    which every in-place change (optimiser steps, ``copy_``, ``load_state_dict``) bumps."""
    params = getattr(layer, "_parameters", None)
    if params is None or getattr(layer, "parametrizations", None) is not None:
        return None
    return tuple((name, id(t), t.data_ptr(), t.dtype, t.device, t._version) for name, t in params.items()
                 if t is not None)


def _flat_weights(layer) -> list[torch.Tensor]:
    """torch's flat weight list for ``layer``: converted differentiably on every call where autograd records; under
    no_grad / inference_mode converted once and reused while the parameters are unchanged (at (50, 16, 512, 1024) the
    conversion's copies cost about 16 ms a call, against 37-40 ms for the kernel itself under bf16 autocast)."""
    if torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return _convert(layer)
    key = _key(layer)
    if key is None:
        return _convert(layer)
    hit = _CONVERTED.get(layer)
    if hit is not None and hit[0] == key:
        return hit[1]
    with torch.inference_mode(False), torch.no_grad():
        flat = _convert(layer)
    _CONVERTED[layer] = (key, flat)
    return flat


def _convert(layer) -> list[torch.Tensor]:
    flat = []
    for k in range(layer.num_layers):
        for d in range(layer.num_directions):
            w = layer.weights(k, d)
            flat += [t for t in (*weights_to_torch(layer.cell_class.SPEC, w), w.weight_hr) if t is not None]
    return flat


def _op(layer) -> str:
    """torch's operator for this layer: "lstm", "gru", "rnn_tanh" or "rnn_relu" (``torch._VF.<op>``)."""
    return layer.cell_class.SPEC.torch.op(layer.options)


class TorchEngine:
    """Runs a layer through torch's fused kernels; refuses what they cannot compute."""

    name = "torch"

    def path(self, x: torch.Tensor, layer=None) -> str:
        """Which kernel runs: cuDNN on CUDA; on CPU oneDNN for float32 LSTMs, else ATen's own loop."""
        if x.is_cuda:
            return "torch-cudnn"
        lstm = layer is None or _op(layer) == "lstm"  # oneDNN has an LSTM kernel
        return "torch-onednn" if lstm and x.dtype == torch.float32 else "torch-aten"

    def run(self, layer, x, hx, lengths, trace):
        reason = unsupported(layer, trace)
        if reason is not None:
            raise ValueError(f"engine: 'torch' cannot compute {reason}; use engine='native' or 'auto'")
        flat = _flat_weights(layer)
        kernel = getattr(_VF, _op(layer))
        args = (flat, layer.bias, layer.num_layers, layer.dropout, layer.training, layer.bidirectional)
        pair = len(hx) == 2  # torch's LSTM takes (h, c); its other kernels take h alone
        state = hx if pair else hx[0]
        if lengths is None:
            res = kernel(x, state, *args, False)
            out, finals = res[0], tuple(res[1:])
            return out, finals, None
        # lengths: torch's packed kernel; it sorts the batch by length, rnnlab keeps the caller's order
        T = x.shape[0]
        packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        order, undo = packed.sorted_indices, packed.unsorted_indices
        if pair:
            state = tuple(s.index_select(1, order) for s in state)
        else:
            state = state.index_select(1, order)
        res = kernel(packed.data, packed.batch_sizes, state, *args)
        out, _ = pad_packed_sequence(PackedSequence(res[0], packed.batch_sizes, order, undo), total_length=T)
        finals = tuple(s.index_select(1, undo) for s in res[1:])
        return out, finals, None
