"""The trainer: exact resume, run directories, early stopping, gradient clipping and logging."""

import hashlib
import json
import math

import pytest
import torch

from rnnlab.models import SequenceModel
from rnnlab.tasks import get_task
from rnnlab.train import RunConfig, Trainer, load_run, train

FOX = "the quick brown fox jumps over the lazy dog. " * 20

SMALL = {
    "train.progress": False, "train.tensorboard": False, "model.engine": "reference", "model.hidden": 8,
    "model.embedding": 4, "train.batch_size": 4, "train.eval_samples": 8, "train.steps": 12, "train.eval_every": 5,
    "train.log_every": 3, "train.warmup": 2,
}


def config(**settings):
    return RunConfig().replace(**{**SMALL, **settings})


def without_timing(history):
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in history]


def tree_digest(d):
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        h.update(str(p.relative_to(d)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def fox(tmp_path):
    p = tmp_path / "fox.txt"
    p.write_text(FOX)
    return str(p)


@pytest.mark.parametrize("case", ["adding-dropout", "char_lm-carry"])
def test_resume_equals_uninterrupted_bitwise(tmp_path, fox, case):
    if case == "adding-dropout":  # dropout draws from torch's RNG, so its state must come back too
        c = config(**{"task.seq_len": 6, "model.layers": 2, "model.dropout": 0.3})
    else:  # the carried (detached) state of truncated BPTT must come back too
        c = config(**{"task.name": "char_lm", "task.path": fox, "task.seq_len": 8, "model.cell": "gru"})
    whole = train(c, tmp_path / "whole")
    first = Trainer(c, tmp_path / "split")
    part = first.fit(until=7)  # stops between checkpoints (5, 10): the stop itself saves one
    first.close()
    assert not part.finished and part.step == 7
    resumed = Trainer(c, tmp_path / "split", resume=True)
    assert resumed.step == 7
    rest = resumed.fit()
    resumed.close()
    assert rest.finished and rest.step == 12
    for (k, a), (_, b) in zip(whole.model.state_dict().items(), rest.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert without_timing(rest.history) == without_timing(whole.history)
    lines = [json.loads(x) for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert without_timing(lines) == without_timing(whole.history)


def test_resume_drops_records_after_the_checkpoint(tmp_path):
    c = config(**{"task.seq_len": 4})
    t = Trainer(c, tmp_path / "r")
    t.fit(until=6)
    t.close()
    with open(tmp_path / "r" / "metrics.jsonl", "a") as f:  # a crash after step 6 had logged step 9
        f.write(json.dumps({"kind": "train", "step": 9, "loss": 1.0}) + "\n")
    t = Trainer(c, tmp_path / "r", resume=True)
    result = t.fit()
    steps = [r["step"] for r in result.history if r["kind"] == "train"]
    assert steps == [3, 6, 9, 12] and sum(1 for r in result.history if r.get("loss") == 1.0) == 0


def test_existing_run_is_never_overwritten(tmp_path, fox):
    c = config(**{"task.seq_len": 4, "train.steps": 2})
    train(c, tmp_path / "r")
    before = tree_digest(tmp_path / "r")
    with pytest.raises(ValueError, match="already exists.*--resume.*--overwrite"):
        Trainer(c, tmp_path / "r")
    bad = c.replace(**{"task.name": "char_lm", "task.path": str(tmp_path / "missing.txt")})
    with pytest.raises(ValueError, match="no such file"):
        Trainer(bad, tmp_path / "r", overwrite=True)  # bad data fails before the directory is touched
    with pytest.raises(ValueError, match="cannot change.*model.hidden"):
        Trainer(c.replace(**{"model.hidden": 9}), tmp_path / "r", resume=True)
    assert tree_digest(tmp_path / "r") == before
    train(c.replace(**{"train.seed": 1}), tmp_path / "r", overwrite=True)
    assert tree_digest(tmp_path / "r") != before
    with pytest.raises(ValueError, match="found none"):
        Trainer(c, tmp_path / "other", resume=True)


def test_resume_may_extend_the_run(tmp_path):
    c = config(**{"task.seq_len": 4, "train.steps": 5})
    train(c, tmp_path / "r")
    t = Trainer(c.replace(**{"train.steps": 8}), tmp_path / "r", resume=True)
    assert t.fit().step == 8


def test_early_stopping(monkeypatch):
    losses = iter([1.0, 0.5, 0.6, 0.55, 0.4])
    monkeypatch.setattr(Trainer, "evaluate", lambda self: {"loss": next(losses)})
    r = train(config(**{"task.seq_len": 4, "train.steps": 50, "train.eval_every": 2, "train.patience": 2}))
    assert r.stopped_early and r.finished and r.step == 8  # evals at 2, 4 (best), 6, 8: two without improvement
    assert r.best == {"step": 4, "loss": 0.5}
    assert [e["improved"] for e in r.evals()] == [True, True, False, False]


def test_pre_clip_norm_is_logged_and_clipping_applied():
    clip = 1e-3
    c = config(**{"task.seq_len": 5, "train.steps": 1, "train.log_every": 1, "train.clip": clip})
    trainer = Trainer(c)
    result = trainer.fit()
    # the same step by hand: same seed, same initialisation, same first batch
    task = get_task("adding", seq_len=5)
    torch.manual_seed(0)
    model = SequenceModel(task.spec, c.model)
    batch = next(task.train_stream(4, seed=0))
    out, _ = model(batch.x)
    task.loss(out, batch).backward()
    grads = [p.grad for p in model.parameters()]
    norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
    assert result.history[0]["grad_norm"] == pytest.approx(norm, rel=1e-5)
    assert norm > clip
    # AdamW's first moment after one step is (1 - beta1) times the clipped gradient
    state = trainer.optimizer.state
    for p, g in zip(trainer.model.parameters(), grads):
        assert torch.allclose(state[p]["exp_avg"], 0.1 * g * (clip / norm), rtol=1e-4, atol=1e-12)


def test_non_finite_loss_is_an_error():
    c = config(**{"task.seq_len": 4, "train.lr": 1e30, "train.clip": 0.0, "train.warmup": 0, "model.init": "torch"})
    with pytest.raises(FloatingPointError, match="train.lr"):
        train(c.replace(**{"train.steps": 50, "train.eval_every": 100}))


def test_run_files_and_load_run(tmp_path):
    c = config(**{"task.seq_len": 4, "name": "demo"})
    r = train(c, tmp_path / "demo")
    d = tmp_path / "demo"
    assert {p.name for p in d.iterdir()} >= {"config.toml", "task.json", "metrics.jsonl", "checkpoints"}
    assert {p.name for p in (d / "checkpoints").iterdir()} == {"best.json", "best.safetensors", "last.json", "last.safetensors"}
    run = load_run(d, "last")
    assert run.step == 12 and run.config == c
    assert all(torch.equal(a, b) for a, b in zip(run.model.state_dict().values(), r.model.state_dict().values()))
    best = load_run(d, "best")
    assert best.step == r.best["step"]
    with pytest.raises(ValueError, match="no such directory"):
        load_run(tmp_path / "nothing")


def test_tensorboard_scalars_when_installed(tmp_path, monkeypatch):
    import sys
    import types

    written = []

    class Writer:  # stands in for torch.utils.tensorboard.SummaryWriter, which needs tensorboard installed
        def __init__(self, log_dir):
            written.append(("dir", log_dir))

        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            written.append(("closed",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    r = train(config(**{"task.seq_len": 4, "train.tensorboard": True}), tmp_path / "tb")
    assert written[0] == ("dir", str(tmp_path / "tb" / "tensorboard")) and written[-1] == ("closed",)
    evals = [(v, s) for tag, *rest in written[1:-1] if tag == "eval/mse" for v, s in [rest]]
    assert evals == [(e["mse"], e["step"]) for e in r.evals()]
    assert any(t[0] == "train/grad_norm" for t in written)
