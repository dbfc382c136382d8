"""A cell's parameters in the seed's layout, and the affine map W · [h, x] + b they define."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Weights(NamedTuple):
    """One cell's parameters: ``weight_ih`` (G·H, X), ``weight_hh`` (G·H, H) (None for cells whose
    gates see only x_t), ``bias`` (G·H) or None, ``bias_hn`` (H) for the GRU with reset="after", and
    ``weight_hr`` (P, H) for an LSTM with a projection (h_t = W_hr (o_t tanh(C_t)); W_hh is then (4H, P))."""

    weight_ih: torch.Tensor
    weight_hh: torch.Tensor | None
    bias: torch.Tensor | None
    bias_hn: torch.Tensor | None = None
    weight_hr: torch.Tensor | None = None

    @property
    def hidden_size(self) -> int:
        """H: the width of the gates and of C_t (h's width too, unless projected)."""
        return self.weight_hh.shape[1] if self.weight_hr is None else self.weight_hr.shape[1]

    def gate(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Rows of gate number k: (W_i·, W_h·, b_·) — the x part, the h part and the bias of W·[h, x] + b."""
        H = self.hidden_size
        rows = slice(k * H, (k + 1) * H)
        b = None if self.bias is None else self.bias[rows]
        return self.weight_ih[rows], self.weight_hh[rows], b


def affine(x: torch.Tensor, h: torch.Tensor, w_x: torch.Tensor, w_h: torch.Tensor, b: torch.Tensor | None):
    """W · [h, x] + b, with W split into its h columns (w_h) and its x columns (w_x)."""
    out = x @ w_x.T + h @ w_h.T
    return out if b is None else out + b
