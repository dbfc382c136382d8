"""PackedSequence in and out: the engines work on padded (T, B, X) input plus lengths."""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence


def unpack(x: PackedSequence) -> tuple[torch.Tensor, torch.Tensor]:
    """PackedSequence -> (padded (T, B, X) in the caller's batch order, lengths (B,))."""
    padded, lengths = pad_packed_sequence(x)
    return padded, lengths.to(padded.device)


def repack(out: torch.Tensor, like: PackedSequence) -> PackedSequence:
    """Pack padded output (T, B, F) with exactly the batch sizes and orderings of ``like``."""
    if like.sorted_indices is not None:
        out = out.index_select(1, like.sorted_indices)
    T, B = out.shape[0], out.shape[1]
    batch_sizes = like.batch_sizes.to(out.device)
    mask = torch.arange(B, device=out.device).unsqueeze(0) < batch_sizes[:T].unsqueeze(1)  # (T, B)
    return PackedSequence(out[mask], like.batch_sizes, like.sorted_indices, like.unsorted_indices)
