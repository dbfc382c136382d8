"""The memory guard: refuse a call whose activations cannot fit, before it starts.

Training a recurrent layer by BPTT keeps, per level and direction, the activated gates
(T, B, G·H), the states (T+1, B, H) (two of them for the LSTM) and the output (T, B, H) until the
backward pass (layer norm and zoneout keep more: their normalised values, their masks). When that cannot fit in the memory available, the process would be killed part way;
instead the call is refused with the estimate and the fix (truncated BPTT in shorter chunks).
"""

from __future__ import annotations

import torch

from .. import _memory
from .._memory import available_bytes

# autograd through the step-by-step reference engine keeps several intermediates per gate
_ENGINE_FACTOR = {"reference": 3.0}


ALWAYS_FITS = 256 * 1024**2  # calls needing less than this are never refused


def bytes_per_step(layer, batch: int, element_size: int, training: bool) -> float:
    """Activation bytes that one time step adds to a call of ``layer`` on a batch of ``batch``: the
    cell's ``SPEC.memory`` units of (B, H) per level and direction — with what layer norm and zoneout
    keep when they are in force — three times over on the reference engine."""
    spec, H = layer.cell_class.SPEC, layer.hidden_size
    levels = layer.num_layers * layer.num_directions
    if training:
        units = spec.memory.per_step
        engine = layer.engine
        active = getattr(layer, "active_variants", dict)()
        if active:
            if spec.not_native(active):  # "auto" runs these variants on the reference engine
                engine = "reference"
            if active.get("layer_norm"):
                units += spec.memory.layer_norm
            if active.get("zoneout"):
                units += spec.memory.zoneout
        return levels * batch * H * units * element_size * _ENGINE_FACTOR.get(engine, 1.0)
    return 2 * layer.num_directions * batch * H * element_size  # one level's output in, one out


def guard(layer, steps: int, batch: int, dtype: torch.dtype, device: torch.device) -> None:
    """Raise a ValueError when the call's activations exceed available memory. Skipped while torch
    traces (torch.compile / torch.export): a compiled graph is checked when it is built, not per call."""
    if torch.compiler.is_compiling():
        return
    training = torch.is_grad_enabled() and layer.weight_ih_l0.requires_grad
    per_step = bytes_per_step(layer, batch, dtype.itemsize, training)
    need = per_step * steps
    if need <= ALWAYS_FITS:  # not worth reading the system's memory figures on every small call
        return
    have = available_bytes(device)
    if have is None or need <= have:
        return
    fit = max(1, int(0.5 * have // per_step)) if per_step else steps
    gib = 1024**3
    raise ValueError(
        f"x: this call needs about {need / gib:.1f} GiB of activations (T={steps}, B={batch}, "
        f"H={layer.hidden_size}, G={len(layer.cell_class.GATES)}, layers={layer.num_layers}, "
        f"directions={layer.num_directions}{', training' if training else ''}) but only {have / gib:.1f} GiB "
        f"is available on {device}; train with truncated BPTT in chunks of at most {fit} steps (pass each "
        f"chunk's final state as hx to the next), or reduce the batch"
    )


def guard_parameters(count: int, device: torch.device | str = "cpu") -> None:
    """Refuse to allocate a layer whose parameters alone exceed available memory (the cells' guard,
    ``rnnlab._memory``, reading this module's ``available_bytes``)."""
    _memory.guard_parameters(count, device, available_bytes)
