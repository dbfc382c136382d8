"""Free memory, and the guard that refuses a module whose parameters alone cannot fit.

Shared by cells and layers (``rnnlab.layers.memory`` guards a call's activations).
"""

from __future__ import annotations

import os

import torch


def available_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors on ``device`` (None when it cannot be read)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def guard_parameters(count: int, device: torch.device | str = "cpu", available=available_bytes) -> None:
    """Refuse to allocate a module whose parameters alone exceed available memory (``available(device)``)."""
    need = 4 * count
    have = available(torch.device(device))
    if have is not None and need > have:
        raise ValueError(
            f"hidden_size: these sizes need {count} parameters ({need / 1024**3:.1f} GiB in float32) but only "
            f"{have / 1024**3:.1f} GiB is available; choose a smaller hidden_size, input_size or num_layers"
        )
