"""The comparison's training loop: the recorded pre-clipping norm, the stop at the threshold, the
run cache, and the AR baseline's protocol."""

import math

import numpy as np
import pytest
import torch

from rnnlab.analysis import gradient_norm
from rnnlab.compare.measure import _ar_baseline
from rnnlab.compare.training import RunCache, RunSpec, Solve, build, train

MODEL = (("cell", "gru"), ("hidden", 6), ("embedding", 4))


def _spec(steps=3, solve=None, eval_every=1, lr=1e-2):
    return RunSpec("adding", (("seq_len", 6),), MODEL, steps, 8, lr, 0.5, eval_every, 16, 0, solve)


def test_first_step_norm_is_the_pre_clipping_gradient_norm():
    spec = _spec(steps=1)
    result, _, _ = train(spec)
    task, model = build(spec)  # the same initialisation and the same first batch
    batch = next(task.train_stream(spec.batch, spec.seed))
    out, _ = model(batch.x)
    task.loss(out, batch).backward()
    assert result.grad_norms[0] == pytest.approx(gradient_norm(model.parameters()), rel=1e-5)
    assert result.grad_norms[0] > spec.clip  # so clipping did act on that step
    assert len(result.step_seconds) == result.steps_run == 1


def test_stops_at_the_first_evaluation_meeting_the_threshold():
    always = Solve("mse", "<", math.inf)
    result, _, _ = train(_spec(steps=10, solve=always, eval_every=2))
    assert result.solved_at == 2 and result.steps_run == 2 and len(result.history) == 1
    never = Solve("mse", "<", 0.0)
    result, _, _ = train(_spec(steps=4, solve=never, eval_every=2))
    assert result.solved_at is None and result.steps_run == 4 and [h["step"] for h in result.history] == [2, 4]
    assert Solve("accuracy", ">", 0.5).met({"accuracy": 0.6}) and not Solve("accuracy", ">", 0.5).met({"accuracy": 0.5})


def test_cache_round_trip(tmp_path):
    spec = _spec(steps=2)
    result, model, _ = train(spec)
    cache = RunCache(tmp_path)
    assert not cache.has(spec)
    cache.save(spec, result, model)
    assert cache.has(spec)
    again, _ = cache.model(spec)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    assert cache.result(spec)["grad_norms"] == result.grad_norms
    assert _spec(steps=2).key() == spec.key() != _spec(steps=3).key()


def test_ar_baseline_on_a_noiseless_ar2_series():
    x = [1.0, 0.5]
    for _ in range(200):
        x.append(0.2 + 1.2 * x[-1] - 0.5 * x[-2])
    x = np.array(x)
    res = _ar_baseline(x, 160, 5)
    assert res["p"] >= 2 and res["mse"] < 1e-12
