"""One sequence through a network, step by step: every level and direction's states, gates,
pre-activations and, with a loss, the gradients that backpropagation through time sends along
every arrow of the unrolled picture.

The network is re-run with its cells' own ``equations`` on the layer's ``weights(k, d)`` (as the
reference engine runs it), on a float64 copy in evaluation mode, one time step at a time. Every
arrow of the picture is a tensor of that graph used by exactly one consumer, so its gradient is the
gradient flowing along that arrow:

* the recurrent arrow into step t carries ∂L/∂h_{t-1} (and, for the LSTM's cell-state line,
  ∂L/∂C_{t-1}) *as step t consumes it* — a copy of the state made for step t alone;
* the input arrow into box (k, d, t) carries ∂L/∂(input of level k at t) as direction d consumes it;
* the output arrow out of box (k, d, t) carries what comes back from above: the next level or the
  loss.

The totals ‖∂L/∂h_t‖ and ‖∂L/∂C_t‖ are what BPTT delivers to the state at step t (the sum of the
recurrent and output flows), as :func:`rnnlab.analysis.hidden_gradient_norms` defines them. The
per-step factor is ``‖∂L/∂h_prev‖ / ‖∂L/∂h_t‖``, where prev is the step before t in the direction's
own order (t-1 forward, t+1 reverse): how much the gradient is multiplied by as it travels one step
further back in time (< 1 vanishing, > 1 exploding).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .. import _checks
from ..cells import GRUCell, LSTMCell, RNNCell
from ..layers.base import RecurrentLayer
from ..models import SequenceModel
from .page import write_page
from .png import render_png
from .svg import render_svg

CELLS = {RNNCell: "rnn", LSTMCell: "lstm", GRUCell: "gru"}
LABELS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
STATES = {"rnn": ("h",), "lstm": ("c", "h"), "gru": ("h",)}  # drawn after the gates, in this order
MAX_UNITS = 8  # units drawn per strip when the caller does not choose


@dataclass
class Track:
    """One level k and direction d (0 forward, 1 reverse) over the drawn sequence.

    ``values[name]`` (T, H): each gate (``gates``; the RNN's only one is h itself) and state (h, and
    the LSTM's c) after step t; ``pre[gate]`` (T, H): the gate's pre-activation, the argument of its σ
    or tanh; ``bias[gate]`` (H,): the gate's bias b. ``grads`` (with a loss), each (T,): ``"h"``,
    ``"c"`` ‖∂L/∂h_t‖, ‖∂L/∂C_t‖; ``"flow_h"``, ``"flow_c"`` the recurrent arrows into step t;
    ``"flow_in"``, ``"flow_out"`` the input and output arrows of the box; ``"factor"`` the per-step
    factor. Padded steps are NaN."""

    level: int
    direction: int
    values: dict[str, np.ndarray]
    pre: dict[str, np.ndarray]
    bias: dict[str, np.ndarray]
    grads: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Unrolled:
    """A network unrolled over one sequence: what :func:`unroll` returns.

    ``cell`` "rnn" | "lstm" | "gru"; ``options`` the cell's (nonlinearity or reset); ``gates`` the
    gate names in the seed's order; ``T`` steps drawn, ``length`` of them real (the rest padding);
    ``x`` (T, C) the input (symbols as (T, 1)); ``y`` (T, K) the output where there is one (NaN
    elsewhere); ``tracks`` one per level and direction, level-major; ``units`` the hidden units
    drawn; ``loss`` L or None."""

    cell: str
    options: dict[str, Any]
    gates: tuple[str, ...]
    T: int
    length: int
    hidden_size: int
    num_layers: int
    num_directions: int
    x: np.ndarray
    y: np.ndarray
    tracks: list[Track]
    units: list[int]
    loss: float | None = None
    title: str = ""
    symbols: bool = False  # x holds symbol ids (a model's embedding input)
    embedded: bool = False  # the layer reads x_t through a model's input map

    @property
    def label(self) -> str:
        return LABELS[self.cell]

    @property
    def strips(self) -> tuple[str, ...]:
        """What each box draws, top-down: the gates, then the states."""
        return (() if self.cell == "rnn" else self.gates) + STATES[self.cell]

    def track(self, level: int, direction: int = 0) -> Track:
        return self.tracks[level * self.num_directions + direction]

    # drawing: defined in the modules that draw, bound here so that users need only this object
    def to_svg(self, view: str = "forward", *, max_columns: int | None = None) -> str:
        """The unrolled picture as an SVG document; ``view`` "forward" (values) or "bptt" (gradients)."""
        return render_svg([self], view=view, max_columns=max_columns)

    def to_png(self, path, view: str = "forward", *, max_columns: int | None = None) -> None:
        """The picture as a PNG (matplotlib), written atomically to ``path``."""
        render_png([self], path, view=view, max_columns=max_columns)

    def to_html(self, path, *, max_columns: int | None = None) -> int:
        """The interactive page (one self-contained HTML file), written atomically to ``path``; returns its bytes."""
        return write_page(path, [self], max_columns=max_columns)


def _find_layer(model: nn.Module) -> RecurrentLayer:
    if isinstance(model, RecurrentLayer):
        return model
    if isinstance(model, SequenceModel):
        return model.rnn
    raise TypeError(f"model_or_layer: expected an rnnlab RNN, LSTM or GRU layer or an rnnlab.models.SequenceModel, "
                    f"got {type(model).__name__}")


def _check_plain(layer: RecurrentLayer) -> str:
    cell = CELLS.get(layer.cell_class)
    if cell is None:
        raise TypeError(f"model_or_layer: unroll draws rnnlab's RNN, LSTM and GRU; got a {type(layer).__name__} "
                        f"(cell {layer.cell_class.__name__})")
    if layer.variants():
        raise ValueError(f"model_or_layer: unroll draws the seed's plain cells; this {type(layer).__name__} has "
                         f"variants {layer.variants()} (build it without them)")
    if getattr(layer, "learn_initial_state", False):  # the trace and the page start every direction from zeros
        raise ValueError(f"model_or_layer: unroll draws sequences that start from zero state; this "
                         f"{type(layer).__name__} has learn_initial_state=True (build it without)")
    if getattr(layer, "proj_size", 0):  # the page draws h and C with the same H units
        raise ValueError(f"model_or_layer: unroll draws the seed's LSTM, whose h and C have the same width; this "
                         f"{type(layer).__name__} has proj_size={layer.proj_size} (build it without)")
    return cell


def _pre_activations(cell: str, options: dict, x_t, h_prev, w, gates) -> dict[str, torch.Tensor]:
    """Each gate's argument of σ/tanh at one step, W·[h_{t-1}, x_t] + b for every gate at once, split (B, H)."""
    H = w.weight_hh.shape[1]
    a = x_t @ w.weight_ih.T + h_prev @ w.weight_hh.T  # (B, G·H)
    if w.bias is not None:
        a = a + w.bias
    out = {g: a[:, j * H:(j + 1) * H] for j, g in enumerate(gates)}
    if cell == "gru":  # the candidate sees r_t: recompute its part
        rows = slice(2 * H, 3 * H)
        w_x, w_h = w.weight_ih[rows], w.weight_hh[rows]
        b = 0.0 if w.bias is None else w.bias[rows]
        r = torch.sigmoid(out["r"])
        if options.get("reset", "before") == "before":
            out["n"] = x_t @ w_x.T + (r * h_prev) @ w_h.T + b  # W_h·[r_t * h_{t-1}, x_t] + b_h
        else:
            b_hn = 0.0 if w.bias_hn is None else w.bias_hn
            out["n"] = x_t @ w_x.T + b + r * (h_prev @ w_h.T + b_hn)  # W_xn x_t + b_n + r_t * (W_hn h_{t-1} + b_hn)
    return out


def _biases(w, gates, H: int) -> dict[str, np.ndarray]:
    if w.bias is None:
        return {g: np.zeros(H) for g in gates}
    return {g: w.bias[j * H:(j + 1) * H].detach().cpu().numpy().copy() for j, g in enumerate(gates)}


def _pad(a: np.ndarray, T: int) -> np.ndarray:
    out = np.full((T,) + a.shape[1:], np.nan)
    out[: a.shape[0]] = a
    return out


def _run(layer: RecurrentLayer, cell: str, xs: torch.Tensor, differentiate: bool):
    """Run the (float64, eval-mode) layer over xs (ℓ, 1, X) by its cells' equations. Returns out
    (ℓ, 1, D·H) and per track the recorded tensors."""
    D, H, gates = layer.num_directions, layer.hidden_size, layer.gates
    names = layer.cell_class.STATE  # carried state order, e.g. ("h", "c")
    ell = xs.shape[0]
    recs = []
    inp = xs.detach().requires_grad_() if differentiate and not xs.requires_grad else xs  # so that x_t's arrows carry a gradient
    for k in range(layer.num_layers):
        outs = []
        for d in range(D):
            w = layer.weights(k, d)
            inp_d = inp.clone() if differentiate else inp  # this direction's own copy: the input arrows
            state = tuple(torch.zeros(1, H, dtype=xs.dtype, device=xs.device, requires_grad=differentiate) for _ in names)  # h_0 (, C_0)
            rec = {"state_in": [None] * ell, "state": [None] * ell, "traces": [None] * ell, "pre": [None] * ell,
                   "inp": inp_d, "w": w}
            for t in reversed(range(ell)) if d == 1 else range(ell):
                s_in = tuple(s.clone() for s in state) if differentiate else state  # the recurrent arrows into t
                new_state, traces = layer.cell_class.equations(inp_d[t], s_in, w, **layer.options)
                with torch.no_grad():
                    rec["pre"][t] = _pre_activations(cell, layer.options, inp_d[t], s_in[0], w, gates)
                rec["state_in"][t], rec["state"][t], rec["traces"][t] = s_in, new_state, traces
                state = new_state
            out_d = torch.stack([s[0] for s in rec["state"]])  # (ℓ, 1, H)
            rec["out"] = out_d.clone() if differentiate else out_d  # the output arrows
            outs.append(rec["out"])
            recs.append(rec)
        inp = outs[0] if D == 1 else torch.cat(outs, dim=-1)
    return inp, recs


def _check_input(layer: RecurrentLayer, model, x, lengths, sample):
    """The drawn sequence: (x_one, T, ℓ) with x_one the sample in the caller's layout with batch 1."""
    x = _checks.tensor("x", x)
    if isinstance(sample, bool) or not isinstance(sample, int):
        raise TypeError(f"sample: expected an int index into the batch, got {type(sample).__name__} {sample!r}")
    if model is None:
        if x.dim() not in (2, 3) or x.shape[-1] != layer.input_size:
            raise ValueError(f"x: expected (T, B, {layer.input_size}) (batch_first: (B, T, {layer.input_size})) or "
                             f"(T, {layer.input_size}), got shape {_checks.shape_str(x)}")
        if x.dim() == 2:
            x = x.unsqueeze(0 if layer.batch_first else 1)
        batch_dim, time_dim = (0, 1) if layer.batch_first else (1, 0)
        if not x.is_floating_point():
            raise TypeError(f"x: expected a floating-point tensor (the layer's input), got dtype {x.dtype}")
    else:
        want = 2 if model.spec.inputs == "symbols" else 3
        if x.dim() != want:
            shape = "(B, T)" if want == 2 else f"(B, T, {model.spec.input_size})"
            raise ValueError(f"x: expected the model's batched input {shape}, got shape {_checks.shape_str(x)}")
        batch_dim, time_dim = 0, 1
    B, T = x.shape[batch_dim], x.shape[time_dim]
    if not -B <= sample < B:
        raise ValueError(f"sample: expected an index in [{-B}, {B - 1}] (the batch has {B} sequences), got {sample}")
    sample %= B
    if T == 0:
        raise ValueError(f"x: expected at least one time step, got shape {_checks.shape_str(x)}")
    ell = T
    if lengths is not None:
        lengths = torch.as_tensor(lengths)
        if lengths.dim() != 1 or lengths.shape[0] != B or lengths.is_floating_point():
            raise ValueError(f"lengths: expected {B} integer lengths (one per sequence), got {lengths.tolist()!r}")
        ell = int(lengths[sample])
        if not 1 <= ell <= T:
            raise ValueError(f"lengths: expected each length in [1, {T}] (T = {T}), got {ell} for sample {sample}")
    if model is not None and ell < T and model.spec.head not in ("last", "every"):
        raise ValueError(f"lengths: a model with head {model.spec.head!r} reads all T = {T} steps; unroll draws a "
                         f"shorter sequence (length {ell}) only through a 'last' or 'every' head")
    one = x.narrow(batch_dim, sample, 1).narrow(time_dim, 0, ell)
    return one, T, ell


def unroll(model_or_layer: nn.Module, x: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
           lengths=None, *, sample: int = 0, units=None, title: str = "") -> Unrolled:
    """Unroll ``model_or_layer`` over one sequence of ``x`` and record everything the picture shows.

    ``model_or_layer``: an ``rnnlab.RNN``/``LSTM``/``GRU`` (plain cells, any levels, bidirectional)
    or an ``rnnlab.models.SequenceModel``. ``x``: the layer's input (T, B, X) — (B, T, X) when
    batch_first — or one sequence (T, X); for a model, its batched input (B, T) symbols or
    (B, T, C) reals. ``sample`` picks the sequence of the batch; ``lengths`` (B,) marks padding: the
    sample's steps from its length on are drawn as padding and not computed.

    ``loss``: optional callable from the drawn sequence's output — the layer's ``out`` (batch 1, in
    the layer's layout) or the model's ``y`` (batch 1) — to a scalar L; with it, BPTT's gradients
    are recorded (see the module's docstring). ``units``: the hidden units to draw (default: all
    when H <= 8, else the 8 whose h varies most over time). ``title``: a caption the drawings put before
    the network's description.

    The network runs on a float64 copy in evaluation mode, so its values agree with the float32
    model's own to about 1e-7 and tiny gradients do not underflow.
    """
    layer = _find_layer(model_or_layer)
    model = model_or_layer if isinstance(model_or_layer, SequenceModel) else None
    cell = _check_plain(layer)
    if loss is not None and not callable(loss):
        raise TypeError(f"loss: expected a callable output -> scalar loss, got {type(loss).__name__}")
    one, T, ell = _check_input(layer, model, x, lengths, sample)
    target = copy.deepcopy(model if model is not None else layer).double().eval()
    net = target.rnn if model is not None else target
    as64 = one.double() if one.is_floating_point() else one
    differentiate = loss is not None
    recs: list = []

    def run_layer(inp, hx=None):  # the copy's forward: inp in the layer's layout, batch 1 -> (out, h_n)
        if hx is not None:
            raise ValueError("model_or_layer: unroll starts every sequence from zero state; the model passed one")
        xs = inp.transpose(0, 1) if net.batch_first else inp
        out, r = _run(net, cell, xs, differentiate)
        recs[:] = r
        last = [ell - 1 if i % net.num_directions == 0 else 0 for i in range(len(r))]  # each direction's final step
        finals = tuple(torch.stack([rec["state"][t][j] for rec, t in zip(r, last)])  # (D·L, 1, H)
                       for j in range(len(net.cell_class.STATE)))
        return (out.transpose(0, 1) if net.batch_first else out), (finals if len(finals) > 1 else finals[0])

    with torch.enable_grad():
        if model is not None:
            net.forward = run_layer  # the copy's layer runs step by step; the model's own forward does the rest
            y_out, _ = target(as64)
            out_for_loss = y_out
        else:
            out_for_loss, _ = run_layer(as64)
            y_out = out_for_loss
        L = None
        grads: dict = {}
        if differentiate:
            L = loss(out_for_loss)
            if not isinstance(L, torch.Tensor) or L.numel() != 1:
                raise ValueError(f"loss: expected it to return a scalar tensor, got {type(L).__name__}"
                                 + (f" of shape {_checks.shape_str(L)}" if isinstance(L, torch.Tensor) else ""))
            wanted = []
            for rec in recs:
                wanted += [s for st in rec["state"] for s in st] + [s for st in rec["state_in"] for s in st]
                wanted += [rec["inp"], rec["out"]]
            got = torch.autograd.grad(L.reshape(()), wanted, allow_unused=True)
            grads = dict(zip(map(id, wanted), got))
    tracks = [_track(rec, i, net, cell, T, ell, grads if differentiate else None) for i, rec in enumerate(recs)]
    if model is None:
        x_np = (one.transpose(0, 1) if net.batch_first else one)[:, 0].detach().double().cpu().numpy()  # (ℓ, X)
    else:
        x_np = one[0].detach().double().reshape(ell, -1).cpu().numpy()  # (ℓ, C), symbols (ℓ, 1)
    y_np = _outputs(y_out, model, net, T, ell)
    H = net.hidden_size
    return Unrolled(cell=cell, options=dict(net.options), gates=tuple(net.gates), T=T, length=ell, hidden_size=H,
                    num_layers=net.num_layers, num_directions=net.num_directions, x=_pad(x_np, T), y=y_np,
                    tracks=tracks, units=_units(units, tracks, H), loss=None if L is None else float(L.detach()),
                    title=title, symbols=model is not None and model.spec.inputs == "symbols", embedded=model is not None)


def _outputs(y, model, net, T: int, ell: int) -> np.ndarray:
    """y as (T, K): per step, or (for a "last" head) at the last real step only."""
    y = y.detach().cpu()
    if model is None:
        steps = (y.transpose(0, 1) if net.batch_first else y)[:, 0]  # (ℓ, D·H)
        return _pad(steps.numpy(), T)
    if model.spec.head == "every":
        return _pad(y[0].numpy(), T)
    out = np.full((T, y.shape[-1]), np.nan)
    out[ell - 1] = y[0].numpy()
    return out


def _track(rec, i: int, net, cell: str, T: int, ell: int, grads) -> Track:
    D = net.num_directions
    k, d = divmod(i, D)
    names = net.cell_class.STATE
    values = {}
    traces = rec["traces"]
    for g in (() if cell == "rnn" else net.gates):
        values[g] = _pad(torch.cat([tr[g] for tr in traces]).detach().cpu().numpy(), T)
    for j, s in enumerate(names):
        values[s] = _pad(torch.cat([st[j] for st in rec["state"]]).detach().cpu().numpy(), T)
    pre = {g: _pad(torch.cat([p[g] for p in rec["pre"]]).detach().cpu().numpy(), T) for g in net.gates}
    track = Track(level=k, direction=d, values=values, pre=pre, bias=_biases(rec["w"], net.gates, net.hidden_size))
    if grads is not None:
        norm = lambda t: 0.0 if grads.get(id(t)) is None else float(grads[id(t)].norm())
        for j, s in enumerate(names):
            track.grads[s] = _pad(np.array([norm(st[j]) for st in rec["state"]]), T)
            track.grads["flow_" + s] = _pad(np.array([norm(st[j]) for st in rec["state_in"]]), T)
        g_in, g_out = grads.get(id(rec["inp"])), grads.get(id(rec["out"]))
        track.grads["flow_in"] = _pad(np.zeros(ell) if g_in is None else g_in[:, 0].norm(dim=-1).cpu().numpy(), T)
        track.grads["flow_out"] = _pad(np.zeros(ell) if g_out is None else g_out[:, 0].norm(dim=-1).cpu().numpy(), T)
        gh = track.grads["h"][:ell]
        factor = np.full(ell, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            if d == 0:
                factor[1:] = gh[:-1] / gh[1:]
            else:
                factor[:-1] = gh[1:] / gh[:-1]
        track.grads["factor"] = _pad(factor, T)
    return track


def _units(units, tracks: list[Track], H: int) -> list[int]:
    if units is None:
        if H <= MAX_UNITS:
            return list(range(H))
        spread = sum(np.nan_to_num(np.nanstd(t.values["h"], axis=0)) for t in tracks)
        return sorted(int(u) for u in np.argsort(-spread, kind="stable")[:MAX_UNITS])
    if isinstance(units, (int, str)) or not hasattr(units, "__iter__"):
        raise TypeError(f"units: expected a list of hidden-unit indices, got {type(units).__name__} {units!r}")
    units = list(units)
    bad = [u for u in units if isinstance(u, bool) or not isinstance(u, (int, np.integer)) or not 0 <= u < H]
    if not units or bad or len(set(units)) != len(units):
        raise ValueError(f"units: expected distinct ints in [0, {H - 1}] (H = {H}), got {units!r}")
    return [int(u) for u in units]
