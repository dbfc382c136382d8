"""onnxruntime, the engine benchmark's inference peer.

A layer becomes an ONNX file with ONNX's own RNN / LSTM / GRU operator (onnxruntime's fused kernels):
a torch.nn module through torch.onnx's TorchScript exporter (``dynamo=False``: the dynamo exporter unrolls
torch.nn.RNN into per-step MatMuls), an rnnlab layer — the seed's GRU (reset="before"), which torch.nn
cannot express, and the one-step files — through ``rnnlab.export.to_onnx``. The session runs on the CPU
provider with ``intra_op_num_threads`` = the benchmark's threads, one inter-op thread and sequential
execution; what is timed is ``sess.run`` on numpy inputs built beforehand.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings

import numpy as np
import torch

from .. import export
from ..layers.base import RecurrentLayer
from .timing import median_ms


def version() -> str | None:
    """onnxruntime's version, or None where it (or onnx) is not installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def _export(module, x: torch.Tensor, path: str) -> None:
    """``module`` as an ONNX file taking ``x`` (and, for an rnnlab layer, ``h0`` / ``c0``)."""
    if isinstance(module, RecurrentLayer):
        export.to_onnx(module, path, initial_state=True)  # loads onnx on first use (rnnlab.export's own rule)
        return
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), path, dynamo=False, opset_version=18, input_names=["x"])


@contextlib.contextmanager
def exported(module, x: torch.Tensor):
    """The path of ``module`` exported at ``x``'s shape, in a temporary directory removed on exit."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.onnx")
        _export(module, x, path)
        yield path


def session_at(path: str, threads: int):
    """An onnxruntime InferenceSession of the file at ``path``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def session(module, x: torch.Tensor, threads: int):
    """An onnxruntime InferenceSession of ``module`` exported at ``x``'s shape."""
    with exported(module, x) as path:
        return session_at(path, threads)


def _zero_state(sess, x: np.ndarray) -> dict:
    """Zeros for the session's state inputs (h0, c0) at ``x``'s batch."""
    return {i.name: np.zeros((i.shape[0], x.shape[1], i.shape[2]), np.float32)
            for i in sess.get_inputs() if i.name != "x"}


def infer_ms(module, x: torch.Tensor, threads: int, budget_s: float) -> float:
    """Median ms of one ``sess.run`` over the whole sequence ``x`` (T, B, X)."""
    with exported(module, x) as path:
        return infer_ms_at(path, x, threads, budget_s)


def infer_ms_at(path: str, x: torch.Tensor, threads: int, budget_s: float) -> float:
    """``infer_ms`` of an exported file, on a session made here and gone on return (its thread pool, which spins
    between runs, with it)."""
    sess = session_at(path, threads)
    feeds = {"x": x.numpy()}
    feeds.update(_zero_state(sess, feeds["x"]))
    return median_ms(lambda: sess.run(None, feeds), budget_s)


def one_step(layer: RecurrentLayer, X: int, threads: int):
    """A step function over the file of ``layer`` at T = 1, B = 1: each call runs one step from the state
    the previous call left (h_n, c_n fed back), on an input built beforehand; the argument is ignored."""
    x = torch.randn(1, 1, X)
    sess = session(layer, x, threads)
    feeds = {"x": x.numpy()}
    feeds.update(_zero_state(sess, feeds["x"]))
    states = [i.name for i in sess.get_inputs() if i.name != "x"]

    def step(_):
        out = sess.run(None, feeds)
        feeds.update(zip(states, out[1:]))

    return step
