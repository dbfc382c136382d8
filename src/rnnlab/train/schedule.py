"""The learning-rate schedule: linear warm-up, then cosine decay (or constant).

    lr(s) = peak · (s + 1) / warmup                                        s < warmup
    lr(s) = peak · (m + (1 - m) · ½ (1 + cos(π · (s - warmup) / (S - warmup))))   cosine, m = min_lr
    lr(s) = peak                                                           constant

A function of the step alone, so a resumed run needs no scheduler state.
"""

from __future__ import annotations

import math


def learning_rate(step: int, peak: float, total: int, warmup: int, schedule: str, min_lr: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return peak
    progress = min(1.0, (step - warmup) / (total - warmup))
    return peak * (min_lr + (1.0 - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress)))
