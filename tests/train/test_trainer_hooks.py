"""The trainer's hooks the comparison trains through: a per-step record and a stop rule."""

import math

import pytest

from rnnlab.train import RunConfig, Trainer

SETTINGS = {"task.seq_len": 6, "model.hidden": 5, "model.embedding": 4, "train.batch_size": 8, "train.steps": 6,
            "train.eval_every": 2, "train.eval_samples": 16, "train.progress": False, "train.tensorboard": False,
            "train.log_every": 1}


def test_on_step_sees_every_step_and_the_pre_clipping_norm():
    steps = []
    trainer = Trainer(RunConfig().replace(**SETTINGS))
    result = trainer.fit(on_step=steps.append)
    assert [s["step"] for s in steps] == list(range(1, 7))
    logged = [r for r in result.history if r["kind"] == "train"]
    assert [s["grad_norm"] for s in steps] == pytest.approx([r["grad_norm"] for r in logged])
    assert all(s["seconds"] > 0 and not s["skipped"] and math.isfinite(s["loss"]) for s in steps)


def test_stop_when_ends_training_at_the_first_evaluation_that_meets_it():
    seen = []

    def stop(metrics):
        seen.append(metrics)
        return len(seen) == 2

    result = Trainer(RunConfig().replace(**SETTINGS)).fit(stop_when=stop)
    assert result.step == 4 and not result.finished and [r["step"] for r in result.evals()] == [2, 4]
    assert result.final == {k: v for k, v in result.evals()[-1].items() if k not in ("kind", "step", "improved")}
    never = Trainer(RunConfig().replace(**SETTINGS)).fit(stop_when=lambda m: False)
    assert never.step == 6 and never.finished
