"""Vanishing and exploding gradients: ‖∂L/∂h_t‖ against t, its per-step decay rate, and the
gradient norm an optimiser sees before clipping.

``hidden_gradient_norms`` re-runs a layer step by step with the cells' own ``equations`` and the
layer's ``weights(k, d)``, keeping every h_t as a node of the graph, so it works the same whatever
engine the layer normally runs on. ∂L/∂h_t is the *total* derivative: through h_{t+1}, h_{t+2}, ...
and through the outputs at t, t+1, ... — what backpropagation through time delivers to step t.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .. import _checks
from ..cells import variants
from ..layers.base import RecurrentLayer


def _unroll(layer, xs: torch.Tensor, level: int, direction: int, state_index: int):
    """Run ``layer`` over xs (T, B, X) by its cells' equations. Returns out (T, B, D·H) and the list of
    the chosen level/direction's state tensors, one (B, H) per time step in time order."""
    cell, options, D = layer.cell_class, layer.options, layer.num_directions
    zoneout = layer.regularisers.get("zoneout", 0.0) if layer.training else 0.0
    T, B = xs.shape[0], xs.shape[1]
    kept: list[torch.Tensor] = []
    inp = xs
    for k in range(layer.num_layers):
        outs = []
        for d in range(D):
            w = layer.weights(k, d)
            step = layer.step_arguments(k, d, B)  # variants' added parameters, recurrent-dropout mask
            state = tuple(s[k * D + d].to(xs.dtype) for s in layer.initial_state(B))  # zeros, or the learned h_0 (C_0)
            steps: list[torch.Tensor | None] = [None] * T
            chosen: list[torch.Tensor | None] = [None] * T
            for t in reversed(range(T)) if d == 1 else range(T):
                new_state, _ = cell.equations(inp[t], state, w, **options, **step)
                state = variants.zoneout(zoneout, state, new_state) if zoneout else new_state
                steps[t] = state[0]
                chosen[t] = state[state_index]
            outs.append(torch.stack(steps))  # (T, B, H)
            if k == level and d == direction:
                kept = chosen  # type: ignore[assignment]
        inp = outs[0] if D == 1 else torch.cat(outs, dim=-1)
        if layer.dropout > 0 and layer.training and k < layer.num_layers - 1:
            inp = F.dropout(inp, layer.dropout, training=True)
    return inp, kept


def hidden_gradient_norms(layer, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], *,
                          level: int = -1, direction: int = 0, state: str = "h") -> torch.Tensor:
    """‖∂L/∂h_t‖ for every time step t, as a (T,) tensor.

    ``layer``: an ``rnnlab.RNN``/``LSTM``/``GRU``. ``x``: its input, (T, B, X) (or (B, T, X) with
    ``batch_first``). ``loss_fn(out) -> scalar``: the loss as a function of the layer's output
    ``out`` in the layer's own layout — for a model wrapping a layer, put the rest of the model
    (head, targets) inside this callable and pass the embedded input as ``x``.

    ``level`` (default the top one) and ``direction`` (0 forward, 1 reverse) pick whose states are
    differentiated; ``state`` is "h", or "c" for the LSTM's cell state.

    For example, on an ``rnnlab.models.SequenceModel`` with a one-output-per-sequence head::

        norms = hidden_gradient_norms(model.rnn, model.input_map(batch.x),
                                      lambda out: task.loss(model.head(out[:, -1]), batch)) The norm is the Frobenius
    norm over the batch and hidden units of ∂L/∂h_t (B, H). The layer starts from zero state and runs
    in its current mode (inter-level dropout in training mode, as its forward would).
    """
    if not isinstance(layer, RecurrentLayer):
        raise TypeError(f"layer: expected an rnnlab RNN, LSTM or GRU layer, got {type(layer).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a callable out -> scalar loss, got {type(loss_fn).__name__}")
    x = _checks.tensor("x", x)
    if x.dim() != 3:
        raise ValueError(f"x: expected a 3-D batched input, got shape {_checks.shape_str(x)}")
    if x.shape[-1] != layer.input_size:
        raise ValueError(f"x: expected last dimension input_size = {layer.input_size}, got shape {_checks.shape_str(x)}")
    L = layer.num_layers
    if isinstance(level, bool) or not isinstance(level, int) or not -L <= level < L:
        raise ValueError(f"level: expected an int in [{-L}, {L - 1}] (the layer has {L} levels), got {level!r}")
    if direction not in range(layer.num_directions):
        raise ValueError(f"direction: expected one of {list(range(layer.num_directions))}, got {direction!r}")
    names = layer.cell_class.STATE
    if state not in names:
        raise ValueError(f"state: expected one of {', '.join(repr(n) for n in names)} for a {layer.mode} layer, got {state!r}")
    xs = x.transpose(0, 1) if layer.batch_first else x
    out, kept = _unroll(layer, xs, level % L, direction, names.index(state))
    loss = loss_fn(out.transpose(0, 1) if layer.batch_first else out)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ValueError(f"loss_fn: expected it to return a scalar tensor, got {type(loss).__name__}"
                         + (f" of shape {_checks.shape_str(loss)}" if isinstance(loss, torch.Tensor) else ""))
    grads = torch.autograd.grad(loss.reshape(()), kept, allow_unused=True)
    norms = [torch.zeros((), dtype=xs.dtype) if g is None else g.detach().norm() for g in grads]
    return torch.stack(norms)


def fit_decay_rate(norms) -> float:
    """The per-step factor γ of a log-linear fit ‖∂L/∂h_t‖ ≈ a · γ^(T-t).

    γ is how much the gradient norm is multiplied by with each step it travels back in time:
    γ < 1 vanishing, γ > 1 exploding. Fitted by least squares of log‖∂L/∂h_t‖ on t over the
    finite, positive entries; ``norms`` is a 1-D tensor, array or sequence with at least two of them.
    """
    arr = np.asarray(norms.detach().cpu().numpy() if isinstance(norms, torch.Tensor) else norms, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"norms: expected a 1-D sequence of gradient norms, got shape {arr.shape}")
    t = np.arange(arr.shape[0], dtype=np.float64)
    ok = np.isfinite(arr) & (arr > 0)
    if ok.sum() < 2:
        raise ValueError(f"norms: expected at least two finite, positive values to fit, got {int(ok.sum())} of {arr.shape[0]}")
    slope = np.polyfit(t[ok], np.log(arr[ok]), 1)[0]  # d log‖∂L/∂h_t‖ / dt
    return float(math.exp(-slope))  # one step back in time multiplies by exp(-slope)


def gradient_norm(parameters: Iterable[torch.Tensor]) -> float:
    """The global 2-norm of the parameters' gradients, as ``clip_grad_norm_`` measures it before clipping."""
    grads = [p.grad.detach().reshape(-1) for p in parameters if p.grad is not None]
    if not grads:
        raise ValueError("parameters: expected at least one parameter with a .grad; call loss.backward() first")
    return float(torch.cat(grads).double().norm())
