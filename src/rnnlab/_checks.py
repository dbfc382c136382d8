"""Argument checks shared by cells and layers.

Every error names the argument, says what was expected and what was got, and where it helps,
how to fix it. Checks run before any arithmetic, so a bad call never reaches an engine.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch


def shape_str(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected a positive int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    return int(value)


def probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a float in [0, 1), got {type(value).__name__} {value!r}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name}: expected a float in [0, 1), got {value}")
    return float(value)


def choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name}: expected one of {options}, got {value!r}")
    return value


def tensor(name: str, value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    return value


def matches_parameters(name: str, t: torch.Tensor, ref: torch.Tensor) -> None:
    """t must have the dtype and device of the module's parameters (ref)."""
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor of dtype {ref.dtype}, got {t.dtype}")
    if t.dtype != ref.dtype:
        raise TypeError(
            f"{name}: expected dtype {ref.dtype} (the parameters' dtype), got {t.dtype}; "
            f"convert the input with .to({ref.dtype}) or the module with .to({t.dtype})"
        )
    if t.device != ref.device:
        raise ValueError(
            f"{name}: expected a tensor on {ref.device} (the parameters' device), got one on {t.device}; "
            f"move it with .to('{ref.device}')"
        )


def lengths(value: Any, batch: int, steps: int, device: torch.device) -> torch.Tensor | None:
    """Validate per-sequence lengths: (B,) integers in [1, T]. Returns an int64 tensor on device, or
    None for an empty batch (no sequence to mask; torch's packed kernels refuse an empty pack)."""
    if isinstance(value, torch.Tensor):
        t = value
    elif isinstance(value, (list, tuple)):
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
            raise TypeError(f"lengths: expected integers, got {list(value)!r}")
        t = torch.tensor(list(value), dtype=torch.int64)
    else:
        raise TypeError(f"lengths: expected a 1-D tensor or list of ints, got {type(value).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"lengths: expected an integer tensor, got dtype {t.dtype}")
    if t.dim() != 1 or t.shape[0] != batch:
        raise ValueError(f"lengths: expected shape ({batch},) (one length per sequence), got {shape_str(t)}")
    # the range check reads the values, which torch.compile / torch.export cannot trace
    if batch and not torch.compiler.is_compiling() and (int(t.min()) < 1 or int(t.max()) > steps):
        raise ValueError(
            f"lengths: expected every length in [1, {steps}] (T = {steps}), got min {int(t.min())}, max {int(t.max())}"
        )
    if batch == 0:
        return None
    return t.to(device=device, dtype=torch.int64)
