"""csrc/pool.h: the operators' large tensors come from a cache of blocks earlier tensors freed.

Reused memory holds the last call's numbers where fresh pages held zeros, so a read of a buffer before its write
would now show: a training step after steps at another input must give the same bits as with the cache off. The
tensors must stay ordinary (resizable, saved and loaded, freed from another thread), and the cache within its bound."""

import io
import threading

import pytest
import torch

import rnnlab
from rnnlab.engine import ops

pytestmark = pytest.mark.skipif(not ops.available(), reason="the native operators are not built")

CASES = [(rnnlab.LSTM, {}), (rnnlab.GRU, {}), (rnnlab.GRU, dict(reset="after")), (rnnlab.RNN, {}),
         (rnnlab.LSTM, dict(peepholes=True, layer_norm=True)), (rnnlab.LSTM, dict(proj_size=32))]


def step(layer, x):
    out, h_n = layer(x)
    parts = h_n if isinstance(h_n, tuple) else (h_n,)
    loss = (out * out).sum() + sum(p.sum() for p in parts)
    return [out.detach(), *(p.detach() for p in parts), *torch.autograd.grad(loss, [x, *layer.parameters()])]


@pytest.mark.parametrize("cls,opts", CASES, ids=str)
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True), (2, False)])
def test_reused_blocks_give_the_same_bits(cls, opts, layers, bidirectional, monkeypatch):
    torch.manual_seed(0)
    layer = cls(48, 96, num_layers=layers, bidirectional=bidirectional, engine="native", **opts)
    x = torch.randn(40, 80, 48, requires_grad=True)  # gates 40·80·4·96 floats: 4.9 MB, over pool.h's MIN_BYTES
    monkeypatch.setenv("RNNLAB_POOL_MB", "0")
    want = step(layer, x)
    monkeypatch.setenv("RNNLAB_POOL_MB", "1024")
    for _ in range(2):  # fill the cache with another input's numbers
        step(layer, torch.randn(40, 80, 48, requires_grad=True) * 3)
    assert torch.ops.rnnlab.pool_bytes() > 0
    got = step(layer, x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_pooled_outputs_are_ordinary_tensors(monkeypatch):
    monkeypatch.setenv("RNNLAB_POOL_MB", "1024")
    torch.manual_seed(0)
    layer = rnnlab.LSTM(32, 128, engine="native")
    x = torch.randn(50, 64, 32)
    with torch.no_grad():
        out, (h, c) = layer(x)  # 50·64·128 floats: 1.6 MB
    want = out.clone()
    buf = io.BytesIO()
    torch.save(out, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.load(buf), want, atol=0, rtol=0)
    out.resize_(60, 64, 128)  # its storage grows through the pool
    torch.testing.assert_close(out[:50], want, atol=0, rtol=0)
    box = [out]
    t = threading.Thread(target=box.clear)  # the last reference dropped on another thread: freed into the pool
    del out
    t.start()
    t.join()
    assert torch.ops.rnnlab.pool_bytes() > 0


def test_cache_bound(monkeypatch):
    layer = rnnlab.GRU(32, 128, engine="native")
    x = torch.randn(50, 64, 32, requires_grad=True)
    monkeypatch.setenv("RNNLAB_POOL_MB", "2")
    for _ in range(2):
        step(layer, x)
    assert torch.ops.rnnlab.pool_bytes() <= 2 << 20
    monkeypatch.setenv("RNNLAB_POOL_MB", "0")
    step(layer, x)  # frees what it may not keep
    assert torch.ops.rnnlab.pool_bytes() == 0


def test_fork_while_another_thread_allocates(monkeypatch):
    """pool.h takes its lock around fork: a child forked while another thread allocates and frees through the pool
    still allocates through it (the child runs one thread, as after any multi-threaded torch call). The lock is held
    for microseconds of each millisecond call, so this cannot force a fork inside it; it checks that the fork
    handlers leave parent and child working (a handler that failed to unlock hangs every child here)."""
    import os
    import signal
    import time

    monkeypatch.setenv("RNNLAB_POOL_MB", "1024")
    layer = rnnlab.GRU(32, 128, engine="native")
    x = torch.randn(50, 64, 32)  # states 50·64·128 floats: 1.6 MB, through the pool
    stop = threading.Event()

    def churn():
        with torch.no_grad():
            while not stop.is_set():
                layer(x)

    t = threading.Thread(target=churn)
    t.start()
    try:
        pids = []
        for _ in range(5):
            time.sleep(0.01)
            pid = os.fork()
            if pid == 0:  # the child: one thread, a pooled allocation, then out without cleanup
                code = 1
                try:
                    torch.set_num_threads(1)
                    with torch.no_grad():
                        code = 0 if layer(x)[0].shape == (50, 64, 128) else 1
                finally:
                    os._exit(code)
            pids.append(pid)
        deadline = time.time() + 60
        for pid in pids:
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
                    break
                if time.time() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    pytest.fail("a forked child hung allocating through the pool")
                time.sleep(0.01)
    finally:
        stop.set()
        t.join()
